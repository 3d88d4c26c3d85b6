from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from api.schemas import Health
from detector.daemon import Status

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(request: Request, response: Response) -> Health:
    """Liveness: the database answers (and, in the daemon, takes writes); each followed source
    and how far behind it is; each sink's last sync.  503 while the database does not."""
    engine: Engine = request.app.state.engine
    try:
        with engine.connect() as connection:  # here, not as a dependency: failing is an answer
            connection.execute(text("SELECT 1"))
        database = "ok"
    except SQLAlchemyError as exc:
        database = f"unavailable: {type(exc).__name__}"
    status: Status | None = request.app.state.status
    sources: list[dict[str, object]] = []
    sinks: list[dict[str, object]] = []
    if status is not None:
        sources, sinks = status.sources(), status.sinks()
        database = status.database_error() or database
    if database != "ok":
        response.status_code = 503
    return Health(status="ok" if database == "ok" else "degraded", database=database,
                  sources=sources, sinks=sinks)  # fmt: skip
