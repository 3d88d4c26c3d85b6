"""The schema exists only through Alembic: an empty database migrated to head equals the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from detector.store import migrate
from detector.store.models import Base
from detector.store.session import make_engine, open_database


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
