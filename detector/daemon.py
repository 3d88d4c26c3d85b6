"""``relaywatch run``: follow every source, store and score what it says, serve the API.

One process.  The main thread reads the sources and writes the database; the API (uvicorn)
answers in a thread of its own.  Each read of a source is stored in one database transaction
together with the source's position and the correlator's state, then the clients it touched
are rescored, so a crash (even ``kill -9``) at any moment loses nothing and counts nothing
twice.  While the database cannot be written, the batch read is kept, reading stops (memory
stays bounded) and writing is retried with back-off; ``/healthz`` and the log say so.

The nightly report (:mod:`detector.report.schedule`) is built, stored and mailed by a worker
thread with a database connection of its own, started from the main loop when it falls due
(and at start, for the nights the daemon was down): following the logs never waits for it.

Signals: SIGTERM and SIGINT stop it (the batch in hand is stored first, exit 0); SIGHUP
re-reads the configuration (sources, networks, scoring; the database and listen address take
effect at the next start).
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from detector.config import Settings, SourceSettings, load_settings
from detector.enforce import Enforcer
from detector.errors import DatabaseError, RelaywatchError, SchemaError
from detector.follow import Wakeup
from detector.ingest import LiveBatch, Pipeline, SourceReader
from detector.report.schedule import Clock, ReportScheduler
from detector.store.positions import Saved, load_position
from detector.store.session import SQLITE_BUSY_TIMEOUT, make_engine, open_database

log = logging.getLogger("relaywatch")

BACKOFF_FIRST = 0.5  # seconds before the first retry of a failed write
BACKOFF_MAX = 30.0
BATCH_PAUSE = 0.1
"""Seconds between the starts of two reads while lines keep arriving: a batch gathers what
came meanwhile (a commit per syslog write would cost more than the lines)."""
WRITER_CACHE_MIB = 16  # SQLite page cache of the one connection that writes
API_CACHE_MIB = 2  # … and of each connection of the API (up to 5 kept)
REPORT_CACHE_MIB = 16  # … and of the report's, while it builds one


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class DatabaseState:
    error: str | None = None  # why the last write failed, while it keeps failing
    since: float | None = None  # when writing started to fail (epoch seconds)


class Status:
    """What ``/healthz`` reports of a running daemon: the database and every source."""

    def __init__(self) -> None:
        self.database = DatabaseState()
        self.readers: list[SourceReader] = []
        self.held: dict[int, LiveBatch] = {}  # read, not stored yet, by id(reader)
        self.enforcer: Enforcer | None = None

    def sources(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for reader in list(self.readers):
            held = self.held.get(id(reader))
            last = reader.last_line
            out.append({
                "path": str(reader.source.path), "host": reader.source.host,
                "format": reader.family or reader.source.format, "lines": reader.lines,
                "parsed": reader.parsed, "lag_bytes": reader.follower.lag_bytes(),
                "last_line_at": None if last is None else _iso(last),
                "held_transactions": len(held.transactions) if held else 0,
                "error": reader.error,
            })  # fmt: skip
        return out

    def sinks(self) -> list[dict[str, object]]:
        enforcer = self.enforcer
        if enforcer is None:
            return []
        return [
            {"sink": sink.name, **({"ok": None, "message": "not synced yet"} if result is None
                                   else {"ok": result.ok, "entries": result.entries,
                                         "message": result.message})}
            for sink in enforcer.sinks
            for result in [enforcer.results.get(sink.name)]
        ]  # fmt: skip

    def database_error(self) -> str | None:
        state = self.database
        if state.error is None or state.since is None:
            return None
        return f"cannot write since {_iso(state.since)}: {state.error}"


def _resumed(saved: Saved | None) -> str:
    if saved is None:
        return ""
    read, at = saved.read, saved.checkpoint.position
    if at == read:
        return f" from offset {read.offset}"
    if at.fingerprint == read.fingerprint:
        return f" from offset {at.offset} (stored up to {read.offset})"
    return f" from offset {at.offset} of the rotated file (stored up to {read.offset})"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Daemon:
    """Everything ``relaywatch run`` does; ``run()`` returns when it was told to stop."""

    def __init__(
        self,
        settings: Settings,
        config_path: Path | None = None,
        announce: Callable[[str], None] | None = None,
        poll: float = 2.0,
        busy_timeout: float = 2.0,
        report_clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.announce = announce or (lambda _url: None)
        self.poll = poll
        self.busy_timeout = busy_timeout  # seconds a write waits for another SQLite writer
        self.status = Status()
        self.enforcer = self.status.enforcer = Enforcer(settings)  # started by run()
        self.reporter = ReportScheduler(settings, self._report_engine, clock=report_clock)
        self._stop = threading.Event()
        self._reload = False
        self._wakeup: Wakeup | None = None
        self._server: Any = None

    # -- signals ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop following (the batch in hand is stored first); ``run()`` returns."""
        self._stop.set()
        if self._wakeup is not None:
            self._wakeup.poke()

    def _terminate(self, _signal: int, _frame: FrameType | None) -> None:
        self.stop()

    def _hangup(self, _signal: int, _frame: FrameType | None) -> None:
        self._reload = True
        if self._wakeup is not None:
            self._wakeup.poke()

    def _install_signals(self) -> dict[int, Any]:
        """Handle SIGTERM, SIGINT and SIGHUP; returns the handlers they replace."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # embedded (tests): stopped through stop()
        handlers: dict[int, Callable[[int, FrameType | None], None]] = {
            signal.SIGTERM: self._terminate,
            signal.SIGINT: self._terminate,
            signal.SIGHUP: self._hangup,
        }
        return {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}

    # -- running ----------------------------------------------------------------------------

    def run(self) -> None:
        previous = self._install_signals()
        try:
            engine = self._open_database()
            if engine is None:
                return  # stopped while waiting for the database
            # the API's connections read a little each: a small page cache each keeps memory flat
            api_engine = make_engine(self.settings.database.url, self.busy_timeout, API_CACHE_MIB)
            try:
                self.enforcer.start()
                self._serve(api_engine)
                self._follow(engine)
            finally:
                self.reporter.close()
                self._stop_serving()
                self.enforcer.close()
                engine.dispose()
                api_engine.dispose()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _open_database(self) -> Engine | None:
        delay = BACKOFF_FIRST
        while not self._stop.is_set():
            try:
                return open_database(
                    self.settings.database.url, self.busy_timeout, WRITER_CACHE_MIB
                )
            except SchemaError:
                raise  # waiting will not fix it: 'relaywatch db upgrade' will
            except DatabaseError as exc:
                log.warning("%s; retrying in %gs", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        return None

    def _report_engine(self) -> Engine:
        """The report worker's own engine: it waits for the daemon's writes as long as a batch
        import would, rather than failing."""
        return make_engine(self.settings.database.url, SQLITE_BUSY_TIMEOUT, REPORT_CACHE_MIB)

    def _serve(self, engine: Engine) -> None:
        import uvicorn

        from api.main import create_app

        listen = self.settings.api.listen
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        check_listen(host, int(port), listen)
        app = create_app(self.settings, engine, status=self.status)
        config = uvicorn.Config(
            app, host=host, port=int(port), log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="relaywatch-api", daemon=True)
        thread.start()
        while not server.started:
            if not thread.is_alive():
                raise RelaywatchError(f"cannot serve on {listen}")
            time.sleep(0.01)
        self._server = (server, thread)
        log.info("API listening on http://%s", listen)
        self.announce(f"http://{listen}")

    def _stop_serving(self) -> None:
        if self._server is not None:
            server, thread = self._server
            server.should_exit = True
            thread.join(timeout=10)
            self._server = None

    def _follow(self, engine: Engine) -> None:
        pipeline = Pipeline(self.settings, engine)
        readers: dict[SourceSettings, SourceReader] = {}
        self._wakeup = Wakeup([s.path for s in self.settings.sources], poll=self.poll)
        delay = 0.0  # back-off while the database cannot be written
        try:
            while not self._stop.is_set():
                if self._reload:
                    self._reload = False
                    pipeline = self._reloaded(pipeline, engine, readers)
                if not self._open_sources(pipeline, readers):
                    delay = self._failed(delay)
                    continue
                started = time.monotonic()
                busy, failed = self._round(pipeline, engine, list(readers.values()))
                if failed:
                    delay = self._failed(delay)
                    continue
                delay = 0.0
                self.enforcer.tick(engine)
                self.reporter.tick()  # the nightly report, when due: in a thread of its own
                if busy:  # lines keep coming: gather them a little, not a commit per write
                    self._stop.wait(max(0.0, BATCH_PAUSE - (time.monotonic() - started)))
                    continue
                turns = [pipeline.pacer.next_turn(), self.enforcer.next_tick()]
                turn = min((t for t in turns if t is not None), default=None)
                wait = None if turn is None else max(0.01, turn - time.monotonic())
                self._wakeup.wait(wait if wait is not None and wait < self.poll else None)
            self._round(pipeline, engine, list(readers.values()), final=True)
            self.enforcer.tick(engine)
        finally:
            self._wakeup.stop()
            for reader in readers.values():
                reader.close()
            self.status.readers = []

    def _failed(self, delay: float) -> float:
        delay = min(max(delay * 2, BACKOFF_FIRST), BACKOFF_MAX)
        self._stop.wait(delay)
        return delay

    def _open_sources(
        self, pipeline: Pipeline, readers: dict[SourceSettings, SourceReader]
    ) -> bool:
        """Start a reader for every configured source that has none, at its stored position."""
        missing = [s for s in self.settings.sources if s not in readers]
        if not missing:
            return True
        try:
            with pipeline.engine.connect() as connection:
                saved = {s: load_position(connection, s.host, str(s.path)) for s in missing}
        except SQLAlchemyError as exc:
            self._database_failed(exc)
            return False
        for source in missing:
            reader = SourceReader(source, pipeline.classifier, saved[source])
            readers[source] = reader
            log.info("following %s (host %s, format %s)%s", source.path, source.host,
                     source.format, _resumed(saved[source]))  # fmt: skip
        self.status.readers = list(readers.values())
        return True

    def _round(
        self, pipeline: Pipeline, engine: Engine, readers: list[SourceReader], final: bool = False
    ) -> tuple[bool, bool]:
        """Read every source once and store what it gave, then rescore the clients whose turn
        has come: (lines were read, a write failed)."""
        busy = False
        for reader in [*readers, None]:
            if reader is None:  # clients waiting for their turn to be rescored
                turn = pipeline.pacer.next_turn()
                if turn is None or turn > time.monotonic():
                    continue
                batch = None
            else:
                held = self.status.held.get(id(reader))
                if final:
                    batch = reader.last_batch(held)
                else:
                    batch = held if held is not None else reader.read()
                if batch is None:
                    continue
            try:
                with engine.begin() as connection:
                    result = pipeline.commit(connection, reader, batch)
            except SQLAlchemyError as exc:
                if reader is not None and batch is not None:
                    self.status.held[id(reader)] = batch
                self._database_failed(exc)
                return busy, True
            pipeline.pacer.settle(result, time.monotonic())
            self._database_back()
            if reader is not None and batch is not None:
                self.status.held.pop(id(reader), None)
                busy = busy or batch.lines > 0
            for block in result.blocks:
                until = block.expires_at.isoformat(timespec="seconds")
                log.warning("blocked %s until %s: %s", block.value, until, block.reason)
        return busy, False

    def _database_failed(self, exc: SQLAlchemyError) -> None:
        state = self.status.database
        message = _first_line(exc)
        if state.error is None:
            state.since = time.time()
            log.warning("cannot write to the database (%s): holding what was read, retrying",
                        message)  # fmt: skip
        state.error = message

    def _database_back(self) -> None:
        state = self.status.database
        if state.error is not None and state.since is not None:
            log.warning("database writable again after %.1fs; catching up",
                        time.time() - state.since)  # fmt: skip
            state.error = state.since = None

    def _new_enforcer(self, settings: Settings) -> None:
        """The sinks of a reloaded configuration, in place of the running ones (kept if the
        new ones cannot start, e.g. a policy service's port is taken)."""
        self.enforcer.close()
        enforcer = Enforcer(settings)
        try:
            enforcer.start()
        except RelaywatchError as exc:
            log.error("sinks not reloaded: %s; keeping the previous ones", exc)
            enforcer.close()
            enforcer = Enforcer(self.settings)
            enforcer.start()
        self.enforcer = self.status.enforcer = enforcer
        log.info("sinks reloaded: %d sinks", len(enforcer.sinks))

    def _reloaded(
        self, pipeline: Pipeline, engine: Engine, readers: dict[SourceSettings, SourceReader]
    ) -> Pipeline:
        """The configuration file read again (SIGHUP)."""
        try:
            settings = load_settings(self.config_path)
        except RelaywatchError as exc:
            log.error("configuration not reloaded: %s", exc)
            return pipeline
        for key, what in (("database", "database"), ("api", "API listen address")):
            if getattr(settings, key) != getattr(self.settings, key):
                log.warning("the %s changed: it takes effect when relaywatch restarts", what)
        settings = settings.model_copy(
            update={"database": self.settings.database, "api": self.settings.api}
        )
        for source in [s for s in readers if s not in settings.sources]:
            reader = readers.pop(source)  # what it read and did not store is read again later
            self.status.held.pop(id(reader), None)
            reader.close()
            log.info("no longer following %s", source.path)
        if (settings.sinks, settings.enforcement) != (
            self.settings.sinks,
            self.settings.enforcement,
        ):
            self._new_enforcer(settings)
        self.settings = settings
        self.reporter.reload(settings)
        pacer = pipeline.pacer
        pipeline = Pipeline(settings, engine)
        pipeline.pacer = pacer  # the clients waiting to be rescored still are
        for reader in readers.values():
            reader.use(pipeline.classifier)
        if self._wakeup is not None:
            self._wakeup.stop()
        self._wakeup = Wakeup([s.path for s in settings.sources], poll=self.poll)
        if self._server is not None:
            self._server[0].config.app.state.settings = settings  # what the API answers with
        self.status.readers = list(readers.values())
        log.info("configuration reloaded: %d sources", len(settings.sources))
        return pipeline


def check_listen(host: str, port: int, listen: str) -> None:
    """A one-line error now, rather than uvicorn's log lines later, when the address is taken."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise RelaywatchError(f"cannot listen on {listen}: {exc.strerror}") from None
