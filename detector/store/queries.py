"""Reading the store: offenders, their evidence, transactions.  Callers own the connection."""

from __future__ import annotations

import base64
import ipaddress
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, or_, select, tuple_

from detector.errors import InputError, NotFound
from detector.render import iso
from detector.score import attempt_counters, score
from detector.store.models import (
    DecisionRow,
    EvidenceLine,
    OffenderRow,
    RecipientRow,
    TransactionRow,
)


@dataclass(frozen=True, slots=True)
class Offender:
    ip: str
    score: float
    relay_attempts: int
    refused_relays: int
    accepted_relays: int
    recipients: int
    recipient_domains: int
    first_seen: datetime
    last_seen: datetime
    blocked: bool
    blocked_until: datetime | None
    reasons: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        """The offender object of DESIGN.md §3 (CLI JSON and API)."""
        return {
            "ip": self.ip, "score": self.score, "relay_attempts": self.relay_attempts,
            "refused_relays": self.refused_relays, "accepted_relays": self.accepted_relays,
            "recipients": self.recipients, "recipient_domains": self.recipient_domains,
            "first_seen": iso(self.first_seen), "last_seen": iso(self.last_seen),
            "blocked": self.blocked, "blocked_until": iso(self.blocked_until),
            "reasons": list(self.reasons),
        }  # fmt: skip


def active_blocks(connection: Connection, now: datetime) -> dict[str, datetime]:
    """Blocked value → when its block ends, for every decision in force at ``now``."""
    rows = connection.execute(
        select(DecisionRow.value, func.max(DecisionRow.expires_at))
        .where(
            DecisionRow.revoked_at.is_(None),
            DecisionRow.created_at <= now,
            DecisionRow.expires_at > now,
        )
        .group_by(DecisionRow.value)
    )
    return {value: until.replace(tzinfo=UTC) for value, until in rows}


def list_offenders(
    connection: Connection,
    now: datetime,
    *,
    since: datetime | None = None,
    blocked: bool | None = None,
    limit: int | None = None,
    after: tuple[float, str] | None = None,
) -> list[Offender]:
    """Offenders by descending score then IP; ``after`` continues a page (score, ip)."""
    blocks = active_blocks(connection, now)
    if since is None:
        query = select(OffenderRow.__table__)
        if blocked is not None:
            ips = list(blocks)
            query = query.where(OffenderRow.ip.in_(ips) if blocked else OffenderRow.ip.not_in(ips))
        if after is not None:
            query = query.where(
                or_(OffenderRow.score < after[0],
                    (OffenderRow.score == after[0]) & (OffenderRow.ip > after[1]))
            )  # fmt: skip
        query = query.order_by(OffenderRow.score.desc(), OffenderRow.ip)
        if limit is not None:
            query = query.limit(limit)
        return [_from_row(row, blocks) for row in connection.execute(query)]
    offenders = _offenders_since(connection, since, blocks)
    if blocked is not None:
        offenders = [o for o in offenders if o.blocked == blocked]
    offenders.sort(key=lambda o: (-o.score, o.ip))
    if after is not None:
        offenders = [o for o in offenders if (-o.score, o.ip) > (-after[0], after[1])]
    return offenders[:limit] if limit is not None else offenders


def _from_row(row: Any, blocks: dict[str, datetime]) -> Offender:
    until = blocks.get(row.ip)
    return Offender(
        ip=row.ip, score=row.score, relay_attempts=row.relay_attempts,
        refused_relays=row.refused_relays, accepted_relays=row.accepted_relays,
        recipients=row.recipients, recipient_domains=row.recipient_domains,
        first_seen=row.first_seen, last_seen=row.last_seen, blocked=until is not None,
        blocked_until=until, reasons=tuple(json.loads(row.reasons)),
    )  # fmt: skip


def _offenders_since(
    connection: Connection, since: datetime, blocks: dict[str, datetime]
) -> list[Offender]:
    counters = attempt_counters(connection, RecipientRow.time >= since.timestamp())
    offenders = []
    stamp = iso(since)
    for ip, (attempts, refused, accepted, recipients, domains, first, last) in counters.items():
        reasons = []
        if accepted:
            reasons.append(f"{accepted} accepted relays since {stamp} (the server relayed for it)")
        if refused:
            reasons.append(f"{refused} refused relay attempts since {stamp}")
        until = blocks.get(ip)
        offenders.append(
            Offender(
                ip=ip,
                score=score(refused, accepted, domains),
                relay_attempts=attempts,
                refused_relays=refused,
                accepted_relays=accepted,
                recipients=recipients,
                recipient_domains=domains,
                first_seen=datetime.fromtimestamp(first, UTC),
                last_seen=datetime.fromtimestamp(last, UTC),
                blocked=until is not None,
                blocked_until=until,
                reasons=tuple(reasons),
            )
        )
    return offenders


def normalise_ip(text: str) -> str:
    """The canonical spelling of an address (``0:0:0:0:0:0:0:1`` is ``::1``)."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise InputError(f"{text!r} is not an IP address") from None


def get_offender(connection: Connection, ip: str, now: datetime) -> Offender:
    ip = normalise_ip(ip)
    row = connection.execute(select(OffenderRow.__table__).where(OffenderRow.ip == ip)).first()
    if row is None:
        raise NotFound(f"{ip} has no relay attempts stored")
    return _from_row(row, active_blocks(connection, now))


def transaction_json(row: Any, recipients: list[Any]) -> dict[str, Any]:
    return {
        "id": row.id, "host": row.host, "queue_id": row.queue_id,
        "started_at": iso(_utc(row.started_at)), "ended_at": iso(_utc(row.ended_at)),
        "client_ip": row.client_ip, "client_name": row.client_name, "helo": row.helo,
        "sasl_user": row.sasl_user, "sender": row.sender, "message_id": row.message_id,
        "size": row.size, "internal": row.internal, "reject_reason": row.reject_reason,
        "refused_relays": row.refused_relays, "accepted_relays": row.accepted_relays,
        "recipients": [
            {"address": r.address, "orig_address": r.orig_address, "domain": r.domain,
             "direction": r.direction, "outcome": r.outcome, "relay_attempt": r.relay_attempt,
             "code": r.code, "enhanced": r.enhanced, "reason": r.reason,
             "next_hop": r.next_hop}
            for r in recipients
        ],
    }  # fmt: skip


def _recipients_of(connection: Connection, ids: list[int]) -> dict[int, list[Any]]:
    found: dict[int, list[Any]] = {i: [] for i in ids}
    if ids:
        rows = connection.execute(
            select(RecipientRow.__table__)
            .where(RecipientRow.transaction_id.in_(ids))
            .order_by(RecipientRow.id)
        )
        for r in rows:
            found[r.transaction_id].append(r)
    return found


def evidence(connection: Connection, ip: str, limit: int = 100) -> list[dict[str, Any]]:
    """The latest transactions of ``ip`` with relay attempts, with their original log lines."""
    rows = connection.execute(
        select(TransactionRow.__table__)
        .where(
            TransactionRow.client_ip == ip,
            (TransactionRow.refused_relays > 0) | (TransactionRow.accepted_relays > 0),
        )
        .order_by(TransactionRow.started_at.desc(), TransactionRow.id.desc())
        .limit(limit)
    ).all()
    ids = [row.id for row in rows]
    recipients = _recipients_of(connection, ids)
    lines: dict[int, list[str]] = {i: [] for i in ids}
    if ids:
        for txn_id, line in connection.execute(
            select(EvidenceLine.transaction_id, EvidenceLine.line)
            .where(EvidenceLine.transaction_id.in_(ids))
            .order_by(EvidenceLine.transaction_id, EvidenceLine.offset)
        ):
            lines[txn_id].append(line)
    return [{**transaction_json(row, recipients[row.id]), "lines": lines[row.id]} for row in rows]


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def encode_cursor(started_at: float, txn_id: int) -> str:
    raw = f"{started_at!r}:{txn_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, txn_id = raw.split(":")
        return float(stamp), int(txn_id)
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"invalid cursor {cursor!r}") from None


def list_transactions(
    connection: Connection,
    *,
    client_ip: str | None = None,
    direction: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of transactions, newest first, and the cursor of the next page (or ``None``)."""
    query = select(TransactionRow.__table__)
    if client_ip is not None:
        query = query.where(TransactionRow.client_ip == client_ip)
    if since is not None:
        query = query.where(TransactionRow.started_at >= since.timestamp())
    if direction is not None:
        matching = select(RecipientRow.transaction_id).where(RecipientRow.direction == direction)
        query = query.where(TransactionRow.id.in_(matching))
    if cursor:
        started, txn_id = decode_cursor(cursor)
        query = query.where(
            tuple_(TransactionRow.started_at, TransactionRow.id) < (started, txn_id)
        )
    query = query.order_by(TransactionRow.started_at.desc(), TransactionRow.id.desc()).limit(
        limit + 1
    )
    rows = connection.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    recipients = _recipients_of(connection, [row.id for row in rows])
    page = [transaction_json(row, recipients[row.id]) for row in rows]
    next_cursor = encode_cursor(rows[-1].started_at, rows[-1].id) if more and rows else None
    return page, next_cursor
