"""What relaywatch saw, recorded for the nightly report: the lines read of each source per day
(followed and imported, each line once, through a restart and a second import), and the times a
sink could not push the blocks (one row per episode)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from detector.config import Settings, load_settings
from detector.enforce import Enforcer
from detector.ingest import Pipeline, SourceReader
from detector.simulate import write_log
from detector.store.models import SinkTroubleRow, SourceDayRow
from detector.store.positions import load_position
from detector.store.session import open_database
from tests.detector.test_daemon import Writer, _reader_round, config, simulated


def source_days(engine: Engine) -> list[tuple[Any, ...]]:
    d = SourceDayRow
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                select(d.day, d.host, d.path, d.lines, d.parsed, d.unparsed).order_by(d.path)
            )
        ]


def test_a_followed_source_counts_every_line_once_through_a_restart(tmp_path: Path) -> None:
    lines = simulated(8_000)
    log = tmp_path / "mail.log"
    url = f"sqlite:///{tmp_path / 'relaywatch.db'}"
    settings = load_settings(config(tmp_path, url, 1, [(log, "mx1")]))
    source = settings.sources[0]
    engine = open_database(url)
    pipeline = Pipeline(settings, engine)
    writer = Writer(log, lines)
    try:
        reader = SourceReader(source, pipeline.classifier)
        writer.write(0.3)
        _reader_round(pipeline, reader, reader.read())  # the first read checkpoints
        for _ in range(3):  # the read position moves on, the checkpoint stays
            writer.write(0.1)
            _reader_round(pipeline, reader, reader.read())
        reader.close()  # a crash: the next run reads again from the checkpoint
        with engine.connect() as connection:
            saved = load_position(connection, "mx1", str(log))
        assert saved is not None and saved.checkpoint.position.offset < saved.read.offset

        reader = SourceReader(source, pipeline.classifier, saved)
        writer.write(1.0)
        while (batch := reader.read()) is not None:
            _reader_round(pipeline, reader, batch)
        reader.close()

        # the same log read in one go, into another database, counts the same
        once = open_database(f"sqlite:///{tmp_path / 'once.db'}")
        in_one_go = Pipeline(settings, once)
        single = SourceReader(source, in_one_go.classifier)
        while (batch := single.read()) is not None:
            _reader_round(in_one_go, single, batch)
        single.close()
        today = datetime.now(UTC).date().isoformat()
        [row] = source_days(engine)
        assert row[:4] == (today, "mx1", str(log), len(lines))
        assert row[4] + row[5] == len(lines) and row[4] > 0
        assert source_days(once) == [row]
        with engine.connect() as connection:
            lag = connection.execute(select(SourceDayRow.lag_bytes)).scalar()
        assert lag == 0  # everything written was read
        once.dispose()
    finally:
        engine.dispose()


def test_an_imported_file_counts_once_however_often_it_is_imported(
    tmp_path: Path, settings: Settings
) -> None:
    log = tmp_path / "mail.log"
    write_log(log, 5_000, seed=3)
    engine = open_database(settings.database.url)
    try:
        pipeline = Pipeline(settings, engine)
        first = pipeline.ingest_file(log, host="mx1", log_format="postfix")
        again = pipeline.ingest_file(log, host="mx1", log_format="postfix")
        assert again.transactions == 0 and again.lines == first.lines == 5_000
        today = datetime.now(UTC).date().isoformat()
        assert source_days(engine) == [
            (today, "mx1", str(log.absolute()), 5_000, first.parsed, first.unparsed)
        ]
        with engine.connect() as connection:
            assert connection.execute(select(SourceDayRow.lag_bytes)).scalar() is None
    finally:
        engine.dispose()


def troubles(engine: Engine) -> list[tuple[Any, ...]]:
    k = SinkTroubleRow
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                select(k.sink, k.failures, k.ended_at.is_not(None), k.message).order_by(k.id)
            )
        ]


def test_a_failing_sink_is_one_trouble_row_from_first_failure_to_recovery(
    tmp_path: Path, write_config: Any
) -> None:
    hosts = tmp_path / "exim" / "relay-abusers"  # its directory is not there yet
    path = write_config(f'[[sinks]]\ntype = "exim"\npath = "{hosts}"\n')
    settings = load_settings(path, environ={})
    engine = open_database(settings.database.url)
    name = f"exim {hosts}"
    try:
        enforcer = Enforcer(settings)
        for _ in range(3):
            [result] = enforcer.tick(engine, changed=True)
            assert not result.ok
        assert troubles(engine) == [(name, 3, False, result.message)]
        assert "cannot write" in result.message

        # the daemon restarts while the sink still fails: the same episode goes on
        enforcer = Enforcer(settings)
        enforcer.tick(engine, changed=True)
        assert troubles(engine) == [(name, 4, False, result.message)]

        hosts.parent.mkdir()
        [result] = enforcer.tick(engine, changed=True)
        assert result.ok
        assert troubles(engine) == [(name, 4, True, troubles(engine)[0][3])]
        with engine.connect() as connection:
            started, ended = connection.execute(
                select(SinkTroubleRow.started_at, SinkTroubleRow.ended_at)
            ).one()
        assert started <= ended <= datetime.now(UTC)

        enforcer.tick(engine, changed=True)  # working on: nothing more is written
        hosts.parent.rename(tmp_path / "elsewhere")
        enforcer.tick(engine, changed=True)  # a second episode
        assert [(t[0], t[1], t[2]) for t in troubles(engine)] == [
            (name, 4, True),
            (name, 1, False),
        ]
    finally:
        engine.dispose()


def test_a_sink_that_works_at_start_closes_an_episode_left_open(
    tmp_path: Path, write_config: Any
) -> None:
    hosts = tmp_path / "relay-abusers"
    settings = load_settings(write_config(f'[[sinks]]\ntype = "exim"\npath = "{hosts}"\n'),
                             environ={})  # fmt: skip
    engine = open_database(settings.database.url)
    try:
        with engine.begin() as connection:  # a daemon stopped while the sink failed
            connection.execute(
                SinkTroubleRow.__table__.insert().values(
                    sink=f"exim {hosts}", started_at=datetime(2026, 12, 1, tzinfo=UTC),
                    failures=7, message="cannot write",
                )
            )  # fmt: skip
        Enforcer(settings).tick(engine, changed=True)
        assert troubles(engine) == [(f"exim {hosts}", 7, True, "cannot write")]
    finally:
        engine.dispose()
