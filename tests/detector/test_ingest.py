"""Batch ingest: the same result whether the file is read in this process or in a child."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from detector import ingest
from detector.config import Settings
from detector.errors import InputError
from detector.ingest import Pipeline
from detector.simulate import write_log
from detector.store.models import EvidenceLine, OffenderRow, RecipientRow, TransactionRow
from detector.store.session import open_database


def _stored(engine: Engine) -> list[list[tuple[object, ...]]]:
    """Every stored row, ids left out for transactions and recipients."""
    with engine.connect() as connection:
        rows = [
            sorted(tuple(row[1:]) for row in connection.execute(select(table.__table__)))
            for table in (TransactionRow, RecipientRow)
        ]
        rows.append(sorted(tuple(r) for r in connection.execute(select(EvidenceLine.__table__))))
        return rows


def _ingest(settings: Settings, database: Path, log: Path) -> tuple[ingest.Summary, Engine]:
    engine = open_database(f"sqlite:///{database}")
    return Pipeline(settings, engine).ingest_file(log, host="mx1", log_format="postfix"), engine


def test_reading_in_a_child_process_stores_exactly_what_reading_here_does(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "mail.log"
    write_log(log, 30_000, seed=7, open_relay_clients=1)
    monkeypatch.setattr(ingest, "BATCH_LINES", 3_000)
    monkeypatch.setattr(ingest, "PARALLEL_BYTES", 10**12)
    here, here_engine = _ingest(settings, tmp_path / "here.db", log)
    monkeypatch.setattr(ingest, "PARALLEL_BYTES", 0)
    child, child_engine = _ingest(settings, tmp_path / "child.db", log)
    assert here.as_dict() == child.as_dict()
    assert here.accepted_relays > 0 and here.refused_relays > 0
    assert _stored(here_engine) == _stored(child_engine)


def _truncated_gzip(tmp_path: Path, lines: int, missing: int) -> Path:
    """A gzipped simulated log without its last ``missing`` bytes."""
    log = tmp_path / "mail.log"
    write_log(log, lines, seed=3)
    damaged = tmp_path / "mail.log.1.gz"
    damaged.write_bytes(gzip.compress(log.read_bytes())[:-missing])
    return damaged


def test_an_error_in_the_reading_process_is_a_one_line_error_here(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    damaged = _truncated_gzip(tmp_path, 5_000, 4_000)
    monkeypatch.setattr(ingest, "PARALLEL_BYTES", 0)
    engine = open_database(f"sqlite:///{tmp_path / 'rw.db'}")
    with pytest.raises(InputError, match=r"mail\.log\.1\.gz: cannot be read to its end"):
        Pipeline(settings, engine).ingest_file(damaged, host="mx1", log_format="postfix")


def test_what_was_stored_before_a_reading_error_is_scored(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a file read again adds nothing, so what it stored must be scored before the error leaves
    damaged = _truncated_gzip(tmp_path, 20_000, 20_000)
    monkeypatch.setattr(ingest, "BATCH_LINES", 1_000)
    monkeypatch.setattr(ingest, "RESCORE_EVERY", 10**9)  # only the end of reading scores
    engine = open_database(f"sqlite:///{tmp_path / 'rw.db'}")
    with pytest.raises(InputError):
        Pipeline(settings, engine).ingest_file(damaged, host="mx1", log_format="postfix")
    with engine.connect() as connection:
        attempting = set(
            connection.scalars(
                select(RecipientRow.client_ip).where(RecipientRow.relay_attempt.is_not(None))
            )
        )
        offenders = set(connection.scalars(select(OffenderRow.ip)))
    assert attempting and offenders == attempting


def test_the_rescore_pacer_lets_new_clients_through_and_holds_repeats_to_a_share() -> None:
    from detector.ingest import RESCORE_SHARE, LiveResult, RescorePacer

    pacer = RescorePacer(pause=0.2, period=10.0)
    start = pacer._period_start
    assert pacer.due({"a": 5.0}, start) == {"a": 5.0}  # new: at once
    pacer.settle(LiveResult([], [], {"a": 5.0}, {"a": 0.5}), start)  # a first rescoring is free
    assert pacer.next_turn() is None
    pacer.settle(LiveResult([], [], {"a": 7.0}, {}), start + 0.1)
    assert pacer.due({}, start + 0.1) == {}  # its pause
    assert pacer.due({}, start + 0.3) == {"a": 7.0}
    pacer.settle(LiveResult([], [], {}, {"a": 2.0}), start + 0.3)  # costly: 2 s spent again
    pacer.settle(LiveResult([], [], {"a": 8.0, "b": 9.0}, {}), start + 1.0)
    assert pacer.due({}, start + 1.0) == {"b": 9.0}  # over its share: new clients only
    assert pacer.next_turn() == 0.0
    pacer.settle(LiveResult([], [], {}, {"b": 0.01}), start + 1.0)
    turn = pacer.next_turn()
    assert turn == pytest.approx(start + min(2.0 / RESCORE_SHARE, 10.0))
    assert pacer.due({}, turn) == {"a": 8.0}
