"""Alembic environment: the engine comes from relaywatch (``detector.store.migrate``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from detector.store.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine: Engine = context.config.attributes["engine"]
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("relaywatch migrations run online only: use 'relaywatch db upgrade'")
run_migrations_online()
