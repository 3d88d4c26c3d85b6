"""Opening the database: engine options per backend, and the schema check at start."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import SQLAlchemyError

from detector.errors import DatabaseError
from detector.store import migrate

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (the API) never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL keeps it crash-safe
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: index updates stay in memory
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///file.db`` or ``postgresql+psycopg://…``)."""
    if url.startswith("postgresql:"):
        url = "postgresql+psycopg:" + url.removeprefix("postgresql:")
    try:
        if url.startswith("sqlite:"):
            engine = create_engine(url, connect_args={"check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise DatabaseError(f"cannot use database {_safe(url)}: {exc}") from None
    return engine


def open_database(url: str) -> Engine:
    """Connect, create the schema in an empty database, refuse one at another revision."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            empty = not inspect(connection).get_table_names()
            current = migrate.current_revision(connection)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise DatabaseError(f"cannot open database {_safe(url)}: {_first_line(exc)}") from None
    head = migrate.head_revision()
    if empty:
        migrate.upgrade(engine)
    elif current != head:
        engine.dispose()
        raise DatabaseError(
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
