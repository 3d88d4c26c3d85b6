from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from api.deps import DbConnection
from api.params import since_param
from api.routes.decisions import decisions_out
from api.schemas import OffenderDetail, OffenderList
from detector.decide import decisions_for
from detector.errors import InputError
from detector.render import render_offenders
from detector.store.queries import evidence, get_offender, list_offenders, normalise_ip

router = APIRouter(prefix="/v1/offenders", tags=["offenders"])

MAX_PAGE = 10_000


def _cursor(score: float, ip: str) -> str:
    return base64.urlsafe_b64encode(f"{score!r}|{ip}".encode()).decode().rstrip("=")


def _after(cursor: str | None) -> tuple[float, str] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, ip = raw.split("|", 1)
        return float(score), ip
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"invalid cursor {cursor!r}") from None


@router.get("", response_model=OffenderList, responses={200: {"content": {
    "text/csv": {}, "text/plain": {}}}})  # fmt: skip
def offenders(
    connection: DbConnection,
    since: Annotated[str | None, Query(description="duration (1h, 7d) or ISO time")] = None,
    blocked: bool | None = None,
    format: Literal["json", "csv", "text"] = "json",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
    cursor: str | None = None,
) -> OffenderList | Response:
    """Offenders, worst first. ``text`` is one IP per line (for firewalls and scripts)."""
    now = datetime.now(UTC)
    found = list_offenders(
        connection, now, since=since_param(since, now), blocked=blocked, limit=limit + 1,
        after=_after(cursor),
    )  # fmt: skip
    more = len(found) > limit
    found = found[:limit]
    next_cursor = _cursor(found[-1].score, found[-1].ip) if more else None
    headers = {"X-Next-Cursor": next_cursor} if next_cursor else {}
    if format == "text":
        return Response("".join(f"{o.ip}\n" for o in found), media_type="text/plain",
                        headers=headers)  # fmt: skip
    if format == "csv":
        return Response(render_offenders(found, "csv"), media_type="text/csv", headers=headers)
    return OffenderList.model_validate(
        {"offenders": [o.as_json() for o in found], "next_cursor": next_cursor}
    )


@router.get("/{ip}", response_model=OffenderDetail)
def offender(connection: DbConnection, ip: str) -> OffenderDetail:
    """One offender with its decisions and its latest relay transactions, with their log lines."""
    ip = normalise_ip(ip)
    now = datetime.now(UTC)
    found = get_offender(connection, ip, now)
    decisions = decisions_out(connection, decisions_for(connection, ip), now)
    return OffenderDetail.model_validate(
        {**found.as_json(), "decisions": decisions, "transactions": evidence(connection, ip)}
    )
