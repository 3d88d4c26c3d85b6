"""The active decisions rendered for one enforcement target, for deployments that pull (a
cron job with curl on the relay host) rather than let relaywatch push to a sink."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from api.deps import DbConnection
from detector.decide import active_decisions
from detector.sinks import BLOCKLIST_FORMATS, render

router = APIRouter(prefix="/v1/blocklist", tags=["enforcement"])

BlocklistFormat = Literal[BLOCKLIST_FORMATS]  # type: ignore[valid-type]


@router.get(
    "",
    response_class=Response,
    responses={200: {"description": "the target's file or script", "content": {
        "application/json": {}, "text/plain": {}}}},
)  # fmt: skip
def blocklist(
    connection: DbConnection,
    format: Annotated[
        BlocklistFormat, Query(description="the target; json is an array of decisions")
    ] = "json",
) -> Response:
    """The decisions in force now, as the sink of that target writes them: ``json``
    (``application/json``), the others ``text/plain``.  An unknown format is 422."""
    now = datetime.now(UTC)
    text = render(format, active_decisions(connection, now), now)
    return Response(text, media_type="application/json" if format == "json" else "text/plain")
