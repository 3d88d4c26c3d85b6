"""Block decisions: creating them with the right duration, and what counts as active.

Time is the log's time: an automatic block starts at the attempt that crossed the threshold
and lasts ``block_duration``; a client blocked before gets ``repeat_factor`` times its last
duration, up to ``max_block_duration``.  Internal networks are never blocked.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select

from detector.config import ScoringSettings
from detector.store.models import DecisionRow

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Decision:
    id: int
    value: str
    scope: str  # ip, range, user
    origin: str  # auto, manual
    reason: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and self.created_at <= now < self.expires_at

    @classmethod
    def from_row(cls, row: Any) -> Decision:
        return cls(
            id=row.id, value=row.value, scope=row.scope, origin=row.origin, reason=row.reason,
            created_at=row.created_at, expires_at=row.expires_at, revoked_at=row.revoked_at,
        )  # fmt: skip


class NeverBlock:
    """The addresses no decision may cover: the internal networks."""

    def __init__(self, internal_networks: list[str]) -> None:
        self._networks = [ipaddress.ip_network(n) for n in internal_networks]

    def reason(self, ip: str) -> str | None:
        """Why ``ip`` must not be blocked, or ``None`` when it may be."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return f"{ip!r} is not an IP address"
        for network in self._networks:
            if address.version == network.version and address in network:
                return f"{ip} is in the internal network {network}"
        return None


def decisions_for(connection: Connection, value: str) -> list[Decision]:
    rows = connection.execute(
        select(DecisionRow.__table__)
        .where(DecisionRow.value == value)
        .order_by(DecisionRow.created_at)
    )
    return [Decision.from_row(row) for row in rows]


def next_duration(previous: list[Decision], scoring: ScoringSettings) -> timedelta:
    """``block_duration`` for a first offence, then ``repeat_factor`` × the last, capped."""
    autos = [d for d in previous if d.origin == AUTO]
    if not autos:
        return scoring.block_duration
    last = autos[-1].expires_at - autos[-1].created_at
    return min(last * scoring.repeat_factor, scoring.max_block_duration)


def create_block(
    connection: Connection,
    value: str,
    *,
    origin: str,
    reason: str,
    start: datetime,
    duration: timedelta,
    evidence: dict[str, object],
) -> Decision:
    scope = "range" if "/" in value else "ip"
    expires = start + duration
    new_id = connection.execute(
        insert(DecisionRow).values(
            value=value, scope=scope, origin=origin, reason=reason,
            evidence=json.dumps(evidence, sort_keys=True), created_at=start, expires_at=expires,
            duration_seconds=int(duration.total_seconds()), revoked_at=None,
        ).returning(DecisionRow.id)
    ).scalar_one()  # fmt: skip
    return Decision(new_id, value, scope, origin, reason, start, expires, None)
