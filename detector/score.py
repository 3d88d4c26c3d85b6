"""Scoring: windowed counts of relay attempts per client IP, offenders, automatic blocks.

Called after each stored batch with the client IPs whose relay attempts it added.  Counters
are recomputed from the stored attempts of those IPs; the windows are slid over their
attempts in log time, so a batch import decides what the daemon would have decided then.

    score = refused relays + 10 × accepted relays + 0.5 × (recipient domains − 1)

A refused attempt is a probe; an accepted one means the server relayed for the client, ten
times worse; spraying many domains is what spam runs do.
"""

from __future__ import annotations

import json
from collections import deque
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, Connection, case, delete, func, insert, select

from detector.config import ScoringSettings, format_duration
from detector.decide import AUTO, Decision, NeverBlock, create_block, decisions_for, next_duration
from detector.store.models import OffenderRow, RecipientRow
from detector.transactions import ACCEPTED, REFUSED

ACCEPTED_WEIGHT = 10.0
DOMAIN_WEIGHT = 0.5


def score(refused: int, accepted: int, recipient_domains: int) -> float:
    return refused + ACCEPTED_WEIGHT * accepted + DOMAIN_WEIGHT * max(recipient_domains - 1, 0)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


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


class Scorer:
    def __init__(self, scoring: ScoringSettings, never_block: NeverBlock) -> None:
        self.scoring = scoring
        self.never_block = never_block

    def rescore(self, connection: Connection, new_attempts: dict[str, float]) -> list[Decision]:
        """Refresh the offenders given (with the time of their earliest new relay attempt) and
        return the blocks their attempts call for."""
        wanted = sorted(new_attempts)
        decisions: list[Decision] = []
        for chunk_start in range(0, len(wanted), 500):
            chunk = wanted[chunk_start : chunk_start + 500]
            counters = attempt_counters(connection, RecipientRow.client_ip.in_(chunk))
            peaks = {
                ip: (refused, accepted)
                for ip, refused, accepted in connection.execute(
                    select(
                        OffenderRow.ip, OffenderRow.peak_refused, OffenderRow.peak_accepted
                    ).where(OffenderRow.ip.in_(chunk))
                )
            }
            connection.execute(delete(OffenderRow).where(OffenderRow.ip.in_(chunk)))
            rows = []
            for ip in chunk:
                if ip not in counters:
                    continue
                peak_refused, peak_accepted, new = self._windows(
                    connection, ip, new_attempts[ip], peaks.get(ip, (0, 0))
                )
                decisions.extend(new)
                rows.append(self._offender_row(ip, counters[ip], peak_refused, peak_accepted))
            if rows:
                connection.execute(insert(OffenderRow), rows)
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
        refusal = self.never_block.reason(ip)
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
            reason = self._reason(len(refused), len(accepted))
            duration = next_duration(existing, self.scoring)
            decision = create_block(
                connection, ip, origin=AUTO, reason=reason, start=moment, duration=duration,
                evidence={"refused_in_window": len(refused), "accepted_in_window": len(accepted),
                          "window": format_duration(self.scoring.window), "at": when},
            )  # fmt: skip
            existing.append(decision)
            new.append(decision)
        return peak_refused, peak_accepted, new

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
