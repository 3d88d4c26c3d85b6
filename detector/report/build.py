"""The numbers of a tracking report, computed from the store for one local day (or several).

Definitions (the README and ``bench/README.md`` say where they differ from pflogsumm's):

- A **relay attempt** is a stored recipient with ``relay_attempt`` set (``ext→ext``: an outside,
  unauthenticated client asking for mail to an outside domain, DESIGN.md §1), counted at the
  time its outcome was logged.  **Refused** and **accepted** split them; the server was an
  **open relay** in the period when at least one was accepted.  **Offenders** are the distinct
  client addresses with relay attempts in the period; one is **returning** when relay attempts
  of it are stored from before the period.
- **Blocks**: *new* were made in the period; *ended* stopped in it (expired, or revoked before
  they expired); *active* were in force at its end (made before, neither expired nor revoked
  then).  Blocks are not per relay host: a report of one host counts all of them.
- **Enforcement hits**: refusals logged in the period whose text names a relaywatch decision
  (the mail server enforcing a block), counted in the stored transactions themselves, so per
  period exactly (a decision's ``hits`` counter only has a total and the last time).
- **Traffic**, as pflogsumm's Grand Totals count it, from the stored transactions:
  *received* — messages queued from a client or a local submission (Postfix: a ``client=`` or
  ``pickup`` line), at their first line; *delivered*, *bounced* — recipients with that outcome,
  at the time of its line (bounce notices Postfix sends itself included); *rejected* — refused
  recipients plus transactions refused as a whole (HELO, MAIL, DATA), at the time of the
  refusal; *bytes received* — sizes of the messages received; *bytes delivered* — the message
  size once per delivered recipient; *senders* — distinct sender addresses of the messages
  received (``<>`` for the null sender); *recipients* — distinct delivered addresses.
  The store keeps each recipient's **last** outcome only, so *deferred* counts messages with a
  recipient still deferred when last logged and *deferrals* those recipients: a deferral
  followed by a delivery counts as delivered only (pflogsumm counts every queue id that was
  ever deferred, and every deferral line).  Repeated refusals of one recipient in one
  transaction are one refusal (pflogsumm counts lines).  Deliveries are counted for messages
  received up to :data:`LOOKBACK` before the period (mail deferred for longer is missed).
  Rejections by reason group the refusal text without its address and code and cut at the
  first ``;`` or ``,`` (close to pflogsumm's reject detail).
- **Suspect accounts**: authenticated (SASL) users that sent, in the period, with sender
  addresses outside the local domains, *and* to at least :data:`SUSPECT_OUTSIDE_RECIPIENTS`
  distinct outside recipients or from at least :data:`SUSPECT_CLIENT_IPS` distinct client
  addresses: the pattern of a stolen password used for spam.
- **Sources**: lines read per source come from ``source_days``, which counts what relaywatch
  read on each UTC day of the wall clock (a log imported later counts on the day it was
  imported); a period that is not made of whole UTC days gets the UTC days it overlaps, summed,
  with the lag of the latest.  **Sinks**: the times a sink could not push that overlap the
  period (still failing at its end: no end).

Every query reads through an index: relay attempts through the partial indexes on
``recipients`` (``relay_attempt IS NOT NULL``), traffic through ``transactions.started_at``
and ``recipients.transaction_id``, blocks through ``decisions.expires_at``, sink troubles
through ``sink_troubles.started_at``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, Integer, and_, case, cast, func, literal, or_, select

from detector.decide import enforced_by
from detector.report.model import (
    AcceptedRelay,
    Count,
    DayCount,
    Headline,
    HourTraffic,
    OffenderLine,
    Period,
    Report,
    SinkTrouble,
    SourceDay,
    SuspectAccount,
    Traffic,
)
from detector.store.models import (
    DecisionRow,
    EvidenceLine,
    RecipientRow,
    SinkTroubleRow,
    SourceDayRow,
    TransactionRow,
)
from detector.transactions import ACCEPTED, REFUSED, Outcome

__all__ = [
    "ACCEPTED_SHOWN",
    "LOOKBACK",
    "SUSPECT_CLIENT_IPS",
    "SUSPECT_OUTSIDE_RECIPIENTS",
    "TREND_DAYS",
    "build_period",
    "build_report",
    "day_bounds",
    "machine_zone",
    "reject_label",
    "zone_label",
]

LOOKBACK = 86_400.0
"""Seconds before the period whose messages' deliveries in the period are still counted."""
ACCEPTED_SHOWN = 200
"""Accepted relay transactions listed with their lines (all are counted in the headline)."""
TREND_DAYS = 7
SUSPECT_OUTSIDE_RECIPIENTS = 20
SUSPECT_CLIENT_IPS = 5
_CHUNK = 500  # values in one IN (...) list
_CARRIED = 5000  # messages received before the period looked up by id, at most
NO_NAME = "unknown"  # Postfix's client name when the address has no (verified) reverse name


def machine_zone() -> tzinfo:
    """This machine's time zone, by its IANA name when it can be found (``TZ``,
    ``/etc/localtime``, ``/etc/timezone``), else its current UTC offset."""
    names = [os.environ.get("TZ", "").lstrip(":")]
    localtime = Path("/etc/localtime")
    if localtime.is_symlink():
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            names.append(target.split("zoneinfo/", 1)[1])
    with suppress(OSError):
        names.append(Path("/etc/timezone").read_text().strip())
    for name in names:
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return datetime.now().astimezone().tzinfo or UTC


def zone_label(zone: tzinfo) -> str:
    """The IANA name of a zone when it has one (``UTC`` otherwise for UTC)."""
    key = getattr(zone, "key", None)
    if isinstance(key, str):
        return key
    return "UTC" if zone is UTC else str(zone)


def day_bounds(day: date, zone: tzinfo) -> tuple[datetime, datetime]:
    """The start (inclusive) and end (exclusive) of a local day, in UTC (23 or 25 hours long
    on the days clocks change)."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=zone).astimezone(UTC)
    return start, end


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


_AFTER_PREFIX = re.compile(r"^(?:.*?[:;] )(?:\[[^\]]+\] )?([^;,]+)[;,].*$")
_ADDRESS_REJECTED = re.compile(r"^((?:Sender|Recipient) address rejected: [^:]+):.*$")
_BLOCKED = re.compile(r"(client|Client host|Sender address) .+? blocked")


@lru_cache(maxsize=4096)
def _label(text: str) -> str:
    grouped = _AFTER_PREFIX.sub(r"\1", text + ";")
    if grouped == text + ";":
        grouped = text
    grouped = _ADDRESS_REJECTED.sub(r"\1", grouped)
    return _BLOCKED.sub("blocked", grouped)


def reject_label(reason: str | None) -> str:
    """A refusal's reason grouped the way pflogsumm's reject detail groups RCPT refusals: the
    address or HELO name in front, the client address and what follows ``;`` or ``,`` left
    out (``<a@b.example>: Relay access denied`` is ``Relay access denied``; ``Service
    unavailable; Client host [192.0.2.9] blocked using bl.example; …`` is ``blocked using
    bl.example``)."""
    if not reason:
        return "(no reason logged)"
    text = reason.strip()
    if text.startswith("<") and (close := text.find(">:")) > 0:  # an address: varies, drop it
        text = "<>" + text[close + 1 :]
    return _label(text)


def _domain(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rpartition("@")[2].lower() or None


def _top(counts: Counter[str], top: int) -> tuple[Count, ...]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(Count(name, n) for name, n in ranked[:top])


class _Hours:
    """The local hours of a period: which one a UTC epoch falls in, and their labels."""

    def __init__(self, start: datetime, end: datetime, zone: tzinfo) -> None:
        self.starts: list[float] = []
        self.labels: list[str] = []
        moment = start
        seen: set[str] = set()
        while moment < end:
            local = moment.astimezone(zone)
            label = local.strftime("%Y-%m-%dT%H")
            if label in seen:  # the hour repeated when clocks go back
                label += local.strftime("%z")
            seen.add(label)
            self.starts.append(moment.timestamp())
            self.labels.append(label)
            moment += timedelta(hours=1)  # zones whose offsets are not whole hours: close enough

    def index(self, epoch: float) -> int:
        return max(bisect_right(self.starts, epoch) - 1, 0)


@dataclass
class _Offender:
    names: set[str] = field(default_factory=set)
    helos: set[str] = field(default_factory=set)
    refused: int = 0
    accepted: int = 0
    recipients: set[str] = field(default_factory=set)
    domains: set[str] = field(default_factory=set)
    first: float = float("inf")
    last: float = float("-inf")


def build_report(
    connection: Connection,
    day: date,
    *,
    zone: tzinfo,
    host: str | None = None,
    top: int = 20,
    now: datetime | None = None,
) -> Report:
    """The report of one local day in ``zone``, for relay host ``host`` or all of them."""
    return build_period(connection, day, day, zone=zone, host=host, top=top, now=now)


def build_period(
    connection: Connection,
    first: date,
    last: date,
    *,
    zone: tzinfo,
    host: str | None = None,
    top: int = 20,
    now: datetime | None = None,
) -> Report:
    """The report of the local days ``first`` to ``last`` (both included) in ``zone``."""
    if last < first:
        raise ValueError(f"the period ends ({last}) before it starts ({first})")
    if top < 1:
        raise ValueError("top must be at least 1")
    start, _ = day_bounds(first, zone)
    _, end = day_bounds(last, zone)
    label = first.isoformat() if first == last else f"{first.isoformat()}..{last.isoformat()}"
    period = Period(start, end, label, zone_label(zone), host)
    hours = _Hours(start, end, zone)
    notes: list[str] = []

    attempts = _relay_attempts(connection, start, end, host)
    headline_counts, offenders, accepted_ids, tables = _attempt_tables(attempts, hours, top)
    returning = _returning(connection, list(offenders), start.timestamp())
    generated = (now or datetime.now(UTC)).astimezone(UTC)
    blocks = _blocks(connection, start, min(end, generated))  # today's: blocks as they are now
    offender_lines = _offender_lines(offenders, returning, blocks.until, top)
    accepted = _accepted(connection, attempts, accepted_ids)
    if len(accepted_ids) > ACCEPTED_SHOWN:
        notes.append(
            f"{len(accepted_ids)} transactions had accepted relays; the first {ACCEPTED_SHOWN} "
            "are listed"
        )
    traffic, hits, suspects = _traffic(connection, start, end, host, hours, top)
    if host is not None:
        notes.append("blocks are made for every relay host: all of them are counted")
    sources = _sources(connection, start, end, host)
    if not sources:
        notes.append("relaywatch recorded no lines read in the period")
    refused, accepted_count = headline_counts
    headline = Headline(
        open_relay=accepted_count > 0,
        accepted_relays=accepted_count,
        refused_relays=refused,
        offenders=len(offenders),
        new_blocks=blocks.new,
        expired_blocks=blocks.ended,
        active_blocks=blocks.active,
        enforcement_hits=hits,
        accepted_transactions=len(accepted_ids),
    )
    return Report(
        period=period,
        generated_at=generated,
        headline=headline,
        accepted=accepted,
        attempts_per_hour=tuple(
            Count(name, n) for name, n in zip(hours.labels, tables.per_hour, strict=True)
        ),
        attempts_per_host=_top(tables.per_host, len(tables.per_host) or 1),
        trend=_trend(connection, first, last, zone, host),
        offenders=offender_lines,
        target_domains=_top(tables.targets, top),
        sender_domains=_top(tables.senders, top),
        helos=_top(tables.helos, top),
        suspect_accounts=suspects,
        traffic=traffic,
        sources=sources,
        sinks=_sinks(connection, start, end),
        top=top,
        notes=tuple(notes),
    )


# ------------------------------------------------------------------ relay attempts


def _relay_attempts(
    connection: Connection, start: datetime, end: datetime, host: str | None
) -> list[Any]:
    r, t = RecipientRow, TransactionRow
    query = (
        select(
            r.time, r.client_ip, r.address, r.domain, r.relay_attempt, r.transaction_id,
            t.host, t.client_name, t.helo, t.sender,
        )
        .join(t, t.id == r.transaction_id)
        .where(
            r.relay_attempt.is_not(None),
            r.time >= start.timestamp(),
            r.time < end.timestamp(),
        )
        .order_by(r.time, r.id)
    )  # fmt: skip
    if host is not None:
        query = query.where(t.host == host)
    return list(connection.execute(query))


@dataclass
class _Tables:
    per_hour: list[int]
    per_host: Counter[str]
    targets: Counter[str]
    senders: Counter[str]
    helos: Counter[str]


def _attempt_tables(
    attempts: Sequence[Any], hours: _Hours, top: int
) -> tuple[tuple[int, int], dict[str, _Offender], list[int], _Tables]:
    tables = _Tables([0] * len(hours.labels), Counter(), Counter(), Counter(), Counter())
    offenders: dict[str, _Offender] = {}
    accepted_ids: dict[int, None] = {}
    refused = accepted = 0
    for when, ip, address, domain, kind, txn_id, host, name, helo, sender in attempts:
        tables.per_hour[hours.index(when)] += 1
        tables.per_host[host] += 1
        tables.targets[domain or "(none)"] += 1
        tables.senders[_domain(sender) or "<>"] += 1
        if helo:  # Postfix names it only on refusals, not on accepted mail
            tables.helos[helo] += 1
        if kind == ACCEPTED:
            accepted += 1
            accepted_ids.setdefault(txn_id)
        elif kind == REFUSED:
            refused += 1
        if ip is None:
            continue
        o = offenders.get(ip)
        if o is None:
            o = offenders[ip] = _Offender()
        if name and name != NO_NAME:
            o.names.add(name)
        if helo:
            o.helos.add(helo)
        if kind == ACCEPTED:
            o.accepted += 1
        else:
            o.refused += 1
        o.recipients.add(address)
        if domain:
            o.domains.add(domain)
        o.first = min(o.first, when)
        o.last = max(o.last, when)
    return (refused, accepted), offenders, list(accepted_ids), tables


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


def _returning(connection: Connection, ips: list[str], before: float) -> set[str]:
    """The clients among ``ips`` with relay attempts stored from before ``before``."""
    found: set[str] = set()
    r = RecipientRow
    for chunk in _chunks(ips):
        found.update(
            ip
            for ip in connection.execute(
                select(r.client_ip)
                .where(r.relay_attempt.is_not(None), r.client_ip.in_(chunk), r.time < before)
                .group_by(r.client_ip)
            ).scalars()
            if ip is not None
        )
    return found


def _offender_lines(
    offenders: dict[str, _Offender],
    returning: set[str],
    until: dict[str, datetime],
    top: int,
) -> tuple[OffenderLine, ...]:
    ranked = sorted(
        offenders.items(),
        key=lambda item: (-item[1].accepted, -(item[1].refused + item[1].accepted), item[0]),
    )
    return tuple(
        OffenderLine(
            ip=ip,
            client_names=tuple(sorted(o.names)),
            helos=tuple(sorted(o.helos)),
            attempts=o.refused + o.accepted,
            refused=o.refused,
            accepted=o.accepted,
            recipients=len(o.recipients),
            recipient_domains=len(o.domains),
            first_seen=_utc(o.first),
            last_seen=_utc(o.last),
            blocked_until=_blocked_until(ip, until),
            returning=ip in returning,
        )
        for ip, o in ranked[:top]
    )


def _blocked_until(ip: str, until: dict[str, datetime]) -> datetime | None:
    """When the blocks in force over ``ip`` (its own, or a range holding it) end."""
    best = until.get(ip)
    address = ipaddress.ip_address(ip)
    for value, ends in until.items():
        if "/" not in value:
            continue
        network = ipaddress.ip_network(value, strict=False)
        if network.version == address.version and address in network:
            best = ends if best is None else max(best, ends)
    return best


def _accepted(
    connection: Connection, attempts: Sequence[Any], ids: list[int]
) -> tuple[AcceptedRelay, ...]:
    shown = ids[:ACCEPTED_SHOWN]
    if not shown:
        return ()
    recipients: dict[int, list[str]] = {i: [] for i in shown}
    for row in attempts:
        if row.relay_attempt == ACCEPTED and row.transaction_id in recipients:
            recipients[row.transaction_id].append(row.address)
    t = TransactionRow
    rows = {
        row.id: row
        for row in connection.execute(
            select(
                t.id, t.started_at, t.host, t.queue_id, t.client_ip, t.client_name, t.helo,
                t.sender,
            ).where(t.id.in_(shown))
        )
    }  # fmt: skip
    lines: dict[int, list[str]] = {i: [] for i in shown}
    for txn_id, line in connection.execute(
        select(EvidenceLine.transaction_id, EvidenceLine.line)
        .where(EvidenceLine.transaction_id.in_(shown))
        .order_by(EvidenceLine.transaction_id, EvidenceLine.offset)
    ):
        lines[txn_id].append(line)
    return tuple(
        AcceptedRelay(
            time=_utc(row.started_at),
            host=row.host,
            queue_id=row.queue_id,
            client_ip=row.client_ip,
            client_name=None if row.client_name == NO_NAME else row.client_name,
            helo=row.helo,
            sender=row.sender,
            recipients=tuple(recipients[i]),
            lines=tuple(lines[i]),
        )
        for i in shown
        for row in (rows[i],)
    )


def _trend(
    connection: Connection, first: date, last: date, zone: tzinfo, host: str | None
) -> tuple[DayCount, ...]:
    """Relay attempts per local day: the TREND_DAYS before the period, then its own."""
    r, t = RecipientRow, TransactionRow
    days = [first - timedelta(days=n) for n in range(TREND_DAYS, 0, -1)]
    day = first
    while day <= last:
        days.append(day)
        day += timedelta(days=1)
    out = []
    for day in days:
        start, end = day_bounds(day, zone)
        query = select(func.count()).where(
            r.relay_attempt.is_not(None), r.time >= start.timestamp(), r.time < end.timestamp()
        )
        if host is not None:
            query = query.select_from(r).join(t, t.id == r.transaction_id).where(t.host == host)
        out.append(DayCount(day.isoformat(), connection.execute(query).scalar_one()))
    return tuple(out)


# ------------------------------------------------------------------------- blocks


@dataclass
class _Blocks:
    new: int
    ended: int
    active: int
    until: dict[str, datetime]  # blocked value -> end of its block in force at the period's end


def _blocks(connection: Connection, start: datetime, end: datetime) -> _Blocks:
    d = DecisionRow
    rows = connection.execute(
        select(d.value, d.created_at, d.expires_at, d.revoked_at).where(
            d.expires_at >= start, d.created_at < end
        )
    )
    new = ended = active = 0
    until: dict[str, datetime] = {}
    for value, created, expires, revoked in rows:
        stopped = expires if revoked is None else min(expires, revoked)
        if start <= created:
            new += 1
        if start <= stopped < end:
            ended += 1
        if stopped > end or (stopped == end and revoked is None and expires > end):
            active += 1
            until[value] = max(until.get(value, expires), expires)
    return _Blocks(new, ended, active, until)


# ------------------------------------------------------------------------ traffic


def _bucket(connection: Connection, epoch: Any, start: float) -> Any:
    """The hour of the period an epoch column falls in (0, 1, …), computed by the database."""
    hours = (epoch - start) / 3600.0
    if connection.dialect.name == "sqlite":  # CAST truncates, and times are >= start
        return cast(hours, Integer)
    return cast(func.floor(hours), Integer)


def _without_address(connection: Connection, reason: Any) -> Any:
    """A refusal's text with the address in front (``<a@b.example>: …``) made ``<>``, so that
    the database groups refusals by what was said rather than to whom (see reject_label)."""
    find = func.instr(reason, ">: ") if connection.dialect.name == "sqlite" else None
    if find is None:
        find = func.strpos(reason, ">: ")
    return case(
        (reason.like("<%") & (find > 0), literal("<>") + func.substr(reason, find + 1)),
        else_=reason,
    )


def _traffic(
    connection: Connection,
    start: datetime,
    end: datetime,
    host: str | None,
    hours: _Hours,
    top: int,
) -> tuple[Traffic, int, tuple[SuspectAccount, ...]]:
    """The period's mail as pflogsumm counts it, the enforcement hits in it, and the suspect
    accounts.  Counted by the database (GROUP BY): a day of millions of lines has about a
    million recipients, too many to hand to Python one by one."""
    s, e = start.timestamp(), end.timestamp()
    t, r = TransactionRow, RecipientRow
    n = len(hours.labels)
    per_hour = {name: [0] * n for name in ("received", "delivered", "deferred", "bounced")}
    per_hour["rejected"] = [0] * n
    in_period = [t.started_at >= s, t.started_at < e]
    if host is not None:
        in_period.append(t.host == host)
    # recipients whose outcome was logged in the period, of messages received up to LOOKBACK
    # before it (transactions.started_at is indexed; recipients.time is not, but for attempts)
    earlier = select(t.id).where(
        t.started_at >= s - LOOKBACK, t.started_at < s, t.ended_at >= s
    )  # messages received before the period with deliveries in it (deferred mail): few
    if host is not None:
        earlier = earlier.where(t.host == host)
    carried = list(connection.execute(earlier).scalars())
    started = and_(t.started_at >= s, t.started_at < e)
    if len(carried) > _CARRIED:  # a long queue: read the range (slower, no long IN list)
        started = and_(
            t.started_at >= s - LOOKBACK, t.started_at < e, or_(t.started_at >= s, t.ended_at >= s)
        )
    elif carried:  # the day's transactions, and the ids of those few by the primary key
        started = or_(started, t.id.in_(carried))
    logged = [started, r.time >= s, r.time < e]
    if host is not None:
        logged.append(t.host == host)
    outcome = r.outcome
    key = case(
        (outcome == Outcome.DELIVERED, r.domain),
        (outcome == Outcome.REJECTED, _without_address(connection, r.reason)),
        else_=None,
    )
    bucket = _bucket(connection, r.time, s)
    rows = connection.execute(
        select(
            outcome, bucket, key, func.count(), func.coalesce(func.sum(t.size), 0),
        )
        .select_from(r)
        .join(t, t.id == r.transaction_id)
        .where(*logged)
        .group_by(outcome, bucket, key)
    )  # fmt: skip
    totals: Counter[str] = Counter()
    bytes_delivered = 0
    deferred_messages = 0
    reasons: Counter[str] = Counter()
    recipient_domains: Counter[str] = Counter()
    hits = 0
    for kind, hour, name, count, size in rows:
        hour = min(max(int(hour), 0), n - 1)
        totals[kind] += count
        if kind == Outcome.DELIVERED:
            per_hour["delivered"][hour] += count
            bytes_delivered += int(size)
            recipient_domains[name or "(none)"] += count
        elif kind == Outcome.DEFERRED:
            per_hour["deferred"][hour] += count  # deferrals, as pflogsumm's hours count them
        elif kind == Outcome.BOUNCED:
            per_hour["bounced"][hour] += count
        elif kind == Outcome.REJECTED:
            per_hour["rejected"][hour] += count
            reasons[reject_label(name)] += count
            if enforced_by(name):
                hits += count
    if totals[Outcome.DEFERRED]:  # distinct messages over the whole period
        deferred_messages = connection.execute(
            select(func.count(func.distinct(r.transaction_id)))
            .select_from(r)
            .join(t, t.id == r.transaction_id)
            .where(*logged, outcome == Outcome.DEFERRED)
        ).scalar_one()
    recipients = 0
    if totals[Outcome.DELIVERED]:
        recipients = connection.execute(
            select(func.count(func.distinct(r.address)))
            .select_from(r)
            .join(t, t.id == r.transaction_id)
            .where(*logged, outcome == Outcome.DELIVERED)
        ).scalar_one()

    # refusals of a whole transaction (HELO, MAIL, DATA), at its start
    bucket = _bucket(connection, t.started_at, s)
    for hour, reason, count in connection.execute(
        select(bucket, t.reject_reason, func.count())
        .where(*in_period, t.reject_reason.is_not(None))
        .group_by(bucket, t.reject_reason)
    ):
        per_hour["rejected"][min(max(int(hour), 0), n - 1)] += count
        totals[Outcome.REJECTED] += count
        reasons[reject_label(reason)] += count
        if enforced_by(reason):
            hits += count

    # messages received: queued (a queue id, or a recipient not refused) from a client or a
    # local submission; the server's own bounce notices are not received
    queued = or_(
        t.queue_id.is_not(None),
        select(r.id).where(r.transaction_id == t.id, r.outcome != Outcome.REJECTED).exists(),
    )
    received = [*in_period, queued, or_(t.client_ip.is_not(None), t.local_submission)]
    bytes_received = 0
    for hour, count, size in connection.execute(
        select(bucket, func.count(), func.coalesce(func.sum(t.size), 0))
        .where(*received)
        .group_by(bucket)
    ):
        per_hour["received"][min(max(int(hour), 0), n - 1)] += count
        totals["received"] += count
        bytes_received += int(size)
    sender_domains: Counter[str] = Counter()
    senders = 0
    for sender, count in connection.execute(
        select(t.sender, func.count()).where(*received, t.sender.is_not(None)).group_by(t.sender)
    ):
        senders += 1
        sender_domains[_domain(sender) or "<>"] += count

    traffic = Traffic(
        received=totals["received"],
        delivered=totals[Outcome.DELIVERED],
        deferred=deferred_messages,
        deferrals=totals[Outcome.DEFERRED],
        bounced=totals[Outcome.BOUNCED],
        rejected=totals[Outcome.REJECTED],
        bytes_received=bytes_received,
        bytes_delivered=bytes_delivered,
        senders=senders,
        recipients=recipients,
        rejected_by_reason=_top(reasons, top),
        per_hour=tuple(
            HourTraffic(
                label,
                per_hour["received"][i],
                per_hour["delivered"][i],
                per_hour["deferred"][i],
                per_hour["bounced"][i],
                per_hour["rejected"][i],
            )
            for i, label in enumerate(hours.labels)
        ),
        top_sender_domains=_top(sender_domains, top),
        top_recipient_domains=_top(recipient_domains, top),
    )
    return traffic, hits, _suspects(_accounts(connection, received, logged))


def _accounts(
    connection: Connection, received: list[Any], logged: list[Any]
) -> dict[str, _Account]:
    """What each authenticated user sent in the period."""
    t, r = TransactionRow, RecipientRow
    accounts: dict[str, _Account] = {}
    for user, client_ip, sender, sender_local, count in connection.execute(
        select(t.sasl_user, t.client_ip, t.sender, t.sender_local, func.count())
        .where(*received, t.sasl_user.is_not(None))
        .group_by(t.sasl_user, t.client_ip, t.sender, t.sender_local)
    ):
        if user is None:  # not asked for: types only
            continue
        account = _account(accounts, user)
        account.messages += count
        if client_ip is not None:
            account.client_ips.add(client_ip)
        if sender and sender_local is False:
            account.outside_senders.add(sender)
    for user, address in connection.execute(
        select(t.sasl_user, r.address)
        .select_from(r)
        .join(t, t.id == r.transaction_id)
        .where(
            *logged,
            t.sasl_user.is_not(None),
            r.outcome != Outcome.REJECTED,
            r.direction.like("%ext"),
        )
        .distinct()
    ):
        if user is not None:
            _account(accounts, user).outside_recipients.add(address)
    return accounts


@dataclass
class _Account:
    messages: int = 0
    client_ips: set[str] = field(default_factory=set)
    outside_senders: set[str] = field(default_factory=set)
    outside_recipients: set[str] = field(default_factory=set)


def _account(accounts: dict[str, _Account], user: str) -> _Account:
    found = accounts.get(user)
    if found is None:
        found = accounts[user] = _Account()
    return found


def _suspects(accounts: dict[str, _Account]) -> tuple[SuspectAccount, ...]:
    found = [
        SuspectAccount(
            user=user,
            messages=a.messages,
            client_ips=len(a.client_ips),
            outside_senders=tuple(sorted(a.outside_senders)),
            outside_recipients=len(a.outside_recipients),
        )
        for user, a in accounts.items()
        if a.outside_senders
        and (
            len(a.outside_recipients) >= SUSPECT_OUTSIDE_RECIPIENTS
            or len(a.client_ips) >= SUSPECT_CLIENT_IPS
        )
    ]
    found.sort(key=lambda s: (-s.outside_recipients, -s.client_ips, s.user))
    return tuple(found)


# ------------------------------------------------------------------ what relaywatch saw


def _sources(
    connection: Connection, start: datetime, end: datetime, host: str | None
) -> tuple[SourceDay, ...]:
    first = start.date()
    last = (end - timedelta(microseconds=1)).date()
    days = []
    day = first
    while day <= last:
        days.append(day.isoformat())
        day += timedelta(days=1)
    d = SourceDayRow
    query = select(d.day, d.host, d.path, d.lines, d.parsed, d.unparsed, d.lag_bytes).where(
        d.day.in_(days)
    )
    if host is not None:
        query = query.where(d.host == host)
    summed: dict[tuple[str, str], list[Any]] = {}
    for _day, source_host, path, lines, parsed, unparsed, lag in connection.execute(
        query.order_by(d.host, d.path, d.day)
    ):
        entry = summed.setdefault((source_host, path), [0, 0, 0, None])
        entry[0] += lines
        entry[1] += parsed
        entry[2] += unparsed
        entry[3] = lag  # the latest day's, rows come in day order
    return tuple(
        SourceDay(source_host, path, lines, parsed, unparsed, lag)
        for (source_host, path), (lines, parsed, unparsed, lag) in sorted(summed.items())
    )


def _sinks(connection: Connection, start: datetime, end: datetime) -> tuple[SinkTrouble, ...]:
    k = SinkTroubleRow
    rows = connection.execute(
        select(k.sink, k.started_at, k.ended_at, k.failures, k.message)
        .where(k.started_at < end, or_(k.ended_at.is_(None), k.ended_at >= start))
        .order_by(k.started_at, k.id)
    )
    return tuple(
        SinkTrouble(
            sink=sink,
            started_at=started,
            ended_at=ended if ended is not None and ended <= end else None,
            failures=failures,
            message=message,
        )
        for sink, started, ended, failures, message in rows
    )
