"""Request dependencies, as ``Annotated`` aliases the routes declare."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Connection, Engine

from detector.config import Settings


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _connection(request: Request) -> Iterator[Connection]:
    with _engine(request).connect() as connection:
        yield connection


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DbConnection = Annotated[Connection, Depends(_connection)]
AppSettings = Annotated[Settings, Depends(_settings)]
