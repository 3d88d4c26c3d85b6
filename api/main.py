"""The HTTP API: ``create_app(settings)`` builds it; nothing is created at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from starlette.exceptions import HTTPException

from api import metrics
from api.auth import AccessDenied
from api.routes import (
    allowlist,
    blocklist,
    crowdsec,
    decisions,
    health,
    offenders,
    reports,
    transactions,
)
from api.routes.crowdsec import BouncerStreams
from api.schemas import Problem
from detector.config import Settings
from detector.daemon import Status
from detector.decide import Refused
from detector.errors import RelaywatchError

API_THREADS = 8
"""Requests answered at once, each in a thread with a database connection of its own: more
would only cost memory on the mail host (anyio's default is 40)."""


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    to_thread.current_default_thread_limiter().total_tokens = API_THREADS
    yield


def create_app(
    settings: Settings, engine: Engine | None = None, status: Status | None = None
) -> FastAPI:
    """The API for ``settings``; ``engine`` defaults to opening ``settings.database.url``;
    ``status`` is the running daemon's, when it serves the API."""
    if engine is None:
        from detector.store.session import open_database

        engine = open_database(settings.database.url)
    app = FastAPI(
        title="relaywatch",
        summary="Clients that use this mail server as a spam relay, and the evidence.",
        version="0.1.0",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.status = status
    app.state.bouncer_streams = BouncerStreams()  # what each CrowdSec bouncer holds
    problems: dict[int | str, dict[str, Any]] = {
        status: {"model": Problem, "description": "the request cannot be answered (why: detail)"}
        for status in (400, 404, 422)
    }
    routers = (health.router, offenders.router, transactions.router, decisions.router,
               crowdsec.router, allowlist.router, blocklist.router, reports.router)  # fmt: skip
    for router in routers:
        app.include_router(router, responses=problems)
    metrics.install(app, engine, status)
    _error_handlers(app)
    return app


def _problem(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RelaywatchError)
    async def relaywatch_error(_request: Request, exc: RelaywatchError) -> JSONResponse:
        return _problem(exc.status_code, type(exc).__name__, str(exc))

    @app.exception_handler(Refused)
    async def refused(_request: Request, exc: Refused) -> JSONResponse:
        return _problem(422, "refused", str(exc))

    @app.exception_handler(AccessDenied)
    async def access_denied(_request: Request, exc: AccessDenied) -> JSONResponse:
        if exc.status_code == 401:
            return _problem(401, "unauthorized", str(exc), {"WWW-Authenticate": "Bearer"})
        return _problem(exc.status_code, "forbidden", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "query")
        return _problem(422, "invalid request", f"{where}: {first.get('msg')}".lstrip(": "))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return _problem(exc.status_code, "http error", str(exc.detail))
