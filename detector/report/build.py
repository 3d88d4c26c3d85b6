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
- **Sources**: lines read per source come from ``source_days``, which counts per UTC day; a
  period that is not made of whole UTC days gets the UTC days it overlaps.  **Sinks**: the
  times a sink could not push that overlap the period.

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

from sqlalchemy import Connection, func, or_, select

from detector.decide import _HIT as DECISION_HIT  # the refusal text that names a decision
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
    blocks = _blocks(connection, start, end)
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
        notes.append("no lines read are recorded for the period (batch imports do not record them)")
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
        generated_at=(now or datetime.now(UTC)).astimezone(UTC),
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


def _traffic(
    connection: Connection,
    start: datetime,
    end: datetime,
    host: str | None,
    hours: _Hours,
    top: int,
) -> tuple[Traffic, int, tuple[SuspectAccount, ...]]:
    """The period's mail as pflogsumm counts it, the enforcement hits in it, and the suspect
    accounts."""
    s, e = start.timestamp(), end.timestamp()
    t, r = TransactionRow, RecipientRow
    query = (
        select(
            t.id, t.started_at, t.ended_at, t.queue_id, t.client_ip, t.local_submission,
            t.sender, t.size, t.reject_reason, t.sasl_user, t.sender_local,
            r.time, r.address, r.domain, r.outcome, r.reason, r.direction,
        )
        .select_from(t)
        .outerjoin(r, r.transaction_id == t.id)
        .where(
            t.started_at >= s - LOOKBACK,
            t.started_at < e,
            or_(t.started_at >= s, t.ended_at >= s),
        )
    )  # fmt: skip
    if host is not None:
        query = query.where(t.host == host)

    n = len(hours.labels)
    received_h, delivered_h, deferred_h, bounced_h, rejected_h = ([0] * n for _ in range(5))
    received = delivered = bounced = rejected = deferrals = 0
    bytes_received = bytes_delivered = 0
    hits = 0
    deferred_messages: set[int] = set()
    senders: set[str] = set()
    recipients: set[str] = set()
    reasons: Counter[str] = Counter()
    sender_domains: Counter[str] = Counter()
    recipient_domains: Counter[str] = Counter()
    accounts: dict[str, _Account] = {}
    seen: dict[int, bool] = {}  # transaction id -> queued (a recipient not refused, or a queue id)
    whole_rejects: list[tuple[float, str]] = []
    index = hours.index
    delivered_outcome, deferred_outcome = Outcome.DELIVERED, Outcome.DEFERRED
    bounced_outcome, rejected_outcome = Outcome.BOUNCED, Outcome.REJECTED

    first_rows: dict[int, Any] = {}
    for row in connection.execute(query):
        (txn_id, started, _, queue_id, _, _, _, size, reject_reason, sasl_user, _,
         when, address, domain, outcome, reason, direction) = row  # fmt: skip
        if txn_id not in seen:
            seen[txn_id] = queue_id is not None
            first_rows[txn_id] = row
            if reject_reason is not None and s <= started < e:
                whole_rejects.append((started, reject_reason))
        if outcome is None:
            continue
        if outcome != rejected_outcome:
            seen[txn_id] = True
        if not s <= when < e:
            continue
        if outcome == delivered_outcome:
            delivered += 1
            delivered_h[index(when)] += 1
            bytes_delivered += size or 0
            recipients.add(address)
            recipient_domains[domain or _domain(address) or "(none)"] += 1
        elif outcome == rejected_outcome:
            rejected += 1
            rejected_h[index(when)] += 1
            reasons[reject_label(reason)] += 1
            if reason and "relaywatch" in reason and DECISION_HIT.search(reason):
                hits += 1
        elif outcome == deferred_outcome:
            deferrals += 1
            if txn_id not in deferred_messages:
                deferred_messages.add(txn_id)
                deferred_h[index(when)] += 1
        elif outcome == bounced_outcome:
            bounced += 1
            bounced_h[index(when)] += 1
        if (
            sasl_user is not None
            and outcome != rejected_outcome
            and direction is not None
            and direction.endswith("ext")
        ):
            _account(accounts, sasl_user).outside_recipients.add(address)

    for started, reason in whole_rejects:
        rejected += 1
        rejected_h[index(started)] += 1
        reasons[reject_label(reason)] += 1
        if "relaywatch" in reason and DECISION_HIT.search(reason):
            hits += 1

    for txn_id, row in first_rows.items():
        started = row.started_at
        if not s <= started < e or not seen[txn_id]:
            continue
        if row.client_ip is None and not row.local_submission:
            continue  # queued by the server itself (a bounce notice): not received
        received += 1
        received_h[index(started)] += 1
        bytes_received += row.size or 0
        sender = row.sender
        if sender is not None:
            senders.add(sender or "<>")
            sender_domains[_domain(sender) or "<>"] += 1
        if row.sasl_user is not None:
            account = _account(accounts, row.sasl_user)
            account.messages += 1
            if row.client_ip is not None:
                account.client_ips.add(row.client_ip)
            if sender and row.sender_local is False:
                account.outside_senders.add(sender)

    per_hour = tuple(
        HourTraffic(
            label, received_h[i], delivered_h[i], deferred_h[i], bounced_h[i], rejected_h[i]
        )
        for i, label in enumerate(hours.labels)
    )
    traffic = Traffic(
        received=received,
        delivered=delivered,
        deferred=len(deferred_messages),
        deferrals=deferrals,
        bounced=bounced,
        rejected=rejected,
        bytes_received=bytes_received,
        bytes_delivered=bytes_delivered,
        senders=len(senders),
        recipients=len(recipients),
        rejected_by_reason=_top(reasons, top),
        per_hour=per_hour,
        top_sender_domains=_top(sender_domains, top),
        top_recipient_domains=_top(recipient_domains, top),
    )
    return traffic, hits, _suspects(accounts)


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
