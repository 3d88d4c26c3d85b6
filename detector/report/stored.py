"""Reports as stored in ``reports``: one row per period label and relay host (``""``: all of
them), with its three renderings and the state of its mailing.  The caller owns the database
transaction.

The headline numbers of a stored report (for a mail subject, ``GET /v1/reports``) are read
back from its JSON rendering, so they are the numbers the report itself shows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from detector.store.models import ReportRow

ALL_HOSTS = ""


@dataclass(frozen=True, slots=True)
class Rendered:
    """A report in the three formats it is stored in."""

    json: str
    text: str
    html: str


@dataclass(frozen=True, slots=True)
class Headline:
    """What the first lines of a stored report say."""

    open_relay: bool
    accepted_relays: int
    refused_relays: int
    offenders: int
    new_blocks: int
    hosts: tuple[str, ...]  # the relay hosts the report shows (its sources and attempts)

    @property
    def relay_attempts(self) -> int:
        return self.accepted_relays + self.refused_relays

    def where(self, host: str) -> str:
        """The relay hosts a report is about, in a few words: ``mx1``, ``mx1, mx2``."""
        if host != ALL_HOSTS:
            return host
        if not self.hosts:
            return "all relay hosts"
        if len(self.hosts) <= 3:
            return ", ".join(self.hosts)
        return f"{len(self.hosts)} relay hosts"


def headline(data: str | Mapping[str, Any]) -> Headline:
    """The headline of a report's JSON rendering (missing numbers count as 0)."""
    document: Mapping[str, Any] = json.loads(data) if isinstance(data, str) else data
    numbers = document.get("headline") or {}
    hosts = {str(s["host"]) for s in document.get("sources") or () if s.get("host")}
    hosts |= {str(c["name"]) for c in document.get("attempts_per_host") or () if c.get("name")}
    return Headline(
        open_relay=bool(numbers.get("open_relay", False)),
        accepted_relays=int(numbers.get("accepted_relays", 0)),
        refused_relays=int(numbers.get("refused_relays", 0)),
        offenders=int(numbers.get("offenders", 0)),
        new_blocks=int(numbers.get("new_blocks", 0)),
        hosts=tuple(sorted(hosts)),
    )


def store_report(
    connection: Connection, day: str, host: str, rendered: Rendered, created_at: datetime
) -> None:
    """Store a report, in place of the one of the same day and host if there is one (its
    mailing state goes with it: the new one has not been mailed)."""
    connection.execute(delete(ReportRow).where(ReportRow.day == day, ReportRow.host == host))
    connection.execute(
        insert(ReportRow).values(
            day=day, host=host, created_at=created_at, data=rendered.json, html=rendered.html,
            text=rendered.text, mailed_at=None, mail_error=None,
        )
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoredReport:
    """A stored report without its renderings."""

    day: str
    host: str
    created_at: datetime
    mailed_at: datetime | None
    mail_error: str | None
    headline: Headline


def get_report(connection: Connection, day: str, host: str = ALL_HOSTS) -> Row[Any] | None:
    """The stored report of ``day`` (its label) and ``host``, all its columns."""
    return connection.execute(
        select(ReportRow).where(ReportRow.day == day, ReportRow.host == host)
    ).first()


def list_reports(
    connection: Connection, *, before: str | None = None, limit: int = 100
) -> list[StoredReport]:
    """Stored reports, newest day first (then by host), up to ``limit``, of days before
    ``before`` (a label) when given."""
    query = select(
        ReportRow.day, ReportRow.host, ReportRow.created_at, ReportRow.mailed_at,
        ReportRow.mail_error, ReportRow.data,
    ).order_by(ReportRow.day.desc(), ReportRow.host).limit(limit)  # fmt: skip
    if before is not None:
        query = query.where(ReportRow.day < before)
    return [
        StoredReport(row.day, row.host, row.created_at, row.mailed_at, row.mail_error,
                     headline(row.data))
        for row in connection.execute(query)
    ]  # fmt: skip


def mailed(
    connection: Connection, day: str, host: str, at: datetime | None, error: str | None
) -> None:
    """Record how mailing a stored report went: ``at`` when the server took it (``error``
    then names recipients it refused), else ``error``, why not."""
    connection.execute(
        update(ReportRow)
        .where(ReportRow.day == day, ReportRow.host == host)
        .values(mailed_at=at, mail_error=error)
    )
