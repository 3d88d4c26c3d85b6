"""Block decisions: creating them with the right duration, and what counts as active.

Time is the log's time: an automatic block starts at the attempt that crossed the threshold
and lasts ``block_duration``; a client blocked before gets ``repeat_factor`` times its last
duration, up to ``max_block_duration``.  Internal networks are never blocked.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, delete, func, insert, literal, select, update

from detector.config import ScoringSettings
from detector.store.models import AllowEntry, DecisionRow, PolicyRequestRow, UtcDateTime
from detector.transactions import Transaction

AUTO = "auto"
MANUAL = "manual"


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
    hits: int = 0  # refusals because of it that the mail servers' logs show
    last_hit_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and self.created_at <= now < self.expires_at

    @classmethod
    def from_row(cls, row: Any) -> Decision:
        return cls(
            id=row.id, value=row.value, scope=row.scope, origin=row.origin, reason=row.reason,
            created_at=row.created_at, expires_at=row.expires_at, revoked_at=row.revoked_at,
            hits=row.hits, last_hit_at=row.last_hit_at,
        )  # fmt: skip


def refusal_text(decision: Decision) -> str:
    """The text every sink puts in its refusal: the mail server logs it with the refusal, so
    ``relaywatch decision <id>`` in a log line names the decision that refused the client."""
    until = decision.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"relaywatch decision {decision.id}: relay abuse, blocked until {until}"


class Refused(Exception):
    """A block that must not be made (a never-blocked address) or a value that is not one."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_value(value: str) -> Network:
    """The network a block value names: an IP (a /32 or /128) or a CIDR range; ``Refused``
    when it is neither (or a range with host bits, which would hide a typing mistake)."""
    try:
        network = ipaddress.ip_network(value.strip())
    except ValueError:
        raise Refused(f"{value!r} is not an IP address or a CIDR range") from None
    mapped = getattr(network.network_address, "ipv4_mapped", None)
    if mapped is not None and network.prefixlen >= 96:
        network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network


def normal_value(network: Network) -> str:
    """How a block value is stored: ``203.0.113.7`` for one address, else the CIDR."""
    single = network.prefixlen == network.max_prefixlen
    return str(network.network_address) if single else str(network)


class NeverBlock:
    """The addresses no decision may cover: the internal networks, the relay hosts' own
    addresses and the allowlist (read again by :meth:`refresh`)."""

    def __init__(self, internal_networks: Sequence[str], own_addresses: Sequence[str] = ()) -> None:
        internal = [(n, f"the internal network {n}") for n in internal_networks]
        own = [(n, f"an address of the relay host ({n})") for n in own_addresses]
        self._fixed = [(ipaddress.ip_network(n), why) for n, why in (*internal, *own)]
        self._allowed: list[tuple[Network, str]] = []

    def refresh(self, connection: Connection) -> None:
        """Read the allowlist again (it changes from the API and the CLI)."""
        self._allowed = [
            (ipaddress.ip_network(row.network), f"the allowlist entry {row.network}"
             + (f" ({row.comment})" if row.comment else ""))
            for row in connection.execute(select(AllowEntry.network, AllowEntry.comment))
        ]  # fmt: skip

    def reason(self, value: str) -> str | None:
        """Why ``value`` (an IP or a range) must not be blocked, or ``None`` when it may be."""
        try:
            wanted = parse_value(value)
        except Refused as exc:
            return str(exc)
        for network, why in (*self._fixed, *self._allowed):
            if _overlaps(network, wanted):
                inside = wanted.subnet_of(network)  # type: ignore[arg-type]
                return f"{value} is in {why}" if inside else f"{value} covers {why}"
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


def active_decisions(connection: Connection, now: datetime) -> list[Decision]:
    """The decisions in force at ``now``: not revoked, not expired (a block made from a log
    read late is in force until it expires, even if it started before ``now``)."""
    rows = connection.execute(
        select(DecisionRow.__table__)
        .where(DecisionRow.revoked_at.is_(None), DecisionRow.expires_at > now)
        .order_by(DecisionRow.id)
    )
    return [Decision.from_row(row) for row in rows]


def block(
    connection: Connection,
    value: str,
    *,
    duration: timedelta,
    reason: str,
    now: datetime,
    never_block: NeverBlock,
) -> Decision:
    """A manual block of an IP or a CIDR range, replacing the value's blocks in force;
    ``Refused`` (with the reason) for a value that must never be blocked."""
    text = normal_value(parse_value(value))
    never_block.refresh(connection)
    why = never_block.reason(text)
    if why is not None:
        raise Refused(f"not blocking {text}: {why}")
    _revoke(connection, [d for d in active_decisions(connection, now) if d.value == text], now)
    return create_block(
        connection, text, origin=MANUAL, reason=reason.strip() or "blocked by hand", start=now,
        duration=duration, evidence={},
    )  # fmt: skip


def unblock(connection: Connection, value: str, now: datetime) -> list[Decision]:
    """Revoke the blocks of ``value`` (an IP or a CIDR) in force; the ones revoked."""
    text = normal_value(parse_value(value))
    return _revoke(
        connection, [d for d in active_decisions(connection, now) if d.value == text], now
    )


def revoke(connection: Connection, decision_id: int, now: datetime) -> Decision | None:
    """Revoke one decision by its id; ``None`` when there is none in force with that id."""
    found = [d for d in active_decisions(connection, now) if d.id == decision_id]
    revoked = _revoke(connection, found, now)
    return revoked[0] if revoked else None


def _revoke(connection: Connection, decisions: list[Decision], now: datetime) -> list[Decision]:
    if decisions:
        connection.execute(
            update(DecisionRow)
            .where(DecisionRow.id.in_([d.id for d in decisions]))
            .values(revoked_at=now)
        )
    return [replace(d, revoked_at=now) for d in decisions]


@dataclass(frozen=True, slots=True)
class Allowed:
    id: int
    network: str
    comment: str
    created_at: datetime


def allowlist(connection: Connection) -> list[Allowed]:
    rows = connection.execute(select(AllowEntry.__table__).order_by(AllowEntry.id))
    return [Allowed(r.id, r.network, r.comment, r.created_at) for r in rows]


def allow(
    connection: Connection, cidr: str, comment: str, now: datetime
) -> tuple[Allowed, list[Decision]]:
    """Add a never-block entry, and revoke the blocks in force that it covers (they go from
    the sinks at their next sync); the entry and the decisions revoked.  An entry that is
    there already keeps its id and takes the new comment."""
    try:
        network = str(ipaddress.ip_network(cidr.strip(), strict=False))
    except ValueError:
        raise Refused(f"{cidr!r} is not an IP address or a CIDR range") from None
    found = connection.execute(
        select(AllowEntry.__table__).where(AllowEntry.network == network)
    ).first()
    if found is None:
        entry_id = connection.execute(
            insert(AllowEntry)
            .values(network=network, comment=comment.strip(), created_at=now)
            .returning(AllowEntry.id)
        ).scalar_one()
        entry = Allowed(entry_id, network, comment.strip(), now)
    else:
        connection.execute(
            update(AllowEntry).where(AllowEntry.id == found.id).values(comment=comment.strip())
        )
        entry = Allowed(found.id, network, comment.strip(), found.created_at)
    allowed = ipaddress.ip_network(network)
    covered = [
        d for d in active_decisions(connection, now)
        if d.scope != "user" and _overlaps(allowed, parse_value(d.value))
    ]  # fmt: skip
    return entry, _revoke(connection, covered, now)


def disallow(connection: Connection, entry_id: int) -> bool:
    """Remove an allowlist entry; whether there was one with that id."""
    result = connection.execute(delete(AllowEntry).where(AllowEntry.id == entry_id))
    return bool(result.rowcount)


def _overlaps(a: Network, b: Network) -> bool:
    return a.version == b.version and a.overlaps(b)


_HIT = re.compile(
    r"(?:^| )relaywatch decision (\d{1,18}): relay abuse, blocked until "
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z"
)
""":func:`refusal_text` at the end of a refusal the mail server logged (after Postfix's
``<unknown[192.0.2.7]>: Client host rejected:`` for a ``cidr:`` table hit, its ``<rcpt>:
Recipient address rejected:`` for a policy service answer, Sendmail's status code).  The
server's own words end a refusal, so a client's text (an address) can never pass for it."""


def enforced_by(reason: str | None) -> int | None:
    """The id of the decision a refusal's text says caused it, or ``None``."""
    if not reason or "relaywatch" not in reason:  # the common case, at no regex's cost
        return None
    hit = _HIT.search(reason)
    return None if hit is None else int(hit[1])


def record_hits(connection: Connection, transactions: Iterable[Transaction]) -> int:
    """Count the refusals in just stored transactions that a decision caused (the mail server
    enforcing it), per decision; the number found.  They are not relay attempts."""
    hits: dict[int, list[float]] = {}
    for txn in transactions:
        found = [(hit, r.time) for r in txn.recipients if (hit := enforced_by(r.reason))]
        if not found and (hit := enforced_by(txn.reject_reason)):
            found = [(hit, txn.end)]
        for decision_id, when in found:
            hits.setdefault(decision_id, []).append(when)
    for decision_id, times in hits.items():
        last = literal(datetime.fromtimestamp(max(times), UTC), UtcDateTime())
        previous = DecisionRow.last_hit_at
        connection.execute(
            update(DecisionRow)
            .where(DecisionRow.id == decision_id)
            .values(
                hits=DecisionRow.hits + len(times),
                last_hit_at=case((previous.is_(None) | (previous < last), last), else_=previous),
            )
        )
    return sum(map(len, hits.values()))


def policy_rejects(connection: Connection, decision_ids: Iterable[int]) -> dict[int, int]:
    """How many requests the Postfix policy service refused because of each decision."""
    wanted = sorted(set(decision_ids))
    if not wanted:
        return {}
    rows = connection.execute(
        select(PolicyRequestRow.decision_id, func.count())
        .where(PolicyRequestRow.decision_id.in_(wanted))
        .group_by(PolicyRequestRow.decision_id)
    )
    return {decision_id: count for decision_id, count in rows if decision_id is not None}
