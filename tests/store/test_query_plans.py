"""The daemon's hot path does not grow with what is stored: every statement a live batch runs
reads through an index (SQLite's own query plans say so), and none rewrites the correlator's
state."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event

from detector.config import load_settings
from detector.ingest import Pipeline, SourceReader
from detector.store.session import open_database
from tests.detector.test_daemon import Writer, config, simulated

_WRITE = re.compile(r"(UPDATE|INSERT INTO) (\w+)")
_WHOLE = {"allowlist"}
"""Tables read whole by design: what administrators write (a few entries), not the logs."""
_SCAN = re.compile(r"\bSCAN (?!CONSTANT|\d+ CONSTANT)(\w+)")


def test_a_live_batch_reads_every_table_through_an_index(tmp_path: Path) -> None:
    log, database = tmp_path / "mail.log", tmp_path / "relaywatch.db"
    settings = load_settings(config(tmp_path, f"sqlite:///{database}", 1, [(log, "mx1")]))
    engine = open_database(settings.database.url)
    pipeline = Pipeline(settings, engine)
    reader = SourceReader(settings.sources[0], pipeline.classifier)
    writer = Writer(log, simulated(6000))
    statements: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, sql: str, parameters: Any, _ctx: Any, many: bool) -> None:
        statements.append((sql, parameters[0] if many else parameters))

    try:
        for share in (0.5, 0.1, 0.1, 0.1):  # the last batches run with rows in every table
            if share == 0.1:
                event.listen(engine, "before_cursor_execute", note)
            writer.write(share, pause=0)
            batch = reader.read()
            assert batch is not None
            with engine.begin() as connection:
                result = pipeline.commit(connection, reader, batch)
            pipeline.pacer.settle(result, time.monotonic())
            time.sleep(0.25)  # the pacer's pause: clients rescored again in the next batch
    finally:
        event.remove(engine, "before_cursor_execute", note)
        reader.close()
        engine.dispose()
    assert any(sql.startswith("UPDATE offenders") for sql, _ in statements)  # counted, rescored
    # the read position is saved with each batch; the correlator's state, megabytes when much
    # mail is deferred, only with a checkpoint (the first read, then every 10 s)
    assert any(sql.startswith("UPDATE source_positions") for sql, _ in statements)
    with sqlite3.connect(database) as plain:
        written = {m[2] for sql, _ in statements if (m := _WRITE.match(sql))}
        holding_state = {
            table for table in written
            if any(c[1] == "correlator_state" for c in plain.execute(f"PRAGMA table_info({table})"))
        }  # fmt: skip
    assert not holding_state  # updating a row rewrites all of it
    scans = set()
    with sqlite3.connect(database) as plain:
        for sql, parameters in statements:
            if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
                continue
            for row in plain.execute(f"EXPLAIN QUERY PLAN {sql}", parameters or ()):
                scans.update(
                    f"{table}: {sql[:80]}"
                    for table in _SCAN.findall(row[-1])
                    if table not in _WHOLE
                )
    assert not scans, scans
