"""Keeping every sink in step with the decisions in force, inside the daemon.

The daemon ticks the :class:`Enforcer` after every round and at least every
:data:`TICK` seconds.  A tick reads a small signature of the decisions in force (the highest
id and the count): when it changed — a block made by the scorer, the API or
``relaywatch block`` in another process, an unblock, an allowlist entry, an expiry — or when
``[enforcement] sync_interval`` has passed, every sink gets a full sync of the decisions in
force (``check`` instead of ``sync`` with ``[enforcement] dry_run``).  A sink that fails
keeps its previous state; it is logged when it starts and stops failing, and retried at each
tick until it succeeds (a full sync heals what a failed one missed).

The Postfix policy service records the requests it answers; each tick stores them in
``policy_requests`` (a tick whose write fails keeps them for the next).

A sink's failures are recorded in ``sink_troubles`` for the nightly report, one row per
episode: written when the sink starts failing (``failures`` 1, its message), updated while it
keeps failing (the count of failed syncs, the latest message), closed (``ended_at``) when a
sync works again — at most one database transaction per tick, and only when a sink fails or
recovers.  A write that fails is made at the next tick.  An episode still open when the daemon
stopped (or the sinks were reloaded) is continued if the sink still fails, and closed at the
first sync that works otherwise.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from detector.config import Settings
from detector.decide import Decision, active_decisions
from detector.sinks import Sink, SyncResult, make_sinks
from detector.sinks.policy import PolicyRequest, PolicySink
from detector.store.models import DecisionRow, PolicyRequestRow, SinkTroubleRow

log = logging.getLogger("relaywatch")

TICK = 1.0
"""Seconds between two looks at the decisions when nothing else wakes the daemon: a block
made by the API or the CLI reaches the sinks within this."""
_KEPT_REQUESTS = 100_000
"""Policy requests kept in memory while the database cannot be written; older ones go."""


@dataclass
class _Trouble:
    """A sink's failure episode, as it is to be stored."""

    sink: str
    started_at: datetime
    failures: int
    message: str
    ended_at: datetime | None = None
    id: int | None = None  # its row, once written


class Enforcer:
    """The sinks of the configuration and their last results."""

    def __init__(
        self,
        settings: Settings,
        sinks: Sequence[Sink] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sinks = list(make_sinks(settings) if sinks is None else sinks)
        self.dry_run = settings.enforcement.dry_run
        self.interval = settings.enforcement.sync_interval.total_seconds()
        self.results: dict[str, SyncResult] = {}
        self.pushes: Counter[str] = Counter()  # syncs (checks in a dry run) per sink
        self.failures: Counter[str] = Counter()  # … of them that failed
        self._clock = clock
        self._signature: tuple[object, ...] | None = None
        self._last_sync = float("-inf")
        self._next_tick = float("-inf")
        self._requests: list[PolicyRequest] = []
        self._troubles: dict[str, _Trouble] = {}  # the sinks failing now
        self._unwritten: dict[int, _Trouble] = {}  # episodes changed since last written
        self._known: set[str] = set()  # sinks whose episode left open earlier was looked for

    def start(self) -> None:
        """Start the sinks that serve (the policy service); a bind failure stops relaywatch."""
        for sink in self.sinks:
            if isinstance(sink, PolicySink):
                sink.start()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def next_tick(self) -> float | None:
        """When the next tick is due (monotonic), or ``None`` without sinks."""
        return self._next_tick if self.sinks else None

    def tick(self, engine: Engine, changed: bool = False) -> list[SyncResult]:
        """Store the policy requests answered since the last tick, and sync every sink when
        the decisions changed (``changed``: the caller knows they did) or the interval has
        passed; the results of the syncs made (none when nothing was due)."""
        if not self.sinks:
            return []
        started = self._clock()
        self._next_tick = started + TICK
        now = datetime.now(UTC)
        self._take_requests()
        try:
            with engine.begin() as connection:
                if self._requests:
                    rows = [_row(r) for r in self._requests]
                    connection.execute(insert(PolicyRequestRow), rows)
                signature = _signature(connection, now)
                due = (
                    changed
                    or signature != self._signature
                    or started - self._last_sync >= self.interval
                    or not all(r.ok for r in self.results.values())
                )
                decisions = active_decisions(connection, now) if due else []
        except SQLAlchemyError as exc:
            log.debug("enforcement: cannot use the database (%s); trying again", exc)
            return []
        self._requests = []  # stored
        if not due:
            return []
        results = [self._sync(sink, decisions, now) for sink in self.sinks]
        self._signature, self._last_sync = signature, started
        self._record_troubles(engine, results, now)
        return results

    def _record_troubles(self, engine: Engine, results: list[SyncResult], now: datetime) -> None:
        """Note the failures and recoveries of ``results`` and store what changed."""
        for result in results:
            trouble = self._troubles.get(result.sink)
            if not result.ok:
                if trouble is None:
                    trouble = _Trouble(result.sink, now, 0, "")
                    self._troubles[result.sink] = trouble
                trouble.failures += 1
                trouble.message = result.message
                self._unwritten[id(trouble)] = trouble
            elif trouble is not None:
                del self._troubles[result.sink]
                trouble.ended_at = now
                self._unwritten[id(trouble)] = trouble
        unknown = {r.sink for r in results} - self._known
        if not self._unwritten and not unknown:
            return
        troubles = [*self._troubles.values(), *self._unwritten.values()]
        before = [(t.id, t.started_at, t.failures) for t in troubles]
        try:
            with engine.begin() as connection:
                for sink in sorted(unknown):
                    self._continue_episode(connection, sink, now)
                    self._unwritten.update((id(t), t) for t in [self._troubles.get(sink)] if t)
                for trouble in self._unwritten.values():
                    _write_trouble(connection, trouble)
        except SQLAlchemyError as exc:
            log.debug("enforcement: cannot record sink troubles (%s); trying again", exc)
            for trouble, (row_id, started_at, failures) in zip(troubles, before, strict=True):
                trouble.id, trouble.started_at, trouble.failures = row_id, started_at, failures
            return
        self._known |= unknown
        self._unwritten.clear()

    def _continue_episode(self, connection: Connection, sink: str, now: datetime) -> None:
        """The episode of ``sink`` a previous run left open: continued while it fails, closed
        now if it works."""
        k = SinkTroubleRow
        open_rows = connection.execute(
            select(k.id, k.started_at, k.failures)
            .where(k.sink == sink, k.ended_at.is_(None))
            .order_by(k.id.desc())
        ).all()
        trouble = self._troubles.get(sink)
        if open_rows and trouble is not None and trouble.id is None:
            row, open_rows = open_rows[0], open_rows[1:]
            trouble.id, trouble.started_at = row.id, row.started_at
            trouble.failures += row.failures
        if open_rows:
            connection.execute(
                update(k).where(k.id.in_([r.id for r in open_rows])).values(ended_at=now)
            )

    def _sync(self, sink: Sink, decisions: list[Decision], now: datetime) -> SyncResult:
        try:
            result = (sink.check if self.dry_run else sink.sync)(decisions, now)
        except Exception as exc:  # a sink's bug must not stop the others or the daemon
            log.exception("enforcement: %s failed", sink.name)
            result = SyncResult(sink.name, False, False, 0, f"{type(exc).__name__}: {exc}")
        before = self.results.get(sink.name)
        if not result.ok and (before is None or before.ok):
            log.error("enforcement: %s: %s", sink.name, result.message)
        elif result.ok and before is not None and not before.ok:
            log.warning("enforcement: %s works again: %s", sink.name, result.message)
        elif result.changed:
            log.info("enforcement: %s: %s%s", sink.name, "dry run: " if self.dry_run else "",
                     result.message)  # fmt: skip
        self.results[sink.name] = result
        self.pushes[sink.name] += 1
        self.failures[sink.name] += not result.ok
        return result

    def _take_requests(self) -> None:
        """Take the requests the policy services answered (kept until they are stored)."""
        for sink in self.sinks:
            if isinstance(sink, PolicySink):
                self._requests.extend(sink.drain())
        del self._requests[:-_KEPT_REQUESTS]


def _write_trouble(connection: Connection, trouble: _Trouble) -> None:
    values = {
        "failures": trouble.failures, "message": trouble.message, "ended_at": trouble.ended_at,
    }  # fmt: skip
    k = SinkTroubleRow
    if trouble.id is None:
        trouble.id = connection.execute(
            insert(k)
            .values(sink=trouble.sink, started_at=trouble.started_at, **values)
            .returning(k.id)
        ).scalar_one()
    else:
        connection.execute(update(k).where(k.id == trouble.id).values(**values))


def _signature(connection: Connection, now: datetime) -> tuple[object, ...]:
    """What changes when the decisions in force change: their highest id and their count."""
    row = connection.execute(
        select(func.max(DecisionRow.id), func.count()).where(
            DecisionRow.revoked_at.is_(None), DecisionRow.expires_at > now
        )
    ).one()
    return tuple(row)


def _row(request: PolicyRequest) -> dict[str, object]:
    return {
        "time": request.time, "protocol_state": request.protocol_state[:16],
        "client_ip": request.client_address, "client_name": request.client_name or None,
        "helo": request.helo_name or None, "sender": request.sender or None,
        "recipient": request.recipient or None, "sasl_user": request.sasl_username or None,
        "queue_id": request.queue_id or None, "action": request.action,
        "decision_id": None if request.dry_run else request.decision_id,  # refused by it
    }  # fmt: skip
