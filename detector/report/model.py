"""What a tracking report says: the numbers of one period (a day, by default) of one relay host
or all of them, as plain data.  :mod:`detector.report.build` computes it from the store; the
renderers (JSON, text, HTML) only present it, so every output says the same numbers.

Times are aware UTC datetimes; ``period`` says which local day (``timezone``) they cover.
Lists are sorted as they are shown (largest first, ties by name) and cut to ``top`` entries
where the field says "top".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime  # inclusive, UTC
    end: datetime  # exclusive, UTC
    label: str  # "2026-12-01" for a day, "2026-12-01..2026-12-07" for longer
    timezone: str  # the IANA zone the day is counted in
    host: str | None  # one relay host, or None: all of them


@dataclass(frozen=True, slots=True)
class Count:
    name: str
    count: int


@dataclass(frozen=True, slots=True)
class Headline:
    open_relay: bool  # an outside client's relay was accepted: the server relayed for it
    accepted_relays: int  # accepted relay attempts (recipients)
    refused_relays: int  # refused relay attempts (recipients)
    offenders: int  # clients with relay attempts in the period
    new_blocks: int  # blocks made in the period
    expired_blocks: int  # blocks that ended (expired or revoked) in the period
    active_blocks: int  # blocks in force at the end of the period
    enforcement_hits: int  # refusals the mail servers logged because of a block
    accepted_transactions: int = 0  # transactions with accepted relays (Report.accepted may be cut)


@dataclass(frozen=True, slots=True)
class AcceptedRelay:
    """A transaction in which the server accepted mail from outside to outside."""

    time: datetime
    host: str
    queue_id: str | None
    client_ip: str | None
    client_name: str | None
    helo: str | None
    sender: str | None
    recipients: tuple[str, ...]  # the accepted outside recipients
    lines: tuple[str, ...]  # the original log lines


@dataclass(frozen=True, slots=True)
class OffenderLine:
    ip: str
    client_names: tuple[str, ...]  # reverse names as logged
    helos: tuple[str, ...]
    attempts: int
    refused: int
    accepted: int
    recipients: int  # distinct
    recipient_domains: int  # distinct
    first_seen: datetime  # in the period
    last_seen: datetime
    blocked_until: datetime | None  # of the block in force at the end of the period
    returning: bool  # relay attempts stored before the period


@dataclass(frozen=True, slots=True)
class DayCount:
    day: str  # "2026-11-30"
    count: int


@dataclass(frozen=True, slots=True)
class SuspectAccount:
    """An authenticated user whose relaying looks like a stolen password: outside sender
    addresses not its own, many outside recipients, many client addresses."""

    user: str
    messages: int
    client_ips: int  # distinct
    outside_senders: tuple[str, ...]  # sender addresses outside the local domains
    outside_recipients: int  # distinct


@dataclass(frozen=True, slots=True)
class HourTraffic:
    hour: str  # "2026-12-01T13" in the period's zone
    received: int
    delivered: int
    deferred: int
    bounced: int
    rejected: int


@dataclass(frozen=True, slots=True)
class Traffic:
    """The mail of the period as pflogsumm's Grand Totals count it (see the builder for the
    definitions and where they differ)."""

    received: int  # messages accepted into the queue from a client or a local submission
    delivered: int  # recipients delivered
    deferred: int  # recipients deferred at least once (pflogsumm: "deferred")
    deferrals: int  # deferral log lines (pflogsumm: "deferrals")
    bounced: int  # recipients bounced
    rejected: int  # recipients (or whole transactions) refused during the SMTP conversation
    bytes_received: int
    bytes_delivered: int
    senders: int  # distinct sender addresses
    recipients: int  # distinct recipient addresses
    rejected_by_reason: tuple[Count, ...]  # top
    per_hour: tuple[HourTraffic, ...]
    top_sender_domains: tuple[Count, ...]  # by messages received
    top_recipient_domains: tuple[Count, ...]  # by recipients delivered


@dataclass(frozen=True, slots=True)
class SourceDay:
    """What relaywatch read of one source in the period."""

    host: str
    path: str
    lines: int
    parsed: int
    unparsed: int
    lag_bytes: int | None  # at the last read in the period (None: not followed)


@dataclass(frozen=True, slots=True)
class SinkTrouble:
    """A time a sink could not push the blocks (from its first failure to its recovery)."""

    sink: str
    started_at: datetime
    ended_at: datetime | None  # None: still failing at the end of the period
    failures: int
    message: str


@dataclass(frozen=True, slots=True)
class Report:
    period: Period
    generated_at: datetime
    headline: Headline
    accepted: tuple[AcceptedRelay, ...]  # accepted relay transactions (the open relay), oldest
    # first; at most build.ACCEPTED_SHOWN: headline.accepted_transactions says how many there were
    attempts_per_hour: tuple[Count, ...]  # relay attempts by hour ("2026-12-01T13")
    attempts_per_host: tuple[Count, ...]
    trend: tuple[DayCount, ...]  # relay attempts of the 7 days before, then of this one
    offenders: tuple[OffenderLine, ...]  # top, worst first
    target_domains: tuple[Count, ...]  # top outside recipient domains of relay attempts
    sender_domains: tuple[Count, ...]  # top sender domains of relay attempts (forged)
    helos: tuple[Count, ...]  # top HELO names of relay attempts
    suspect_accounts: tuple[SuspectAccount, ...]
    traffic: Traffic
    sources: tuple[SourceDay, ...]
    sinks: tuple[SinkTrouble, ...]
    top: int = 20  # how many entries the "top" lists keep
    notes: tuple[str, ...] = field(default=())  # what the numbers cannot say (missing data)
