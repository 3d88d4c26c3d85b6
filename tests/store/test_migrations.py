"""The schema exists only through Alembic: an empty database migrated to head equals the models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from detector.config import load_settings
from detector.follow import Position
from detector.ingest import Pipeline
from detector.score import attempt_counters
from detector.store import migrate
from detector.store.models import Base
from detector.store.positions import load_position, save_position
from detector.store.queries import list_offenders
from detector.store.session import make_engine, open_database
from tests.factories import probe, write_log


def test_empty_database_migrated_to_head_has_no_difference_from_the_models(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        assert migrate.current_revision(connection) == migrate.head_revision()
    engine.dispose()


def test_opening_an_empty_database_creates_the_schema(database_url: str) -> None:
    engine = open_database(database_url)
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
    assert {"transactions", "recipients", "offenders", "decisions", "log_files"} <= tables
    engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: object) -> None:
    engine = open_database(f"sqlite:///{tmp_path}/wal.db")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_a_position_saved_before_checkpoints_resumes_where_it_was_read(
    database_url: str,
) -> None:
    """0003: a 0002 row's correlator state was taken at its read position; after a downgrade,
    the row resumes at the checkpoint (and reads the rest again)."""
    engine = make_engine(database_url)
    migrate.upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.execute(
            text(
                'INSERT INTO source_positions (host, path, device, inode, fingerprint, "offset",'
                " correlator_state, updated_at) VALUES ('mx1', '/var/log/mail.log', 1, 2, 'f',"
                " 300, '{}', '2026-12-01 00:00:00')"
            )
        )
    migrate.upgrade(engine)
    with engine.begin() as connection:
        saved = load_position(connection, "mx1", "/var/log/mail.log")
        assert saved is not None
        assert saved.read == saved.checkpoint.position == Position(1, 2, "f", 300)
        save_position(connection, "mx1", "/var/log/mail.log", Position(1, 2, "f", 900))
    command.downgrade(migrate.alembic_config(engine), "0002")
    with engine.connect() as connection:
        row = connection.execute(text('SELECT "offset" FROM source_positions')).one()
    assert row.offset == 300
    engine.dispose()


def test_offender_targets_are_filled_from_the_stored_attempts(
    tmp_path: Path, database_url: str
) -> None:
    """0004: after the upgrade, attempts stored later count only recipients and domains the
    offender had not tried before."""
    config = tmp_path / "rw.toml"
    config.write_text(
        '[network]\ninternal_networks = ["10.0.0.0/8"]\nlocal_domains = ["example.test"]\n'
        f'[database]\nurl = "{database_url}"\n'
    )
    settings = load_settings(config, environ={})
    start = datetime.now(UTC) - timedelta(hours=2)

    def probes(first: int, count: int) -> list[str]:
        lines: list[str] = []
        for n in range(first, first + count):
            when = start + timedelta(minutes=n)
            lines += probe(when, "203.0.113.7", rcpt=f"v{n % 4}@outside{n % 2}.example", pid=n)
        return lines

    engine = open_database(database_url)
    try:
        pipeline = Pipeline(settings, engine)
        pipeline.ingest_file(write_log(tmp_path / "a.log", probes(0, 6)), host="mx1")
        command.downgrade(migrate.alembic_config(engine), "0003")
        migrate.upgrade(engine)
        pipeline.ingest_file(write_log(tmp_path / "b.log", probes(6, 6)), host="mx1")
        with engine.connect() as connection:
            [offender] = list_offenders(connection, datetime.now(UTC))
            want = attempt_counters(connection)["203.0.113.7"]
    finally:
        engine.dispose()
    assert (offender.relay_attempts, offender.recipients, offender.recipient_domains) == (12, 4, 2)
    assert (want.attempts, want.recipients, want.domains) == (12, 4, 2)
