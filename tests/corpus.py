"""Helpers of the tests that read ../shared/corpus: fail2ban's annotated logs, and logs taken
through the whole pipeline into a real SQLite file and read back as a user would see them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from detector.config import load_settings
from detector.ingest import Pipeline
from detector.store.models import RecipientRow, TransactionRow
from detector.store.session import open_database
from tests.conftest import corpus_path


def fail2ban_cases(family: str, name: str) -> list[tuple[dict[str, object], str]]:
    """The lines of fail2ban's test log ``name`` with what its ``# failJSON:`` says of each."""
    cases = []
    expected: dict[str, object] | None = None
    for raw in corpus_path(family, "fail2ban", name).read_text().splitlines():
        if raw.startswith("# failJSON:"):
            expected = json.loads(raw.removeprefix("# failJSON:"))
        elif raw.strip() and not raw.startswith("#"):
            cases.append((expected or {}, raw))
            expected = None
    return cases


def ingest_log(
    tmp_path: Path, log: Path, network: str, log_format: str, host: str = "vm"
) -> tuple[Engine, Pipeline]:
    """``log`` read by ``relaywatch ingest`` into a SQLite file in ``tmp_path``, with the
    ``[network]`` settings ``network`` (TOML lines)."""
    config = tmp_path / "relaywatch.toml"
    config.write_text(f'[network]\n{network}\n[database]\nurl = "sqlite:///{tmp_path / "rw.db"}"\n')
    settings = load_settings(config, environ={})
    engine = open_database(settings.database.url)
    pipeline = Pipeline(settings, engine)
    pipeline.ingest_file(log, host=host, log_format=log_format)
    return engine, pipeline


def stored_transactions(engine: Engine) -> list[dict[str, Any]]:
    """Every stored transaction as a row, with its recipients' rows by address (``rcpts``)."""
    with engine.connect() as connection:
        txns = connection.execute(select(TransactionRow.__table__)).mappings().all()
        rcpts = connection.execute(select(RecipientRow.__table__)).mappings().all()
    return [
        {**t, "rcpts": {r["address"]: r for r in rcpts if r["transaction_id"] == t["id"]}}
        for t in txns
    ]


def stored_by_queue_id(engine: Engine, queue_id: str) -> dict[str, Any]:
    """The one stored transaction of ``queue_id`` (see :func:`stored_transactions`)."""
    [txn] = [t for t in stored_transactions(engine) if t["queue_id"] == queue_id]
    return txn
