"""Writing a batch of classified transactions.  The caller owns the database transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update

from detector.store.models import EvidenceLine, LogFile, RecipientRow, TransactionRow
from detector.transactions import Transaction


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def log_file_id(
    connection: Connection, host: str, path: str, fingerprint: str, log_format: str
) -> int:
    """The id of the log file with this fingerprint on this host, recorded if new."""
    found = connection.execute(
        select(LogFile.id).where(LogFile.host == host, LogFile.fingerprint == fingerprint)
    ).scalar()
    if found is not None:
        connection.execute(update(LogFile).where(LogFile.id == found).values(path=path))
        return found
    inserted = connection.execute(
        insert(LogFile).values(
            host=host, path=path, fingerprint=fingerprint, format=log_format,
            first_seen=datetime.now(UTC),
        ).returning(LogFile.id)
    ).scalar_one()  # fmt: skip
    return inserted


def stored_offsets(connection: Connection, log_file: int, offsets: Iterable[int]) -> set[int]:
    """Which of these first-line offsets have a transaction stored (re-reading adds nothing)."""
    wanted = list(offsets)
    if not wanted:
        return set()
    rows = connection.execute(
        select(TransactionRow.offset).where(
            TransactionRow.log_file_id == log_file,
            TransactionRow.offset >= min(wanted),
            TransactionRow.offset <= max(wanted),
        )
    ).scalars()
    return set(rows) & set(wanted)


def insert_transactions(
    connection: Connection, log_file: int, transactions: Sequence[Transaction]
) -> tuple[list[Transaction], set[str]]:
    """Store classified transactions not stored before.

    Returns those stored and the client IPs whose relay attempts they add.
    """
    present = stored_offsets(connection, log_file, (t.lines[0][0] for t in transactions))
    fresh = [t for t in transactions if t.lines[0][0] not in present]
    if not fresh:
        return [], set()
    rows = []
    for t in fresh:
        refused, accepted = t.refused_relays, t.accepted_relays
        rows.append({
            "log_file_id": log_file, "offset": t.lines[0][0],
            "line_offsets": ",".join(str(offset) for offset, _ in t.lines),
            "host": t.host, "queue_id": t.queue_id, "started_at": utc(t.start),
            "ended_at": utc(t.end), "client_ip": t.client_ip, "client_name": t.client_name,
            "helo": t.helo, "sasl_user": t.sasl_user, "local_submission": t.local_submission,
            "sender": t.sender, "message_id": t.message_id, "size": t.size,
            "reject_reason": t.reject_reason, "internal": bool(t.internal),
            "sender_local": t.sender_local, "recipient_count": len(t.recipients),
            "refused_relays": refused, "accepted_relays": accepted,
        })  # fmt: skip
    ids = connection.execute(
        insert(TransactionRow).returning(TransactionRow.id, sort_by_parameter_order=True), rows
    ).scalars().all()  # fmt: skip
    recipients: list[dict[str, object]] = []
    evidence: list[dict[str, object]] = []
    touched: set[str] = set()
    for txn_id, t in zip(ids, fresh, strict=True):
        has_attempt = False
        for r in t.recipients:
            has_attempt = has_attempt or r.relay_attempt is not None
            recipients.append({
                "transaction_id": txn_id, "time": r.time, "client_ip": t.client_ip,
                "address": r.address, "orig_address": r.orig_address, "domain": r.domain,
                "direction": r.direction, "outcome": r.outcome, "relay_attempt": r.relay_attempt,
                "code": r.code, "enhanced": r.enhanced, "reason": r.reason,
                "next_hop": r.next_hop, "agent": r.agent,
            })  # fmt: skip
        if has_attempt and t.client_ip is not None:
            touched.add(t.client_ip)
            evidence.extend(
                {"transaction_id": txn_id, "offset": offset, "line": line}
                for offset, line in dict(t.lines).items()
            )
    if recipients:
        connection.execute(insert(RecipientRow), recipients)
    if evidence:
        connection.execute(insert(EvidenceLine), evidence)
    return fresh, touched
