"""The stored nightly reports: the list with their headline numbers, and each one in the
format asked for.  Reads, open like the other GET endpoints.

A report is served as it was stored when it was built (the numbers of that moment); ``relaywatch
report --date`` builds one afresh.  The HTML is one self-contained page; it is served with a
Content-Security-Policy that allows its inline styles and nothing else (no script, no request
elsewhere), so nothing that came from a log can act in the browser even if it slipped through.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Response
from fastapi.exceptions import RequestValidationError

from api.deps import DbConnection
from api.schemas import ReportList, ReportOut
from detector.errors import NotFound
from detector.render import iso
from detector.report.stored import ALL_HOSTS, get_report, list_reports

router = APIRouter(prefix="/v1/reports", tags=["reports"])

MEDIA_TYPES = {
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
    "html": "text/html; charset=utf-8",
}
HTML_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_DAY = r"^\d{4}-\d{2}-\d{2}$"


def _day(value: str, where: str) -> str:
    """``value`` if it is a calendar day (YYYY-MM-DD), else a 422 naming ``where``."""
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise RequestValidationError(
            [{"loc": where.split("."), "msg": f"{value!r} is not a day (YYYY-MM-DD)",
              "type": "value_error"}]
        ) from None  # fmt: skip


@router.get("", response_model=ReportList)
def reports(
    connection: DbConnection,
    before: Annotated[
        str | None, Query(pattern=_DAY, description="only days before this one (paging)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ReportList:
    """The stored reports, newest day first, with their headline numbers and mailing state."""
    found = list_reports(
        connection, before=None if before is None else _day(before, "query.before"), limit=limit
    )
    return ReportList(
        reports=[
            ReportOut(
                day=r.day, host=r.host, created_at=iso(r.created_at) or "",
                open_relay=r.headline.open_relay, accepted_relays=r.headline.accepted_relays,
                refused_relays=r.headline.refused_relays,
                relay_attempts=r.headline.relay_attempts, offenders=r.headline.offenders,
                new_blocks=r.headline.new_blocks, mailed_at=iso(r.mailed_at),
                mail_error=r.mail_error,
                url=f"/v1/reports/{r.day}" + (f"?host={quote(r.host)}" if r.host else ""),
            )
            for r in found
        ]
    )  # fmt: skip


@router.get(
    "/{day}",
    response_class=Response,
    responses={200: {"description": "the report", "content": {
        "application/json": {}, "text/plain": {}, "text/html": {}}}},
)  # fmt: skip
def report(
    connection: DbConnection,
    day: Annotated[str, Path(pattern=_DAY, description="the day (YYYY-MM-DD)")],
    format: Literal["json", "text", "html"] = "json",
    host: Annotated[str, Query(description='a relay host; "" (default): all of them')] = "",
) -> Response:
    """The stored report of ``day``, as JSON (the numbers), plain text or one HTML page."""
    label = _day(day, "path.day")
    row = get_report(connection, label, host)
    if row is None:
        whose = "all relay hosts" if host == ALL_HOSTS else f"relay host {host!r}"
        raise NotFound(f"no report stored for {label} ({whose})")
    body = {"json": row.data, "text": row.text, "html": row.html}[format]
    headers = {"Content-Security-Policy": HTML_POLICY} if format == "html" else {}
    return Response(body, media_type=MEDIA_TYPES[format], headers=headers)
