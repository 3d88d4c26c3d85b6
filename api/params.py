"""Query parameters shared by several routes."""

from __future__ import annotations

from datetime import UTC, datetime

from detector.config import parse_duration
from detector.errors import InputError


def since_param(value: str | None, now: datetime) -> datetime | None:
    """``since`` is a duration back from now (``1h``, ``7d``) or an ISO 8601 time."""
    if value is None or value == "":
        return None
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"since={value!r} is neither a duration (1h, 7d) nor a time (2026-11-30T08:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
