"""Shared fixtures: real files in a temporary directory, a real SQLite file, and PostgreSQL
when ``RELAYWATCH_TEST_DATABASE_URL`` names one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from detector.config import Settings, load_settings
from detector.store.session import open_database

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
SAMPLES = Path(__file__).resolve().parent / "samples"
POSTFIX_37 = CORPUS / "postfix" / "generated-local-postfix-3.7.11"

PG_URL = os.environ.get("RELAYWATCH_TEST_DATABASE_URL")

pytest_plugins = ["tests.postfix"]  # the postfix and postfix_factory fixtures


def corpus_path(*parts: str) -> Path:
    """A file of ../shared/corpus; skipped with the reason when absent, failing when required."""
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        message = f"corpus file {path} is not present (../shared/corpus)"
        if os.environ.get("RELAYWATCH_REQUIRE_CORPUS") == "1":
            pytest.fail(message + " and RELAYWATCH_REQUIRE_CORPUS=1")
        pytest.skip(message)
    return path


def config_text(database_url: str, extra: str = "") -> str:
    return (
        "[network]\n"
        'internal_networks = ["127.0.0.1/32", "10.0.0.0/8"]\n'
        'local_domains = ["example.test"]\n'
        "[database]\n"
        f'url = "{database_url}"\n' + extra
    )


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a configuration file (SQLite in tmp_path by default) and return its path."""

    def write(extra: str = "", database_url: str | None = None) -> Path:
        url = database_url or f"sqlite:///{tmp_path / 'relaywatch.db'}"
        path = tmp_path / "relaywatch.toml"
        path.write_text(config_text(url, extra))
        return path

    return write


@pytest.fixture
def settings(write_config: Callable[..., Path]) -> Settings:
    return load_settings(write_config(), environ={})


def _postgres_database() -> Iterator[str]:
    """A fresh database on the test PostgreSQL server, dropped afterwards."""
    assert PG_URL is not None
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"rw_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    """A fresh PostgreSQL database, for what only PostgreSQL does (several relay hosts)."""
    if PG_URL is None:
        pytest.skip("RELAYWATCH_TEST_DATABASE_URL is not set (no PostgreSQL to test on)")
    yield from _postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on a SQLite file, and on PostgreSQL when one is configured."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    if PG_URL is None:
        pytest.skip("RELAYWATCH_TEST_DATABASE_URL is not set (no PostgreSQL to test on)")
    yield from _postgres_database()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_database(database_url)
    yield engine
    engine.dispose()
