"""The database schema (SQLAlchemy 2 declarative models).  It changes only through Alembic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime, stored without zone (as UTC) on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        result: datetime = value.replace(tzinfo=UTC)
        return result


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class LogFile(Base):
    """One log file of one relay host, known by a fingerprint of its first line."""

    __tablename__ = "log_files"
    __table_args__ = (UniqueConstraint("host", "fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)  # where it was last read from
    fingerprint: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(32))
    first_seen: Mapped[datetime] = mapped_column(UtcDateTime)


class TransactionRow(Base):
    """A relay transaction (``detector.transactions.Transaction``) as stored."""

    __tablename__ = "transactions"
    __table_args__ = (
        UniqueConstraint("log_file_id", "offset"),
        Index(None, "client_ip", "started_at"),
        Index(None, "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    log_file_id: Mapped[int] = mapped_column(ForeignKey("log_files.id", ondelete="CASCADE"))
    offset: Mapped[int] = mapped_column(BigInteger)  # byte offset of its first line
    line_offsets: Mapped[str] = mapped_column(Text)  # all its lines, comma separated
    host: Mapped[str] = mapped_column(String(255))
    queue_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[float] = mapped_column(Float)  # UTC epoch seconds (bulk-written)
    ended_at: Mapped[float] = mapped_column(Float)
    client_ip: Mapped[str | None] = mapped_column(String(45))
    client_name: Mapped[str | None] = mapped_column(String(255))
    helo: Mapped[str | None] = mapped_column(Text)
    sasl_user: Mapped[str | None] = mapped_column(String(255))
    local_submission: Mapped[bool] = mapped_column(Boolean, default=False)
    sender: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    reject_reason: Mapped[str | None] = mapped_column(Text)
    internal: Mapped[bool] = mapped_column(Boolean)
    sender_local: Mapped[bool | None] = mapped_column(Boolean)
    recipient_count: Mapped[int] = mapped_column(Integer)
    refused_relays: Mapped[int] = mapped_column(Integer)
    accepted_relays: Mapped[int] = mapped_column(Integer)


class RecipientRow(Base):
    """One recipient of a transaction and what became of it."""

    __tablename__ = "recipients"
    __table_args__ = (
        Index(
            "ix_recipients_relay_attempts",
            "client_ip",
            "time",
            sqlite_where=text("relay_attempt IS NOT NULL"),
            postgresql_where=text("relay_attempt IS NOT NULL"),
        ),
        Index(
            "ix_recipients_relay_attempt_times",
            "time",
            sqlite_where=text("relay_attempt IS NOT NULL"),
            postgresql_where=text("relay_attempt IS NOT NULL"),
        ),
        Index(None, "transaction_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("transactions.id", ondelete="CASCADE"))
    time: Mapped[float] = mapped_column(Float)  # UTC epoch seconds, for windowed counting
    client_ip: Mapped[str | None] = mapped_column(String(45))  # copied from the transaction
    address: Mapped[str] = mapped_column(Text)
    orig_address: Mapped[str | None] = mapped_column(Text)
    domain: Mapped[str | None] = mapped_column(String(255))
    direction: Mapped[str] = mapped_column(String(8))
    outcome: Mapped[str] = mapped_column(String(16))
    relay_attempt: Mapped[str | None] = mapped_column(String(8))
    code: Mapped[int | None] = mapped_column(Integer)
    enhanced: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    next_hop: Mapped[str | None] = mapped_column(Text)
    agent: Mapped[str | None] = mapped_column(String(32))


class EvidenceLine(Base):
    """The original log lines of transactions that contain relay attempts."""

    __tablename__ = "evidence_lines"

    transaction_id: Mapped[int] = mapped_column(
        ForeignKey("transactions.id", ondelete="CASCADE"), primary_key=True
    )
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    line: Mapped[str] = mapped_column(Text)


class OffenderRow(Base):
    """A client with at least one relay attempt, with its counters over everything stored
    (updated as attempts are stored) and its peaks in one window (updated when rescored)."""

    __tablename__ = "offenders"
    __table_args__ = (Index(None, "score"), Index(None, "last_seen"))

    ip: Mapped[str] = mapped_column(String(45), primary_key=True)
    first_seen: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime)
    relay_attempts: Mapped[int] = mapped_column(Integer)
    refused_relays: Mapped[int] = mapped_column(Integer)
    accepted_relays: Mapped[int] = mapped_column(Integer)
    recipients: Mapped[int] = mapped_column(Integer)
    recipient_domains: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    peak_refused: Mapped[int] = mapped_column(Integer)  # most refused attempts in one window
    peak_accepted: Mapped[int] = mapped_column(Integer)  # most accepted relays in one window
    reasons: Mapped[str] = mapped_column(Text)  # JSON list of sentences


class OffenderTarget(Base):
    """A distinct recipient address or domain an offender's relay attempts went to, known by a
    digest of its text (addresses are the client's, of any length): with it, storing an
    attempt updates the offender's distinct counts without reading its history."""

    __tablename__ = "offender_targets"

    ip: Mapped[str] = mapped_column(String(45), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # address, domain
    digest: Mapped[str] = mapped_column(String(32), primary_key=True)  # BLAKE2b-128, hex


class DecisionRow(Base):
    """A block of one value (an IP, a CIDR range or a SASL user), automatic or manual."""

    __tablename__ = "decisions"
    __table_args__ = (
        Index(None, "value", "expires_at"),
        Index(None, "expires_at"),
        Index(None, "created_at"),  # the circuit breaker counts the last minute's
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(8))  # ip, range, user
    origin: Mapped[str] = mapped_column(String(8))  # auto, manual
    reason: Mapped[str] = mapped_column(Text)
    evidence: Mapped[str] = mapped_column(Text)  # JSON: what made the scorer decide
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    duration_seconds: Mapped[int] = mapped_column(Integer)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # refusals because of it that the mail servers' logs show
    hits: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_hit_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AllowEntry(Base):
    """A network never to block, whatever the score or a manual request says."""

    __tablename__ = "allowlist"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    network: Mapped[str] = mapped_column(String(49), unique=True)  # a CIDR, normalised
    comment: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PolicyRequestRow(Base):
    """A request the Postfix policy service answered: the mail server asking about a client
    as it talks to it, before its log is read."""

    __tablename__ = "policy_requests"
    __table_args__ = (Index(None, "client_ip", "time"), Index(None, "decision_id"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    time: Mapped[float] = mapped_column(Float)  # UTC epoch seconds
    protocol_state: Mapped[str] = mapped_column(String(16))
    client_ip: Mapped[str] = mapped_column(String(45))
    client_name: Mapped[str | None] = mapped_column(String(255))
    helo: Mapped[str | None] = mapped_column(Text)
    sender: Mapped[str | None] = mapped_column(Text)
    recipient: Mapped[str | None] = mapped_column(Text)
    sasl_user: Mapped[str | None] = mapped_column(String(255))
    queue_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(Text)
    decision_id: Mapped[int | None] = mapped_column(Integer)


class _AtPosition:
    """A followed source (host, path) and a place in one of its files
    (``detector.follow.Position``)."""

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    device: Mapped[int] = mapped_column(BigInteger)
    inode: Mapped[int] = mapped_column(BigInteger)
    fingerprint: Mapped[str] = mapped_column(String(64))
    offset: Mapped[int] = mapped_column(BigInteger)


class SourcePosition(_AtPosition, Base):
    """How far following one source has read, committed in the same transaction as the rows
    read up to it."""

    __tablename__ = "source_positions"

    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SourceCheckpoint(_AtPosition, Base):
    """What the correlator of one source held (sessions and messages not finished yet) at a
    position at or before the read position: where a restart resumes.  A row of its own, so
    saving the read position does not rewrite it."""

    __tablename__ = "source_checkpoints"

    correlator_state: Mapped[bytes] = mapped_column(LargeBinary)  # JSON, zlib-compressed
    taken_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReportRow(Base):
    """A tracking report as built (by the daemon each night, or by ``relaywatch report``)."""

    __tablename__ = "reports"

    day: Mapped[str] = mapped_column(String(32), primary_key=True)  # the period's label
    host: Mapped[str] = mapped_column(String(255), primary_key=True)  # "" for all hosts
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    data: Mapped[str] = mapped_column(Text)  # the JSON rendering
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    mailed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    mail_error: Mapped[str | None] = mapped_column(Text)  # why the last try to mail it failed


class SourceDayRow(Base):
    """What relaywatch read of one source in one UTC day: added to with every batch stored."""

    __tablename__ = "source_days"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    lines: Mapped[int] = mapped_column(BigInteger)
    parsed: Mapped[int] = mapped_column(BigInteger)
    unparsed: Mapped[int] = mapped_column(BigInteger)
    lag_bytes: Mapped[int | None] = mapped_column(BigInteger)  # at the last batch of the day
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SinkTroubleRow(Base):
    """A time one sink could not push the blocks: from its first failure to its recovery."""

    __tablename__ = "sink_troubles"
    __table_args__ = (Index(None, "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sink: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    failures: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)  # the last failure's
