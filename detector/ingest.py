"""The pipeline from lines to stored, scored transactions: parse → correlate → classify → store
→ score.  Used by ``relaywatch ingest`` (and, line by line, by the daemon).

What relaywatch read of each source is counted per day in ``source_days`` (lines, lines that
gave an event, the others; the daemon also the bytes it was behind), for the nightly report.
The day is the UTC day on the wall clock when the lines were stored, not the day their
timestamps say: unparsed lines have no timestamp, and the counts say what relaywatch did that
day (an imported week of old logs counts on the day it was imported).  The counts are added in
the database transaction that stores the lines' transactions (one upsert per batch), so a
crash counts nothing twice: the daemon, resuming at its checkpoint, does not count again the
lines it reads a second time (those before its saved read position in the same file), and
``relaywatch ingest`` does not count a batch whose transactions were all stored before (a file
read again, or an import resumed after a crash).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import multiprocessing.queues
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from queue import Empty
from typing import Any

from sqlalchemy import Connection, Engine, func, text
from sqlalchemy.dialects import postgresql, sqlite

from detector.classify import Classifier
from detector.config import Settings, SourceSettings, zone
from detector.correlate import Correlator
from detector.decide import Decision, NeverBlock, record_hits
from detector.errors import InputError, RelaywatchError
from detector.follow import Follower, Position
from detector.logfile import ReadCounts, fingerprint, open_log, read_lines, utf16_encoding
from detector.score import Scorer
from detector.store.models import SourceDayRow
from detector.store.positions import Checkpoint, Saved, save_position
from detector.store.writes import insert_transactions, log_file_id
from detector.transactions import Transaction
from parsers import PARSERS, Detection, Parser, detect_format, make_parser

log = logging.getLogger(__name__)

BATCH_LINES = 20_000
RESCORE_EVERY = 1.0
"""Seconds between rescorings while a file is read, at least.  Scoring slides its windows over
the stored attempts in log time, so rescoring less often decides the same; each rescoring reads
every stored attempt of the clients it refreshes, which per batch cost a quarter of an ingest."""
RESCORE_SHARE = 0.1
"""…and at most this share of the time goes to rescoring: the stored attempts of a busy abuser
grow with the file (measured on 10M lines: rescoring every second took 34 s of 119)."""
RESCORE_PAUSE = 0.2
"""Seconds the daemon waits at least before rescoring a client again."""
_SCORING_LOCK = 0x72656C6179  # "relay": the advisory lock taken around rescoring
IDLE_SWEEP = 60.0
"""Seconds between sweeps for stale sessions and messages while a followed log is quiet (when
lines arrive, their times drive the sweeps)."""
CHECKPOINT_EVERY = 10.0
"""Seconds between checkpoints of a followed source's correlator state, at least (a restart
reads the lines after the last one again)…"""
CHECKPOINT_SHARE = 0.02
"""…and at most this share of the time goes to them: the state holds every message not
finished yet, deferred ones for hours (``detector.correlate.MESSAGE_TIMEOUT``)."""
PARALLEL_BYTES = 8 * 1024 * 1024
"""Files at least this large are read in a child process (forking costs a few milliseconds)."""


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cycle collector while lines stream through.

    Events and transactions are acyclic, so reference counting frees them; but the collector,
    triggered by the allocation count, kept scanning the correlator's pending state (measured:
    parsing with it paused ran at 115k lines/s instead of 78k).  It runs once at the end.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.collect()


@dataclass
class Summary:
    """What an ingest did, in the words of its closing summary."""

    lines: int = 0
    parsed: int = 0
    unparsed: int = 0
    cut: int = 0
    transactions: int = 0  # new transactions stored
    already_stored: int = 0  # transactions found stored before (a file read twice)
    refused_relays: int = 0
    accepted_relays: int = 0
    offenders: set[str] = field(default_factory=set)
    blocks: list[Decision] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "lines": self.lines, "parsed": self.parsed, "unparsed": self.unparsed,
            "cut": self.cut, "transactions": self.transactions,
            "already_stored": self.already_stored, "refused_relays": self.refused_relays,
            "accepted_relays": self.accepted_relays, "offenders": len(self.offenders),
            "blocks": len(self.blocks),
        }  # fmt: skip


def resolve_format(path: Path, requested: str) -> str:
    return choose_format(path, requested).family


def choose_format(path: Path, requested: str) -> Detection:
    """The family to read ``path`` with, and why: the one asked for, or the one its first
    lines show (``auto``)."""
    if requested != "auto":
        if requested not in PARSERS:
            known = ", ".join(sorted(PARSERS))
            raise InputError(f"{path}: format {requested!r} is not supported yet (have: {known})")
        return Detection(requested, "as asked")
    counts = ReadCounts()
    with open_log(path) as handle:
        detected = detect_format(line for _, line in read_lines(handle, counts, str(path)))
    if detected is None:
        if counts.lines == 0:  # an empty file: nothing to detect, nothing to read
            return Detection("postfix", "the file is empty")
        raise InputError(f"{path}: no known mail log format in its first lines (use --format)")
    return detected


class Pipeline:
    """Everything with state between a relay host's lines and the database."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.classifier = Classifier(settings.network)
        network = settings.network
        never_block = NeverBlock(network.internal_networks, network.own_addresses)
        self.scorer = Scorer(settings.scoring, never_block, settings.enforcement)
        self.pacer = RescorePacer()

    def ingest_file(
        self,
        path: Path,
        *,
        host: str,
        log_format: str = "auto",
        progress: Callable[[int], None] | None = None,
        tz: tzinfo | None = None,
    ) -> Summary:
        """Read a whole file (plain or gzip) into the store; reading it again adds nothing.
        ``tz`` is the zone of its local-time stamps (this machine's when ``None``).

        A large file is read, parsed and correlated in a child process while this one
        classifies, stores and scores, so the two halves of the work use two cores.
        """
        family = resolve_format(path, log_format)
        where = str(path.absolute())  # as the source_days row names it
        summary = Summary()
        source_file = fingerprint(path)
        with self.engine.begin() as connection:
            file_id = log_file_id(connection, host, str(path), source_file, family)

        def produce() -> Iterator[_Batch]:
            return _batches(
                path,
                family,
                Correlator(
                    host,
                    source_file=source_file,
                    internal_ip=self.classifier.is_internal_ip,
                    message_end=PARSERS[family].message_end,
                ),
                self.classifier,
                tz,
            )

        parallel = (os.cpu_count() or 1) > 1 and path.stat().st_size >= PARALLEL_BYTES
        unscored: dict[str, float] = {}
        scored_at, rescoring = time.monotonic(), 0.0  # when last rescored, and how long it took
        with _cyclic_gc_paused():
            try:
                for batch in _from_child(produce) if parallel else produce():
                    summary.parsed += batch.parsed
                    summary.unparsed += batch.unparsed
                    summary.lines, summary.cut = batch.lines, batch.cut
                    self.classifier.learn(batch.transactions)
                    classified = [
                        _evidence_only(self.classifier.classify(t)) for t in batch.transactions
                    ]
                    seen = SourceCount(host, where, batch.parsed + batch.unparsed, batch.parsed)
                    self.store({source_file: file_id}, classified, summary, unscored, seen)
                    pause = max(RESCORE_EVERY, rescoring * (1 - RESCORE_SHARE) / RESCORE_SHARE)
                    if unscored and time.monotonic() - scored_at >= pause:
                        started = time.monotonic()
                        self.rescore(unscored, summary)
                        scored_at = time.monotonic()
                        rescoring = scored_at - started
                    if progress is not None:
                        progress(batch.bytes)
            except BaseException:
                # what was stored is never read again: score it now, or the error says why not
                with suppress(Exception):
                    self.rescore(unscored, summary)
                raise
            self.rescore(unscored, summary)
        return summary

    def store(
        self,
        file_ids: Mapping[str | None, int],
        classified: list[Transaction],
        summary: Summary,
        unscored: dict[str, float],
        seen: SourceCount | None = None,
    ) -> None:
        """Store one batch of classified transactions in one DB transaction, and add the
        clients whose relay attempts it added (with the earliest) to ``unscored``; with it,
        the lines the batch was read from (``seen``) unless they were read before (every
        transaction of the batch was stored already)."""
        if not classified and seen is None:
            return
        with self.engine.begin() as connection:
            stored, touched = (
                self._insert(connection, file_ids, classified) if classified else ([], {})
            )
            if seen is not None and seen.lines and (stored or not classified):
                add_source_day(connection, seen, datetime.now(UTC))
        summary.transactions += len(stored)
        summary.already_stored += len(classified) - len(stored)
        summary.refused_relays += sum(t.refused_relays for t in stored)
        summary.accepted_relays += sum(t.accepted_relays for t in stored)
        for ip, first in touched.items():
            unscored[ip] = min(first, unscored.get(ip, first))

    def _insert(
        self,
        connection: Connection,
        file_ids: Mapping[str | None, int],
        transactions: list[Transaction],
    ) -> tuple[list[Transaction], dict[str, float]]:
        """Store transactions not stored yet and count their relay attempts: those stored,
        and the clients whose attempts they add, with the earliest."""
        stored, touched = insert_transactions(connection, file_ids, transactions)
        record_hits(connection, stored)
        if touched:
            _scoring_turn(connection)
            self.scorer.count(connection, stored)
        return stored, touched

    def rescore(self, unscored: dict[str, float], summary: Summary) -> None:
        """Refresh the offenders among ``unscored`` clients and make the blocks they call for;
        empties ``unscored``."""
        if not unscored:
            return
        with self.engine.begin() as connection:
            _scoring_turn(connection)
            summary.blocks.extend(self.scorer.rescore(connection, unscored))
        summary.offenders.update(unscored)
        unscored.clear()

    def commit(
        self, connection: Connection, reader: SourceReader | None, batch: LiveBatch | None
    ) -> LiveResult:
        """Store what a followed source gave (if anything) with its position, and rescore the
        clients that are due (see :class:`RescorePacer`), in the caller's database transaction:
        all of it is stored, or none.  Call :meth:`RescorePacer.settle` once it is committed."""
        stored: list[Transaction] = []
        touched: dict[str, float] = {}
        if reader is not None and batch is not None:
            host = reader.source.host
            file_ids: dict[str | None, int] = {
                fp: log_file_id(connection, host, str(reader.files.get(fp, reader.source.path)),
                                fp, reader.family or "postfix")
                for fp in {t.source_file for t in batch.transactions} if fp is not None
            }  # fmt: skip
            stored, touched = self._insert(connection, file_ids, batch.transactions)
            path = str(reader.source.path)
            save_position(connection, host, path, batch.position, batch.checkpoint)
            if batch.new_lines:
                seen = SourceCount(
                    host, path, batch.new_lines, batch.new_parsed, reader.follower.lag_bytes()
                )
                add_source_day(connection, seen, datetime.now(UTC))
        due = self.pacer.due(touched, time.monotonic())
        if due and not touched:
            _scoring_turn(connection)
        blocks: list[Decision] = []
        costs: dict[str, float] = {}
        for ip, since in due.items():
            started = time.monotonic()
            blocks += self.scorer.rescore(connection, {ip: since})
            costs[ip] = time.monotonic() - started
        return LiveResult(stored, blocks, touched, costs)


@dataclass(frozen=True, slots=True)
class SourceCount:
    """Lines read of one source (host, path) in one batch, to add to its day's counts."""

    host: str
    path: str
    lines: int
    parsed: int  # lines that gave an event
    lag_bytes: int | None = None  # bytes behind after the batch (followed sources only)


def add_source_day(connection: Connection, seen: SourceCount, now: datetime) -> None:
    """Add ``seen`` to its source's ``source_days`` row of ``now``'s UTC day (one upsert);
    ``lag_bytes`` replaces the row's when given."""
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    row = SourceDayRow
    statement = insert(row).values(
        day=now.astimezone(UTC).date().isoformat(), host=seen.host, path=seen.path,
        lines=seen.lines, parsed=seen.parsed, unparsed=seen.lines - seen.parsed,
        lag_bytes=seen.lag_bytes, updated_at=now,
    )  # fmt: skip
    added = statement.excluded
    sums = {
        "lines": row.lines + added.lines, "parsed": row.parsed + added.parsed,
        "unparsed": row.unparsed + added.unparsed,
        "lag_bytes": func.coalesce(added.lag_bytes, row.lag_bytes),
        "updated_at": added.updated_at,
    }  # fmt: skip
    connection.execute(
        statement.on_conflict_do_update(index_elements=[row.day, row.host, row.path], set_=sums)
    )


def _scoring_turn(connection: Connection) -> None:
    """Relay hosts sharing a PostgreSQL database count and rescore one at a time (until the
    transaction ends): each sees the others' committed attempts, and two never write the same
    offender or block at once."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCORING_LOCK})


class RescorePacer:
    """Which clients a live batch rescores.  A client with new relay attempts is rescored at
    once the first time, then no sooner than ``pause`` seconds after its last rescoring; and
    rescoring clients again takes at most ``RESCORE_SHARE`` of the time (heavy abusers' stored
    attempts grow with every batch, and so does the cost of rescoring them): beyond it, only
    new clients are rescored until the next ``period``.  Attempts in between wait for their
    client's turn: rescoring later decides the same, on log time."""

    def __init__(self, pause: float = RESCORE_PAUSE, period: float = 10.0) -> None:
        self.pause = pause
        self.period = period
        self._waiting: dict[str, float] = {}  # client -> earliest attempt not rescored yet
        self._not_before: dict[str, float] = {}  # client -> monotonic time of its next turn
        self._period_start = time.monotonic()
        self._spent = 0.0  # seconds spent rescoring clients again in this period

    def due(self, touched: dict[str, float], now: float) -> dict[str, float]:
        """The clients to rescore now (with their earliest new attempt); changes nothing."""
        waiting = dict(self._waiting)
        for ip, first in touched.items():
            waiting[ip] = min(first, waiting.get(ip, first))
        elapsed = now - self._period_start
        again = elapsed >= self.period or self._spent <= RESCORE_SHARE * elapsed
        not_before = self._not_before
        return {
            ip: t for ip, t in waiting.items()
            if ip not in not_before or (again and not_before[ip] <= now)
        }  # fmt: skip

    def settle(self, result: LiveResult, now: float) -> None:
        """Take in what a committed batch touched and rescored."""
        if now - self._period_start >= self.period:
            self._period_start, self._spent = now, 0.0
        for ip, first in result.touched.items():
            self._waiting[ip] = min(first, self._waiting.get(ip, first))
        for ip, cost in result.rescored.items():
            self._waiting.pop(ip, None)
            if ip in self._not_before:
                self._spent += cost
            self._not_before[ip] = now + self.pause
        if len(self._not_before) > 2 * len(self._waiting) + 65536:  # forget turns long past
            self._not_before = {
                ip: t for ip, t in self._not_before.items() if t > now or ip in self._waiting
            }

    def next_turn(self) -> float | None:
        """When the next waiting client may be rescored (monotonic), if any is waiting."""
        if not self._waiting:
            return None
        if any(ip not in self._not_before for ip in self._waiting):
            return 0.0  # a new client: at once
        turn = min(self._not_before[ip] for ip in self._waiting)
        budget = self._period_start + min(self._spent / RESCORE_SHARE, self.period)
        return max(turn, budget)


@dataclass
class _Batch:
    """What reading a batch of lines gave: finished transactions (not classified yet) and
    counts."""

    transactions: list[Transaction]
    bytes: int  # read for this batch
    parsed: int
    unparsed: int
    lines: int  # read so far
    cut: int  # cut so far


def _batches(
    path: Path, family: str, correlator: Correlator, classifier: Classifier, tz: tzinfo | None
) -> Iterator[_Batch]:
    """Read, parse and correlate ``path`` in batches of ``BATCH_LINES`` lines.

    Only relay attempts keep the text of their lines (as evidence); the others keep offsets,
    which is all the store wants of them.  Transactions that cannot be relay attempts lose
    their texts here already, which keeps batches small to hand between processes.
    """
    parser = make_parser(family, tz=tz)
    counts = ReadCounts()
    with open_log(path) as handle, _cyclic_gc_paused():
        lines = read_lines(handle, counts, str(path))
        while True:
            before = counts.bytes
            finished: list[Transaction] = []
            parsed, taken, exhausted = _feed(parser, correlator, lines, BATCH_LINES, finished)
            if exhausted:
                correlator.flush(finished)
            batch = [
                t if classifier.may_be_relay_attempt(t) else t.without_texts() for t in finished
            ]
            yield _Batch(
                batch, counts.bytes - before, parsed, taken - parsed, counts.lines, counts.cut
            )
            if exhausted:
                return


def _parse(
    parse: Callable[[str], Any],
    feed: Callable[[Any, int, str, list[Transaction]], None],
    lines: Iterable[tuple[int, str]],
    finished: list[Transaction],
) -> int:
    """Parse ``lines`` and feed their events to the correlator: how many gave one."""
    parsed = 0
    for offset, line in lines:
        event = parse(line)
        if event is not None:
            parsed += 1
            feed(event, offset, line, finished)
    return parsed


def _another_file(before: Position | None, now: Position) -> bool:
    """Whether ``now`` is in another file than ``before``, or in the same one truncated."""
    if before is None:
        return True
    same = (before.device, before.inode, before.fingerprint) == (
        now.device, now.inode, now.fingerprint
    )  # fmt: skip
    return not same or now.offset < before.offset


def _evidence_only(txn: Transaction) -> Transaction:
    """``txn`` without the text of its lines unless it holds a relay attempt."""
    for recipient in txn.recipients:
        if recipient.relay_attempt is not None:
            return txn
    return txn.without_texts()


def _feed(
    parser: Parser,
    correlator: Correlator,
    lines: Iterable[tuple[int, str]],
    limit: int,
    out: list[Transaction],
) -> tuple[int, int, bool]:
    """Feed up to ``limit`` lines: (lines that gave an event, lines taken, input exhausted)."""
    parse, feed = parser.parse, correlator.feed
    taken = parsed = 0
    for offset, line in lines:
        event = parse(line)
        if event is not None:
            parsed += 1
            feed(event, offset, line, out)
        taken += 1
        if taken >= limit:
            return parsed, taken, False
    return parsed, taken, True


def _from_child(produce: Callable[[], Iterator[_Batch]]) -> Iterator[_Batch]:
    """The batches of ``produce()``, made in a forked child process while the caller works.

    A bounded queue keeps the child at most a few batches ahead (memory stays flat); an error
    in the child is raised here; a child that dies without a word is an error too.
    """
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.queues.Queue[tuple[str, Any]] = context.Queue(maxsize=4)

    def run() -> None:
        try:
            for batch in produce():
                queue.put(("batch", batch))
            queue.put(("end", None))
        except RelaywatchError as exc:
            queue.put(("error", exc))
        except Exception as exc:  # reported in the parent, in one line
            queue.put(("error", RelaywatchError(f"reading failed: {type(exc).__name__}: {exc}")))

    child = context.Process(target=run, name="relaywatch-reader", daemon=True)
    child.start()
    try:
        while True:
            try:
                kind, item = queue.get(timeout=1.0)
            except Empty:
                if not child.is_alive():
                    raise RelaywatchError(
                        f"the reading process stopped unexpectedly (exit {child.exitcode})"
                    ) from None
                continue
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        if child.is_alive():
            child.terminate()
        child.join()


@dataclass
class LiveBatch:
    """What one read of a followed source gave, to store together with its position."""

    transactions: list[Transaction]  # classified
    position: Position
    checkpoint: Checkpoint | None  # the correlator's state at ``position``, when one is due
    lines: int
    parsed: int
    # of them, read for the first time (not again after a restart at the checkpoint)
    new_lines: int = 0
    new_parsed: int = 0


@dataclass
class LiveResult:
    stored: list[Transaction]
    blocks: list[Decision]
    touched: dict[str, float]  # clients whose relay attempts it added, with the earliest
    rescored: dict[str, float]  # clients rescored, with the seconds it took


class SourceReader:
    """One followed source: follower, parser and correlator, resumed from what was ``saved``:
    at its checkpoint (see :mod:`detector.store.positions`)."""

    def __init__(
        self, source: SourceSettings, classifier: Classifier, saved: Saved | None = None
    ) -> None:
        self.source = source
        self.classifier = classifier
        self.follower = Follower(source.path, saved.checkpoint.position if saved else None)
        self.correlator = Correlator(source.host, internal_ip=classifier.is_internal_ip)
        self._parser_state: object = None  # the parser's, from the checkpoint
        if saved is not None:
            self._parser_state = self.correlator.restore(saved.checkpoint.state)
        self.family: str | None = None if source.format == "auto" else source.format
        self.parser: Parser | None = None
        self.files: dict[str, Path] = {}  # fingerprint -> where that file was read
        self.parsed = 0
        self.error: str | None = None  # why the source cannot be read, if it cannot
        self.last_line: float | None = None  # wall-clock time a line was last read
        self._next_sweep = time.monotonic() + IDLE_SWEEP
        self._next_checkpoint = 0.0  # monotonic; the first batch saves one
        self._checkpoint_at: Position | None = saved.checkpoint.position if saved else None
        # lines of this file before this offset were read (and counted) by a previous run
        self._counted: Position | None = saved.read if saved else None

    @property
    def lines(self) -> int:
        return self.follower.counts.lines

    def use(self, classifier: Classifier) -> None:
        """Classify with ``classifier`` from now on (the configuration was reloaded)."""
        self.classifier = classifier
        self.correlator.internal_ip = classifier.is_internal_ip

    def read(self) -> LiveBatch | None:
        """The lines added since the last read, as classified transactions, or ``None``."""
        parser = self.parser or self._parser()
        if parser is None:
            return None
        parts = self.follower.read()
        finished: list[Transaction] = []
        parse, feed, correlator = parser.parse, self.correlator.feed, self.correlator
        lines = parsed = again = parsed_again = 0
        for part in parts:
            self.files[part.fingerprint] = part.path
            correlator.source_file = part.fingerprint
            counted = self._counted
            if counted is not None and part.fingerprint == counted.fingerprint:
                split = bisect_left(part.lines, counted.offset, key=lambda item: item[0])
                parsed_again += _parse(parse, feed, part.lines[:split], finished)
                parsed += _parse(parse, feed, part.lines[split:], finished)
                again += split
            else:
                parsed += _parse(parse, feed, part.lines, finished)
            lines += len(part.lines)
        parsed += parsed_again
        position = self.follower.position
        if (
            self._counted is not None
            and position is not None
            and (
                position.fingerprint != self._counted.fingerprint
                or position.offset >= self._counted.offset
            )
        ):
            self._counted = None  # past what the previous run read
        now = time.monotonic()
        if lines:
            self.last_line = time.time()
            self._next_sweep = now + IDLE_SWEEP
        elif now >= self._next_sweep:  # quiet: sessions and messages left hanging expire
            self._next_sweep = now + IDLE_SWEEP
            correlator.expire(time.time(), finished)
        if position is None or not (lines or finished):
            return None
        self.parsed += parsed
        self.classifier.learn(finished)
        classified = [_evidence_only(self.classifier.classify(t)) for t in finished]
        checkpoint = None
        if now >= self._next_checkpoint or _another_file(self._checkpoint_at, position):
            # after a rotation at once: a restart then never has to read a file again that
            # may be gone (deleted, truncated) since
            checkpoint = Checkpoint(position, correlator.snapshot(parser.state()))
            cost = time.monotonic() - now
            self._next_checkpoint = now + max(CHECKPOINT_EVERY, cost / CHECKPOINT_SHARE)
            self._checkpoint_at = position
        return LiveBatch(
            classified, position, checkpoint, lines, parsed, lines - again, parsed - parsed_again
        )

    def last_batch(self, held: LiveBatch | None) -> LiveBatch | None:
        """What to store when following stops: the batch ``held`` back (nothing was read
        after it), if any, with a checkpoint at its end, so a restart reads nothing again."""
        position = held.position if held is not None else self.follower.position
        if position is None:
            return held
        checkpoint = Checkpoint(
            position, self.correlator.snapshot(self.parser.state() if self.parser else None)
        )
        if held is None:
            return LiveBatch([], position, checkpoint, 0, 0)
        return replace(held, checkpoint=checkpoint)

    def _parser(self) -> Parser | None:
        """The parser of the source's format; with ``auto``, once its first lines are there."""
        if self.error is not None:
            return None
        path = self.source.path
        try:
            with path.open("rb") as handle:
                head = handle.read(6)
        except FileNotFoundError:
            head = b""  # not there yet
        if utf16_encoding(head) is not None:
            self.error = (
                f"{path}: is UTF-16 text; relaywatch follows UTF-8 logs (read it with "
                "`relaywatch ingest`, or have the server write UTF-8)"
            )
        elif self.family is None:
            if not head:
                return None  # nothing to detect the format from yet
            try:
                self.family = resolve_format(path, "auto")
            except FileNotFoundError:
                return None  # rotated away in between: the next round
            except InputError as exc:
                self.error = f"{exc}; set format in its [[sources]] entry"
        if self.error is not None or self.family is None:
            log.error("%s", self.error)
            return None
        self.parser = make_parser(self.family, tz=zone(self.source.timezone))
        self.parser.restore(self._parser_state)
        self.correlator.message_end = self.parser.message_end
        return self.parser

    def close(self) -> None:
        self.follower.close()
