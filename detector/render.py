"""Offenders as text: the table, JSON and CSV that the CLI prints and the API serves."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI starts faster without SQLAlchemy
    from detector.store.queries import Offender


def iso(moment: datetime | None) -> str | None:
    """``2026-11-30T08:01:02Z``: the form every relaywatch output uses."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


OFFENDER_COLUMNS = (
    "ip", "score", "relay_attempts", "refused_relays", "accepted_relays", "recipients",
    "recipient_domains", "first_seen", "last_seen", "blocked", "blocked_until", "reasons",
)  # fmt: skip


def render_offenders(found: list[Offender], output: str) -> str:
    """Offenders as ``json`` (an array of offender objects), ``csv`` or a ``table``."""
    if output == "json":
        return json.dumps([o.as_json() for o in found], indent=2) + "\n"
    if output == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(OFFENDER_COLUMNS)
        for o in found:
            data = o.as_json()
            data["reasons"] = "; ".join(data["reasons"])
            writer.writerow(["" if data[c] is None else data[c] for c in OFFENDER_COLUMNS])
        return buffer.getvalue()
    if not found:
        return "no offenders\n"
    rows = [("IP", "SCORE", "REFUSED", "ACCEPTED", "DOMAINS", "LAST SEEN", "BLOCKED UNTIL")]
    for o in found:
        rows.append((
            o.ip, f"{o.score:g}", str(o.refused_relays), str(o.accepted_relays),
            str(o.recipient_domains), iso(o.last_seen) or "", iso(o.blocked_until) or "-",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )
