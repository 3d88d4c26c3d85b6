"""Scoring: windowed counts of relay attempts per client IP, offenders, automatic blocks.

An offender's counters (attempts, refused, accepted, distinct recipients and domains, first and
last seen) are updated in the transaction that stores its attempts (:meth:`Scorer.count`), at a
cost that does not grow with its history.  Rescoring, after a batch or when the daemon's pacer
says so, slides the window over its attempts in log time from just before the earliest new
one: the peaks per window, and the blocks they call for; so a batch import decides what the
daemon would have decided then.

    score = refused relays + 10 × accepted relays + 0.5 × (recipient domains − 1)

A refused attempt is a probe; an accepted one means the server relayed for the client, ten
times worse; spraying many domains is what spam runs do.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    bindparam,
    case,
    func,
    insert,
    select,
    update,
)

from detector.config import EnforcementSettings, ScoringSettings, format_duration
from detector.decide import (
    AUTO,
    Decision,
    NeverBlock,
    active_decisions,
    create_block,
    decisions_for,
    next_duration,
)
from detector.store.models import DecisionRow, OffenderRow, OffenderTarget, RecipientRow
from detector.transactions import ACCEPTED, REFUSED, Transaction

log = logging.getLogger("relaywatch")

ACCEPTED_WEIGHT = 10.0
DOMAIN_WEIGHT = 0.5


def score(refused: int, accepted: int, recipient_domains: int) -> float:
    return refused + ACCEPTED_WEIGHT * accepted + DOMAIN_WEIGHT * max(recipient_domains - 1, 0)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def target_digest(value: str) -> str:
    """How ``offender_targets`` knows a recipient address or domain."""
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass
class _Tally:
    """The relay attempts of one client in a batch of stored transactions."""

    first: float
    last: float
    attempts: int = 0
    refused: int = 0
    accepted: int = 0
    targets: set[tuple[str, str]] = field(default_factory=set)  # (kind, digest)


def _tallies(transactions: Iterable[Transaction]) -> dict[str, _Tally]:
    tallies: dict[str, _Tally] = {}
    for t in transactions:
        ip = t.client_ip
        if ip is None:
            continue
        for r in t.recipients:
            if r.relay_attempt is None:
                continue
            tally = tallies.get(ip)
            if tally is None:
                tally = tallies[ip] = _Tally(r.time, r.time)
            tally.first, tally.last = min(tally.first, r.time), max(tally.last, r.time)
            tally.attempts += 1
            tally.refused += r.relay_attempt == REFUSED
            tally.accepted += r.relay_attempt == ACCEPTED
            tally.targets.add(("address", target_digest(r.address)))
            if r.domain is not None:
                tally.targets.add(("domain", target_digest(r.domain)))
    return tallies


_CHUNK = 500  # clients or targets asked for at once


class AttemptCounters(NamedTuple):
    attempts: int
    refused: int
    accepted: int
    recipients: int  # distinct
    domains: int  # distinct
    first: float  # UTC epoch seconds
    last: float


def attempt_counters(
    connection: Connection, *conditions: ColumnElement[bool]
) -> dict[str, AttemptCounters]:
    """Relay-attempt counters per client IP, over the attempts that meet ``conditions``."""
    attempt = RecipientRow.relay_attempt
    query = (
        select(
            RecipientRow.client_ip,
            func.count(),
            func.sum(case((attempt == REFUSED, 1), else_=0)),
            func.sum(case((attempt == ACCEPTED, 1), else_=0)),
            func.count(func.distinct(RecipientRow.address)),
            func.count(func.distinct(RecipientRow.domain)),
            func.min(RecipientRow.time),
            func.max(RecipientRow.time),
        )
        .where(attempt.is_not(None), RecipientRow.client_ip.is_not(None), *conditions)
        .group_by(RecipientRow.client_ip)
    )
    return {row[0]: AttemptCounters(*row[1:]) for row in connection.execute(query)}


_TARGET_KEYS = ("ip", "kind", "digest")
_TARGET_KINDS = ("address", "domain")
_OFFENDER_COLUMNS = tuple(c.name for c in OffenderRow.__table__.columns)
_UPDATE_OFFENDER = (
    update(OffenderRow)
    .where(OffenderRow.ip == bindparam("new_ip"))
    .values({c: bindparam(f"new_{c}") for c in _OFFENDER_COLUMNS if c != "ip"})
)
"""Every column of one offender, from ``new_<column>`` parameters (executemany)."""


class Scorer:
    def __init__(
        self,
        scoring: ScoringSettings,
        never_block: NeverBlock,
        enforcement: EnforcementSettings | None = None,
    ) -> None:
        self.scoring = scoring
        self.never_block = never_block
        self.enforcement = enforcement or EnforcementSettings()
        self.held_back = 0
        """Automatic blocks the circuit breaker did not make (since the start)."""

    def count(self, connection: Connection, stored: Iterable[Transaction]) -> None:
        """Add the relay attempts of just stored transactions to their clients' offender
        counters (creating the offenders that are new), in the caller's transaction.  Relay
        hosts sharing a database must take turns (the caller's lock): it reads, then writes."""
        tallies = _tallies(stored)
        wanted = sorted(tallies)
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            known: set[tuple[str, str, str]] = set()
            for ip in chunk:  # by client: a lookup in the primary key (a list of rows is a scan)
                digests = sorted({digest for _, digest in tallies[ip].targets})
                for at in range(0, len(digests), _CHUNK):
                    known.update(
                        (ip, kind, digest)
                        for kind, digest in connection.execute(
                            select(OffenderTarget.kind, OffenderTarget.digest).where(
                                OffenderTarget.ip == ip,
                                OffenderTarget.kind.in_(_TARGET_KINDS),
                                OffenderTarget.digest.in_(digests[at : at + _CHUNK]),
                            )
                        )
                    )
            targets = [(ip, kind, digest) for ip in chunk for kind, digest in tallies[ip].targets]
            fresh = [t for t in targets if t not in known]
            if fresh:
                connection.execute(
                    insert(OffenderTarget), [dict(zip(_TARGET_KEYS, t, strict=True)) for t in fresh]
                )
            new_targets = Counter((ip, kind) for ip, kind, _ in fresh)
            rows = {
                row.ip: row
                for row in connection.execute(
                    select(OffenderRow.__table__).where(OffenderRow.ip.in_(chunk))
                )
            }
            updates, inserts = [], []
            for ip in chunk:
                tally = tallies[ip]
                new_recipients = new_targets[ip, "address"]
                new_domains = new_targets[ip, "domain"]
                row = rows.get(ip)
                first = datetime.fromtimestamp(tally.first, UTC)
                last = datetime.fromtimestamp(tally.last, UTC)
                if row is None:
                    counters = AttemptCounters(
                        tally.attempts, tally.refused, tally.accepted, new_recipients,
                        new_domains, tally.first, tally.last,
                    )  # fmt: skip
                    inserts.append(self._offender_row(ip, counters, 0, 0))
                    continue
                counters = AttemptCounters(
                    row.relay_attempts + tally.attempts, row.refused_relays + tally.refused,
                    row.accepted_relays + tally.accepted, row.recipients + new_recipients,
                    row.recipient_domains + new_domains,
                    min(row.first_seen, first).timestamp(), max(row.last_seen, last).timestamp(),
                )  # fmt: skip
                values = self._offender_row(ip, counters, row.peak_refused, row.peak_accepted)
                updates.append({f"new_{k}": v for k, v in values.items()})
            if inserts:
                connection.execute(insert(OffenderRow), inserts)
            if updates:
                connection.execute(_UPDATE_OFFENDER, updates)

    def rescore(self, connection: Connection, new_attempts: dict[str, float]) -> list[Decision]:
        """Slide the window over the attempts of the offenders given, from just before the
        earliest new one (the time given): update their peaks, and return the blocks their
        attempts call for.  Their counters are up to date already (:meth:`count`)."""
        wanted = sorted(new_attempts)
        decisions: list[Decision] = []
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            rows = connection.execute(
                select(OffenderRow.__table__).where(OffenderRow.ip.in_(chunk))
            ).all()
            updates = []
            for row in rows:
                peak_refused, peak_accepted, new = self._windows(
                    connection, row.ip, new_attempts[row.ip], (row.peak_refused, row.peak_accepted)
                )
                decisions.extend(new)
                if (peak_refused, peak_accepted) != (row.peak_refused, row.peak_accepted):
                    counters = AttemptCounters(
                        row.relay_attempts, row.refused_relays, row.accepted_relays,
                        row.recipients, row.recipient_domains, row.first_seen.timestamp(),
                        row.last_seen.timestamp(),
                    )  # fmt: skip
                    values = self._offender_row(row.ip, counters, peak_refused, peak_accepted)
                    updates.append({f"new_{k}": v for k, v in values.items()})
            if updates:
                connection.execute(_UPDATE_OFFENDER, updates)
        return decisions

    def _windows(
        self, connection: Connection, ip: str, since: float, peaks: tuple[int, int]
    ) -> tuple[int, int, list[Decision]]:
        """Slide the window over ``ip``'s attempts from the window before ``since`` (its
        earliest new one): peak counts, and blocks not made yet."""
        window = self.scoring.window.total_seconds()
        attempts = connection.execute(
            select(RecipientRow.time, RecipientRow.relay_attempt)
            .where(
                RecipientRow.client_ip == ip,
                RecipientRow.relay_attempt.is_not(None),
                RecipientRow.time > since - window,
            )
            .order_by(RecipientRow.time)
        ).all()
        existing = decisions_for(connection, ip)
        refused: deque[float] = deque()
        accepted: deque[float] = deque()
        peak_refused, peak_accepted = peaks
        new: list[Decision] = []
        refusal: str | None = None
        checked = False  # whether the ip may be blocked (read when it first may need to be)
        for when, kind in attempts:
            for queue in (refused, accepted):
                while queue and queue[0] <= when - window:
                    queue.popleft()
            (refused if kind == REFUSED else accepted).append(when)
            peak_refused = max(peak_refused, len(refused))
            peak_accepted = max(peak_accepted, len(accepted))
            over = (
                len(accepted) >= self.scoring.accepted_relays_to_block
                or len(refused) >= self.scoring.refused_relays_to_block
            )
            if over and not checked:
                self.never_block.refresh(connection)  # the allowlist may have changed
                refusal, checked = self.never_block.reason(ip), True
            if not over or refusal is not None:
                continue
            moment = datetime.fromtimestamp(when, UTC)
            if any(
                d.created_at - self.scoring.window <= moment < d.expires_at
                for d in existing
                if d.origin == AUTO
            ):
                # already decided (now, or by an earlier batch: one that saw a later attempt of
                # the same burst first, as sessions end out of order)
                continue
            if any(d.active(moment) for d in existing):
                continue  # blocked by hand
            if self._breaker_open(connection, ip, moment):
                continue
            reason = self._reason(len(refused), len(accepted))
            duration = next_duration(existing, self.scoring)
            decision = create_block(
                connection, ip, origin=AUTO, reason=reason, start=moment, duration=duration,
                evidence={"refused_in_window": len(refused), "accepted_in_window": len(accepted),
                          "window": format_duration(self.scoring.window), "at": when},
            )  # fmt: skip
            existing.append(decision)
            new.append(decision)
            new.extend(self._range_block(connection, decision))
        return peak_refused, peak_accepted, new

    def _breaker_open(self, connection: Connection, ip: str, moment: datetime) -> bool:
        """Whether ``max_new_blocks_per_minute`` automatic blocks were made in the minute
        before ``moment`` (log time): then no more are made, loudly.  A flood of blocks means
        a wrong ``internal_networks`` or a broken log far more often than a real attack."""
        limit = self.enforcement.max_new_blocks_per_minute
        made = connection.execute(
            select(func.count()).where(
                DecisionRow.origin == AUTO,
                DecisionRow.created_at > moment - timedelta(minutes=1),
                DecisionRow.created_at <= moment,
            )
        ).scalar_one()
        if made < limit:
            return False
        self.held_back += 1
        log.error(
            "circuit breaker: %d automatic blocks in the minute before %s (limit %d, "
            "[enforcement] max_new_blocks_per_minute); not blocking %s (%d held back so far)",
            made, moment.strftime("%Y-%m-%dT%H:%M:%SZ"), limit, ip, self.held_back,
        )  # fmt: skip
        return True

    def _range_block(self, connection: Connection, made: Decision) -> list[Decision]:
        """A block of the /24 (IPv4) or /64 (IPv6) around a just blocked address when
        ``range_offenders`` addresses in it are blocked at once (and it may be blocked)."""
        needed = self.enforcement.range_offenders
        if not needed:
            return []
        address = ipaddress.ip_address(made.value)
        network = ipaddress.ip_network(f"{address}/{24 if address.version == 4 else 64}", False)
        value = str(network)
        at = made.created_at
        blocked = {
            d.value for d in active_decisions(connection, at)
            if d.scope == "ip" and d.created_at <= at and ipaddress.ip_address(d.value) in network
        }  # fmt: skip
        if len(blocked) < needed or any(d.value == value for d in active_decisions(connection, at)):
            return []
        why = self.never_block.reason(value)
        if why is not None:
            log.warning("not blocking the range %s of %d blocked addresses: %s", value,
                        len(blocked), why)  # fmt: skip
            return []
        decision = create_block(
            connection, value, origin=AUTO,
            reason=f"{_plural(len(blocked), 'blocked address')} in {value}", start=at,
            duration=next_duration(decisions_for(connection, value), self.scoring),
            evidence={"addresses": sorted(blocked)},
        )  # fmt: skip
        return [decision]

    def _reason(self, refused: int, accepted: int) -> str:
        window = format_duration(self.scoring.window)
        if accepted >= self.scoring.accepted_relays_to_block:
            return f"{_plural(accepted, 'accepted relay')} in {window}: the server relayed for it"
        return f"{_plural(refused, 'refused relay attempt')} in {window}"

    def _offender_row(
        self, ip: str, counters: AttemptCounters, peak_refused: int, peak_accepted: int
    ) -> dict[str, object]:
        attempts, refused, accepted, recipients, domains, first, last = counters
        window = format_duration(self.scoring.window)
        reasons = []
        if accepted:
            reasons.append(
                f"{_plural(int(accepted), 'accepted relay')} (the server relayed for it), "
                f"up to {peak_accepted} in {window}"
            )
        if refused:
            reasons.append(f"{_plural(peak_refused, 'refused relay attempt')} in {window}")
        if domains > 1:
            reasons.append(f"{_plural(int(domains), 'recipient domain')}")
        return {
            "ip": ip, "first_seen": datetime.fromtimestamp(first, UTC),
            "last_seen": datetime.fromtimestamp(last, UTC), "relay_attempts": attempts,
            "refused_relays": refused, "accepted_relays": accepted, "recipients": recipients,
            "recipient_domains": domains, "score": score(refused, accepted, domains),
            "peak_refused": peak_refused, "peak_accepted": peak_accepted,
            "reasons": json.dumps(reasons),
        }  # fmt: skip
