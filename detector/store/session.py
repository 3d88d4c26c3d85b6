"""Opening the database: engine options per backend, and the schema check at start."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from detector.errors import DatabaseError, SchemaError
from detector.store import migrate

SQLITE_CACHE_MIB = 64
"""SQLite's page cache per connection: a batch import keeps its index updates in memory so.
It is memory of its own in every connection (the daemon gives its API connections less)."""
_SCHEMA_LOCK = 0x736368656D61  # "schema": the advisory lock taken while creating it
SQLITE_BUSY_TIMEOUT = 30.0
"""Seconds a write waits for another writer of the same SQLite file (a batch import waits that
long; the daemon waits less and retries with back-off, saying so)."""


def _sqlite_pragmas(busy_timeout: float, cache_mib: int) -> Callable[[Any, Any], None]:
    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers (the API) never block the writer
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL keeps it crash-safe
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")
        cursor.close()

    return pragmas


def make_engine(
    url: str, busy_timeout: float = SQLITE_BUSY_TIMEOUT, cache_mib: int = SQLITE_CACHE_MIB
) -> Engine:
    """An engine for ``url`` (``sqlite:///file.db`` or ``postgresql+psycopg://…``)."""
    if url.startswith("postgresql:"):
        url = "postgresql+psycopg:" + url.removeprefix("postgresql:")
    try:
        if url.startswith("sqlite:"):
            engine = create_engine(url, connect_args={"check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas(busy_timeout, cache_mib))
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise DatabaseError(f"cannot use database {_safe(url)}: {exc}") from None
    return engine


def open_database(
    url: str, busy_timeout: float = SQLITE_BUSY_TIMEOUT, cache_mib: int = SQLITE_CACHE_MIB
) -> Engine:
    """Connect, create the schema in an empty database, refuse one at another revision."""
    engine = make_engine(url, busy_timeout, cache_mib)
    head = migrate.head_revision()
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # relay hosts starting together: one creates the schema, the others wait
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK}
                )
            empty = not inspect(connection).get_table_names()
            current = migrate.current_revision(connection)
            if empty:
                migrate.upgrade(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise DatabaseError(f"cannot open database {_safe(url)}: {_first_line(exc)}") from None
    if not empty and current != head:
        engine.dispose()
        raise SchemaError(
            f"database {_safe(url)} is at schema revision {current or 'none'}, this relaywatch "
            f"needs {head}: run 'relaywatch db upgrade'"
        )
    return engine


def _safe(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        rest = f"{user}:***@{rest.split('@', 1)[1]}"
    return f"{scheme}{sep}{rest}"


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
