"""Writing a batch of classified transactions.  The caller owns the database transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update

from detector.store.models import LogFile
from detector.transactions import ACCEPTED, REFUSED, Transaction


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


def stored_ids(connection: Connection, log_file: int, offsets: Sequence[int]) -> dict[int, int]:
    """The ids of the transactions stored for this log file with these first-line offsets, by
    offset.  Asked offset by offset (a range from the lowest to the highest would also read
    every transaction stored between a long-held message and the rest of its batch: measured,
    half of a following daemon's time after 3M lines).  Read through the driver's own cursor:
    SQLAlchemy's rows cost ten times more, and a batch reads back one id per transaction."""
    mark = _marker(connection)
    found: dict[int, int] = {}
    cursor = connection.connection.cursor()
    try:
        for start in range(0, len(offsets), _ID_QUERY):
            chunk = offsets[start : start + _ID_QUERY]
            cursor.execute(
                f'SELECT "offset", id FROM transactions WHERE log_file_id = {mark} '
                f'AND "offset" IN ({", ".join([mark] * len(chunk))})',
                (log_file, *chunk),
            )
            found.update(cursor.fetchall())
        return found
    finally:
        cursor.close()


_ID_QUERY = 500  # offsets asked at once (SQLite takes at most 32,766 parameters)


_TRANSACTION_COLUMNS = (
    "log_file_id", "offset", "line_offsets", "host", "queue_id", "started_at", "ended_at",
    "client_ip", "client_name", "helo", "sasl_user", "local_submission", "sender", "message_id",
    "size", "reject_reason", "internal", "sender_local", "recipient_count", "refused_relays",
    "accepted_relays",
)  # fmt: skip
_RECIPIENT_COLUMNS = (
    "transaction_id", "time", "client_ip", "address", "orig_address", "domain", "direction",
    "outcome", "relay_attempt", "code", "enhanced", "reason", "next_hop", "agent",
)  # fmt: skip
_EVIDENCE_COLUMNS = ("transaction_id", "offset", "line")


def _marker(connection: Connection) -> str:
    """The driver's parameter marker (sqlite3: ``?``, psycopg: ``%s``)."""
    return "?" if connection.dialect.paramstyle == "qmark" else "%s"


def _bulk_insert(
    connection: Connection, table: str, columns: Sequence[str], rows: Sequence[tuple[object, ...]]
) -> None:
    """``executemany`` straight to the driver: SQLAlchemy's per-row parameter processing costs
    more than the insert itself at ingest rates, and these rows are plain values already."""
    if not rows:
        return
    marker = _marker(connection)
    names = ", ".join(f'"{c}"' for c in columns)
    sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join([marker] * len(columns))})"
    connection.exec_driver_sql(sql, rows)


def insert_transactions(
    connection: Connection, file_ids: Mapping[str | None, int], transactions: Sequence[Transaction]
) -> tuple[list[Transaction], dict[str, float]]:
    """Store classified transactions not stored before, each under the log file its
    ``source_file`` fingerprint names in ``file_ids``.

    Returns those stored, and for each client whose relay attempts they add, the earliest.
    """
    by_file: dict[int, list[Transaction]] = {}
    for t in transactions:
        by_file.setdefault(file_ids[t.source_file], []).append(t)
    stored: list[Transaction] = []
    touched: dict[str, float] = {}
    for log_file, group in by_file.items():
        fresh, clients = _insert_file(connection, log_file, group)
        stored += fresh
        for ip, first in clients.items():
            touched[ip] = min(first, touched.get(ip, first))
    return stored, touched


def _insert_file(
    connection: Connection, log_file: int, transactions: Sequence[Transaction]
) -> tuple[list[Transaction], dict[str, float]]:
    offsets = [t.offsets[0] for t in transactions]
    present = stored_ids(connection, log_file, offsets)
    fresh = [t for t in transactions if t.offsets[0] not in present]
    if not fresh:
        return [], {}
    rows = []
    for t in fresh:
        recipients = t.recipients
        rows.append((
            log_file, t.offsets[0], ",".join(map(str, t.offsets)), t.host,
            t.queue_id, t.start, t.end, t.client_ip, t.client_name, t.helo, t.sasl_user,
            t.local_submission, t.sender, t.message_id, t.size, t.reject_reason, bool(t.internal),
            t.sender_local, len(recipients),
            sum(1 for r in recipients if r.relay_attempt == REFUSED),
            sum(1 for r in recipients if r.relay_attempt == ACCEPTED),
        ))  # fmt: skip
    _bulk_insert(connection, "transactions", _TRANSACTION_COLUMNS, rows)
    # the ids the database gave them, by first-line offset (unique in a log file)
    ids = stored_ids(connection, log_file, [t.offsets[0] for t in fresh])
    recipients_rows: list[tuple[object, ...]] = []
    evidence: list[tuple[object, ...]] = []
    touched: dict[str, float] = {}
    for t in fresh:
        txn_id = ids[t.offsets[0]]
        first_attempt = None
        for r in t.recipients:
            if r.relay_attempt is not None and (first_attempt is None or r.time < first_attempt):
                first_attempt = r.time
            recipients_rows.append((
                txn_id, r.time, t.client_ip, r.address, r.orig_address, r.domain, r.direction,
                r.outcome, r.relay_attempt, r.code, r.enhanced, r.reason, r.next_hop, r.agent,
            ))  # fmt: skip
        if first_attempt is not None and t.client_ip is not None:
            touched[t.client_ip] = min(first_attempt, touched.get(t.client_ip, first_attempt))
            lines = dict(zip(t.offsets, t.texts, strict=True))  # a line may serve twice
            evidence.extend((txn_id, offset, text) for offset, text in lines.items())
    _bulk_insert(connection, "recipients", _RECIPIENT_COLUMNS, recipients_rows)
    _bulk_insert(connection, "evidence_lines", _EVIDENCE_COLUMNS, evidence)
    return fresh, touched
