"""Decisions for the sink tests, stated by what matters to each test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from detector.decide import Decision

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def decision(
    id: int,
    value: str,
    *,
    hours: float = 1.0,
    scope: str | None = None,
    revoked: bool = False,
) -> Decision:
    """A block of ``value`` made 5 minutes before :data:`NOW`, ending ``hours`` after it."""
    return Decision(
        id=id, value=value, scope=scope or ("range" if "/" in value else "ip"), origin="auto",
        reason="9 refused relay attempts in 10m", created_at=NOW - timedelta(minutes=5),
        expires_at=NOW + timedelta(hours=hours), revoked_at=NOW if revoked else None,
    )  # fmt: skip


def expired(id: int, value: str) -> Decision:
    """A block that ended an hour before :data:`NOW`."""
    return decision(id, value, hours=-1)
