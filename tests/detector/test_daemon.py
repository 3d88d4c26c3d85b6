"""``relaywatch run``: what it stores equals what the log says, through rotations, kills and
restarts, database trouble, several relay hosts on one database, and a configuration reload."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from detector.config import load_settings
from detector.correlate import Correlator
from detector.daemon import Daemon
from detector.ingest import LiveBatch, Pipeline, SourceReader
from detector.simulate import traffic
from detector.store.positions import load_position
from detector.store.session import open_database
from detector.transactions import Transaction
from parsers.postfix import PostfixParser
from tests.factories import probe
from tests.net import answers_200, free_port, get_json, wait_for

RELAYWATCH = Path(sys.executable).parent / "relaywatch"
Key = tuple[object, ...]


def config(directory: Path, database_url: str, port: int, sources: list[tuple[Path, str]]) -> Path:
    path = directory / "relaywatch.toml"
    text_ = (
        '[network]\ninternal_networks = ["127.0.0.0/8", "10.0.0.0/8"]\n'
        'local_domains = ["example.test"]\n'
        f'[database]\nurl = "{database_url}"\n[api]\nlisten = "127.0.0.1:{port}"\n'
    )
    for log, host in sources:
        text_ += f'[[sources]]\npath = "{log}"\nformat = "postfix"\nhost = "{host}"\n'
    path.write_text(text_)
    return path


def simulated(count: int, seed: int = 7) -> list[str]:
    """``count`` lines of busy traffic starting now, with relay abuse and an open relay."""
    return list(islice(
        traffic(seed=seed, start=datetime.now(UTC), session_rate=40, abuse_share=0.3,
                open_relay_clients=1),
        count,
    ))  # fmt: skip


def key(client_ip: object, queue_id: object, sender: object, start: float, rcpts: object) -> Key:
    return (client_ip, queue_id, sender, round(start, 5), rcpts)


def expected(lines: list[str]) -> Counter[Key]:
    """The transactions in ``lines`` that are finished by their end (what is still open at the
    end is held by the daemon, not stored)."""
    parser, correlator, out = PostfixParser(), Correlator("mx1"), list[Transaction]()
    for offset, line in enumerate(lines):
        event = parser.parse(line)
        if event is not None:
            correlator.feed(event, offset, line, out)
    return Counter(
        key(t.client_ip, t.queue_id, t.sender, t.start,
            tuple(sorted((r.address, r.outcome) for r in t.recipients)))
        for t in out
    )  # fmt: skip


def stored(engine: Engine, host: str | None = None) -> Counter[Key]:
    rcpts: dict[int, list[tuple[str, str]]] = {}
    with engine.connect() as connection:
        for txn_id, address, outcome in connection.execute(
            text("SELECT transaction_id, address, outcome FROM recipients")
        ):
            rcpts.setdefault(txn_id, []).append((address, outcome))
        rows = connection.execute(
            text("SELECT id, client_ip, queue_id, sender, started_at, host FROM transactions")
        ).all()
    return Counter(
        key(ip, qid, sender, start, tuple(sorted(rcpts.get(txn_id, []))))
        for txn_id, ip, qid, sender, start, txn_host in rows
        if host is None or txn_host == host
    )


class Writer:
    """Writes lines to a log the way syslog does, in pieces that do not end with lines."""

    def __init__(self, log: Path, lines: list[str], seed: int = 1) -> None:
        self.log = log
        self.data = "".join(line + "\n" for line in lines).encode()
        self.done = 0
        self.rnd = random.Random(seed)

    def write(self, share: float, pause: float = 0.002) -> None:
        """Append up to ``share`` of all the data, in pieces of a few hundred bytes."""
        end = min(len(self.data), self.done + int(len(self.data) * share))
        while self.done < end:
            size = min(self.rnd.randint(50, 4000), end - self.done)
            with self.log.open("ab") as f:
                f.write(self.data[self.done : self.done + size])
            self.done += size
            time.sleep(pause * self.rnd.random())

    def finish_line(self) -> None:
        """Write up to the end of the current line (logrotate runs between whole lines)."""
        if self.done == 0 or self.data[self.done - 1] == ord("\n"):
            return  # at the start of a line already
        end = self.data.index(b"\n", self.done) + 1
        with self.log.open("ab") as f:
            f.write(self.data[self.done : end])
        self.done = end

    def _shift(self) -> None:
        """mail.log.1 becomes mail.log.2, and so on, as logrotate does before it rotates."""
        for n in range(8, 0, -1):
            older = self.log.with_name(f"{self.log.name}.{n}")
            if older.exists():
                older.rename(self.log.with_name(f"{self.log.name}.{n + 1}"))

    def rotate(self) -> None:
        """logrotate's default: shift the rotated files, rename, create."""
        self.finish_line()
        self._shift()
        self.log.rename(self.log.with_name(self.log.name + ".1"))
        self.log.touch()

    def recreate(self) -> None:
        """The log deleted, and a new one created by the next write."""
        self.finish_line()
        self.log.unlink()

    def truncate(self) -> None:
        """Emptied in place (after everything was read: what was not is gone for anyone)."""
        self.finish_line()
        with self.log.open("r+b") as f:
            f.truncate(0)

    def copytruncate(self) -> None:
        self.finish_line()
        self._shift()
        shutil.copyfile(self.log, self.log.with_name(self.log.name + ".1"))
        with self.log.open("r+b") as f:
            f.truncate(0)


class Running:
    """``relaywatch run`` as a subprocess."""

    def __init__(self, config_path: Path, port: int) -> None:
        self.port = port
        self.stderr = config_path.parent / f"daemon-{time.monotonic_ns()}.err"
        with self.stderr.open("w") as err:
            self.process = subprocess.Popen(
                [str(RELAYWATCH), "--config", str(config_path), "run"],
                stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        wait_for(self.answers, 30, "the daemon's API")

    def answers(self) -> bool:
        assert self.process.poll() is None, self.stderr.read_text()
        try:
            return get_json(f"http://127.0.0.1:{self.port}/healthz")[0] in (200, 503)
        except OSError:
            return False

    def health(self) -> dict[str, Any]:
        health: dict[str, Any] = get_json(f"http://127.0.0.1:{self.port}/healthz")[1]
        return health

    def caught_up(self) -> bool:
        sources = self.health()["sources"]
        return bool(sources) and all(
            s["lag_bytes"] == 0 and s["held_transactions"] == 0 for s in sources
        )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)


@pytest.fixture
def running() -> Iterator[Callable[[Path, int], Running]]:
    started: list[Running] = []

    def start(config_path: Path, port: int) -> Running:
        started.append(Running(config_path, port))
        return started[-1]

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


def test_rotations_truncation_deletion_and_kill_9_lose_no_transaction_and_store_none_twice(
    tmp_path: Path, running: Callable[[Path, int], Running]
) -> None:
    lines = simulated(24_000)
    log = tmp_path / "log" / "mail.log"
    port = free_port()
    database = tmp_path / "relaywatch.db"
    conf = config(tmp_path, f"sqlite:///{database}", port, [(log, "mx1")])
    daemon = running(conf, port)  # before the log directory exists
    log.parent.mkdir()
    writer = Writer(log, lines)

    def settle() -> None:
        writer.finish_line()
        wait_for(daemon.caught_up, 60, "the daemon to read everything")

    writer.write(0.1)
    settle()
    writer.write(0.1)
    writer.rotate()  # rename + create while running
    writer.write(0.1)
    settle()
    writer.write(0.1)
    writer.copytruncate()  # the last lines before it are read from mail.log.1
    writer.write(0.1)
    settle()
    writer.recreate()  # deleted, then written again
    writer.write(0.05)
    settle()
    writer.truncate()
    writer.write(0.05)
    settle()
    busy = threading.Thread(target=writer.write, args=(0.1,))
    busy.start()
    time.sleep(0.2)
    daemon.stop(signal.SIGKILL)  # in the middle of reading and storing
    busy.join()
    writer.write(0.05)
    writer.rotate()  # while it is stopped: the rest of mail.log.1 is read first
    writer.write(0.05)
    daemon = running(conf, port)
    writer.write(0.1)
    daemon.stop(signal.SIGKILL)  # before it caught up
    daemon = running(conf, port)
    writer.rotate()
    writer.write(1.0)
    assert writer.done == len(writer.data)
    settle()
    assert daemon.stop() == 0
    engine = open_database(f"sqlite:///{database}")
    try:
        want = expected(lines)
        got = stored(engine)
        assert got == want, (sum((got - want).values()), sum((want - got).values()))
        assert sum(want.values()) > 2000
    finally:
        engine.dispose()
    log_text = daemon.stderr.read_text()
    assert "Traceback" not in log_text


def _reader_round(pipeline: Pipeline, reader: SourceReader, batch: LiveBatch | None) -> None:
    if batch is None:
        return
    with pipeline.engine.begin() as connection:
        result = pipeline.commit(connection, reader, batch)
    pipeline.pacer.settle(result, time.monotonic())


def test_a_restart_reads_again_from_the_checkpoint_and_stores_nothing_twice(
    tmp_path: Path,
) -> None:
    lines = simulated(12_000)
    log = tmp_path / "mail.log"
    database = tmp_path / "relaywatch.db"
    settings = load_settings(config(tmp_path, f"sqlite:///{database}", 1, [(log, "mx1")]))
    source = settings.sources[0]
    engine = open_database(settings.database.url)
    pipeline = Pipeline(settings, engine)
    writer = Writer(log, lines)
    try:
        reader = SourceReader(source, pipeline.classifier)
        writer.write(0.2)
        first = reader.read()
        assert first is not None and first.checkpoint is not None  # the first read saves one
        _reader_round(pipeline, reader, first)
        for _ in range(3):  # within CHECKPOINT_EVERY: the position moves, the checkpoint not
            writer.write(0.1)
            batch = reader.read()
            assert batch is not None and batch.checkpoint is None
            _reader_round(pipeline, reader, batch)
        old_file = batch.position.inode
        writer.rotate()  # a read that ends in another file checkpoints at once
        writer.write(0.1)
        while batch is not None and batch.position.inode == old_file:
            batch = reader.read()  # the rest of the old file first
            _reader_round(pipeline, reader, batch)
        assert batch is not None and batch.checkpoint is not None
        writer.write(0.1)
        _reader_round(pipeline, reader, reader.read())
        reader.close()  # a crash: the correlator's state since the checkpoint is lost

        with engine.connect() as connection:
            saved = load_position(connection, "mx1", str(log))
        assert saved is not None
        assert saved.checkpoint.position.fingerprint == saved.read.fingerprint
        assert saved.checkpoint.position.offset < saved.read.offset
        reader = SourceReader(source, pipeline.classifier, saved)
        writer.write(1.0)
        while (batch := reader.read()) is not None:
            _reader_round(pipeline, reader, batch)
        _reader_round(pipeline, reader, reader.last_batch(None))  # a clean stop
        reader.close()
        with engine.connect() as connection:
            saved = load_position(connection, "mx1", str(log))
        assert saved is not None and saved.checkpoint.position == saved.read
        assert stored(engine) == expected(lines)
    finally:
        engine.dispose()


def test_sigterm_stores_what_was_read_and_exits_0(
    tmp_path: Path, running: Callable[[Path, int], Running]
) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    port = free_port()
    database = tmp_path / "relaywatch.db"
    conf = config(tmp_path, f"sqlite:///{database}", port, [(log, "mx1")])
    daemon = running(conf, port)
    start = datetime.now(UTC)
    log.write_text("".join(line + "\n" for line in probe(start, "203.0.113.7")))
    wait_for(
        lambda: get_json(f"http://127.0.0.1:{port}/v1/offenders/203.0.113.7")[0] == 200,
        10, "the offender",
    )  # fmt: skip
    assert daemon.stop(signal.SIGTERM) == 0
    err = daemon.stderr.read_text()
    assert "following" in err and "Traceback" not in err


def test_sighup_reloads_the_sources(
    tmp_path: Path, running: Callable[[Path, int], Running]
) -> None:
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    now = datetime.now(UTC)
    first.write_text("".join(line + "\n" for line in probe(now, "203.0.113.1")))
    second.write_text("".join(line + "\n" for line in probe(now, "203.0.113.2")))
    port = free_port()
    url = f"sqlite:///{tmp_path / 'relaywatch.db'}"
    conf = config(tmp_path, url, port, [(first, "mx1")])
    daemon = running(conf, port)
    offender = f"http://127.0.0.1:{port}/v1/offenders/"
    wait_for(lambda: get_json(offender + "203.0.113.1")[0] == 200, 10, "the first offender")
    assert get_json(offender + "203.0.113.2")[0] == 404
    config(tmp_path, url, port, [(first, "mx1"), (second, "mx2")])
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: get_json(offender + "203.0.113.2")[0] == 200, 10, "the second offender")
    assert len(daemon.health()["sources"]) == 2
    assert daemon.stop() == 0
    assert "configuration reloaded: 2 sources" in daemon.stderr.read_text()


def in_thread(daemon: Daemon) -> threading.Thread:
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    return thread


def test_a_locked_database_holds_the_batch_says_so_and_catches_up(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    port = free_port()
    database = tmp_path / "relaywatch.db"
    conf = config(tmp_path, f"sqlite:///{database}", port, [(log, "mx1")])
    daemon = Daemon(load_settings(conf, environ={}), conf, poll=0.2, busy_timeout=0.2)
    thread = in_thread(daemon)
    health = f"http://127.0.0.1:{port}/healthz"
    wait_for(lambda: daemon.status.readers != [], 20, "the daemon")
    lines = simulated(3000)
    blocker = sqlite3.connect(database, timeout=5)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # another writer that does not let go
        log.write_text("".join(line + "\n" for line in lines))
        wait_for(lambda: get_json(health)[0] == 503, 20, "healthz to report the database")
        body = get_json(health)[1]
        assert body["status"] == "degraded" and "cannot write since" in body["database"]
        assert body["sources"][0]["held_transactions"] > 0
    finally:
        blocker.rollback()
        blocker.close()
    wait_for(lambda: get_json(health)[0] == 200, 30, "healthz to recover")
    wait_for(lambda: daemon.status.sources()[0]["lag_bytes"] == 0, 30, "the daemon to catch up")
    daemon.stop()
    thread.join(30)
    engine = open_database(f"sqlite:///{database}")
    try:
        assert stored(engine) == expected(lines)
    finally:
        engine.dispose()


def test_two_relay_hosts_share_one_postgresql_database(tmp_path: Path, postgresql_url: str) -> None:
    url = postgresql_url
    open_database(url).dispose()  # the schema first: Alembic migrates one thread at a time
    now = datetime.now(UTC)
    logs = {"mx1": tmp_path / "mx1.log", "mx2": tmp_path / "mx2.log"}
    traffic_of = {"mx1": simulated(6000, seed=1), "mx2": simulated(6000, seed=2)}
    spammer = "198.51.100.77"  # refused twice on mx1 and three times on mx2
    probes = {
        "mx1": [line for n in range(2) for line in probe(now, spammer, pid=7000 + n)],
        "mx2": [line for n in range(3) for line in probe(now, spammer, pid=8000 + n)],
    }
    daemons, threads = [], []
    for host, log in logs.items():
        log.write_text("")
        directory = tmp_path / host
        directory.mkdir()
        conf = config(directory, url, free_port(), [(log, host)])
        daemons.append(Daemon(load_settings(conf, environ={}), conf, poll=0.2))
        threads.append(in_thread(daemons[-1]))
    wait_for(lambda: all(d.status.readers for d in daemons), 30, "both daemons")
    writers = [
        threading.Thread(target=Writer(logs[h], traffic_of[h] + probes[h], seed=n).write,
                         args=(1.0, 0.001))
        for n, h in enumerate(logs)
    ]  # fmt: skip
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    for daemon in daemons:
        wait_for(lambda d=daemon: d.status.sources()[0]["lag_bytes"] == 0, 60, "catch-up")
        daemon.stop()
    for thread in threads:
        thread.join(30)
    engine = open_database(url)
    try:
        for host in logs:
            assert stored(engine, host) == expected(traffic_of[host] + probes[host])
        with engine.connect() as connection:
            refused = connection.execute(
                text("SELECT refused_relays FROM offenders WHERE ip = :ip"), {"ip": spammer}
            ).scalar()
            blocks = connection.execute(
                text("SELECT count(*) FROM decisions WHERE value = :ip"), {"ip": spammer}
            ).scalar()
        assert (refused, blocks) == (5, 1)
    finally:
        engine.dispose()


def test_a_database_not_there_at_start_is_waited_for(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("".join(line + "\n" for line in probe(datetime.now(UTC), "203.0.113.9")))
    port = free_port()
    database = tmp_path / "later" / "relaywatch.db"  # SQLite cannot create it yet
    conf = config(tmp_path, f"sqlite:///{database}", port, [(log, "mx1")])
    daemon = Daemon(load_settings(conf, environ={}), conf, poll=0.2)
    thread = in_thread(daemon)
    time.sleep(1.0)
    assert thread.is_alive() and not daemon.status.readers
    database.parent.mkdir()
    offender = f"http://127.0.0.1:{port}/v1/offenders/203.0.113.9"

    wait_for(lambda: answers_200(offender), 30, "the offender once the database is there")
    daemon.stop()
    thread.join(30)
    assert not thread.is_alive()


class Proxy:
    """A TCP relay on 127.0.0.1 to PostgreSQL that can be cut off and restored, to make the
    database unreachable for a while."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._listener is None:
            return
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept(); close() alone does not
        self._listener.close()
        self._listener = None
        for s in self._sockets:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def test_an_unreachable_database_is_retried_and_nothing_is_lost(
    tmp_path: Path, postgresql_url: str
) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(postgresql_url)
    proxy = Proxy((url.host or "127.0.0.1", url.port or 5432))
    through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    log = tmp_path / "mail.log"
    log.write_text("")
    port = free_port()
    conf = config(tmp_path, through_proxy, port, [(log, "mx1")])
    daemon = Daemon(load_settings(conf, environ={}), conf, poll=0.2)
    thread = in_thread(daemon)
    health = f"http://127.0.0.1:{port}/healthz"
    try:
        wait_for(lambda: daemon.status.readers != [], 30, "the daemon")
        lines = simulated(20_000)  # several reads' worth: one read takes up to 1 MiB
        writer = Writer(log, lines)
        writer.write(0.1)
        writer.finish_line()
        wait_for(lambda: daemon.status.sources()[0]["lag_bytes"] == 0, 30, "the first lines")
        proxy.down()
        writer.write(0.2)
        wait_for(lambda: "cannot write since" in get_json(health)[1]["database"], 30,
                 "healthz to report the outage")  # fmt: skip
        assert get_json(health)[0] == 503
        writer.write(1.0)
        time.sleep(1.0)
        held = daemon.status.sources()[0]
        assert held["held_transactions"] > 0 and held["lag_bytes"] > 0  # it stopped reading
        proxy.up()
        wait_for(lambda: get_json(health)[0] == 200, 60, "healthz to recover")
        wait_for(lambda: daemon.status.sources()[0]["lag_bytes"] == 0, 60, "the catch-up")
    finally:
        daemon.stop()
        thread.join(30)
        proxy.down()
    engine = open_database(postgresql_url)
    try:
        assert stored(engine) == expected(lines)
    finally:
        engine.dispose()
