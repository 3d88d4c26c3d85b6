from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.deps import DbConnection
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(connection: DbConnection, response: Response) -> Health:
    """Liveness: the database answers; each followed source and how far behind it is."""
    try:
        connection.execute(text("SELECT 1"))
        database = "ok"
    except SQLAlchemyError as exc:
        database = f"unavailable: {type(exc).__name__}"
        response.status_code = 503
    status = "ok" if database == "ok" else "degraded"
    return Health(status=status, database=database, sources=[])
