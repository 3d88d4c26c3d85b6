"""The Postfix policy delegation service (sink ``postfix-policy``): smtpd asks it about every
recipient (``check_policy_service inet:127.0.0.1:10040`` after ``reject_unauth_destination``)
and it answers ``REJECT`` for a blocked client, from memory, and records every request.

The protocol (Postfix's SMTPD_POLICY_README): smtpd keeps the connection open and sends one
request at a time, ``name=value`` lines ending with an empty line; the answer is exactly one
``action=…`` line and an empty line.  Unknown attributes are ignored.  In trouble (a line that
is not ``name=value``, an empty request, a ``client_address`` missing or not an address, a
request over 64 KiB) the server sends nothing, logs a warning and closes that connection; smtpd
then tries again and finally applies its ``smtpd_policy_service_default_action``.  With
``dry_run`` every answer is ``DUNNO``, and the records say which decision would have refused.

Threads and hand-offs:

- :meth:`PolicySink.sync` (the daemon's thread) builds a new :class:`_Table` from the active
  decisions and swaps it in with one assignment; the server thread reads that attribute once
  per request, so it sees the old table or the new one, never half of one.  A decision that
  expires between two syncs stops being enforced at its ``expires_at`` all the same.
- :meth:`PolicySink.start` binds the socket in the caller's thread (a port in use is a
  :class:`~detector.errors.ConfigError` there and then) and serves it with asyncio in a daemon
  thread.  No request ever waits on a database: the answer comes from the table alone.
- Every answered request becomes a :class:`PolicyRequest` appended to one bounded buffer (the
  oldest record is dropped, and counted, when it is full), which the daemon empties with
  :meth:`PolicySink.drain` and stores in its own transaction.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import ipaddress
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from detector.config import SinkSettings
from detector.decide import Decision, normal_value, refusal_text
from detector.errors import ConfigError
from detector.sinks.sync import SyncResult, blocked, in_force

log = logging.getLogger(__name__)

SINK_TYPE = "postfix-policy"
DEFAULT_LISTEN = "127.0.0.1:10040"
MAX_REQUEST = 64 * 1024  # bytes before the empty line that ends a request
BUFFER_SIZE = 50_000  # records waiting for the consumer: 10 s at 5,000 requests/s, ~30 MB
START_TIMEOUT = 10.0  # seconds for the server thread to start serving
STOP_TIMEOUT = 10.0  # seconds for the server thread to finish after close()
DUNNO = "DUNNO"
_DUNNO_REPLY = b"action=DUNNO\n\n"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One request smtpd sent and what relaywatch made of it.

    ``action`` is the answer sent, without ``action=`` (``REJECT relaywatch decision 12: …`` or
    ``DUNNO``); ``decision_id`` is the decision that matched the client.  In a dry run the
    answer is always ``DUNNO``: a ``decision_id`` then names the REJECT that would have been
    sent, and ``dry_run`` is true.  Attributes smtpd left out are empty strings; ``time`` is
    when the request was read (UTC epoch seconds).
    """

    time: float
    protocol_state: str
    client_address: str
    client_name: str
    helo_name: str
    sender: str
    recipient: str
    sasl_username: str
    queue_id: str
    instance: str
    action: str
    decision_id: int | None
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class PolicyStats:
    """Counters since :meth:`PolicySink.start`, and the state now."""

    requests: int  # answered
    rejects: int  # answered REJECT
    would_reject: int  # matched a decision but answered DUNNO (dry run)
    bad_requests: int  # connections closed in trouble, without an answer
    connections: int  # open now
    connections_total: int
    dropped: int  # records dropped because nobody took them in time
    buffered: int  # records waiting for the consumer
    entries: int  # values enforced (IPs, ranges, users)


class _Entry(NamedTuple):
    """What a blocked value gets: the decision's id and end, and the answer, ready to send."""

    decision_id: int
    expires: float  # UTC epoch seconds
    action: str
    reply: bytes


class _Table:
    """The blocked values, built once by :func:`build_table` and never changed afterwards.

    Single addresses are looked up as integers, one dict per IP version; ranges are grouped by
    prefix length, longest first, so a lookup costs one dict access per prefix length in use.
    Users (scope ``user``) are matched on ``sasl_username``.
    """

    __slots__ = ("exact", "ranges", "signature", "size", "users")

    def __init__(
        self,
        exact: dict[int, dict[int, _Entry]],
        ranges: dict[int, list[tuple[int, dict[int, _Entry]]]],
        users: dict[str, _Entry],
        signature: frozenset[tuple[str, int, float]],
    ) -> None:
        self.exact = exact  # version → address → entry
        self.ranges = ranges  # version → [(netmask, network address → entry)]
        self.users = users
        self.signature = signature  # what sync() compares to tell a change
        self.size = len(signature)

    def lookup(self, address: Address, sasl_username: str, now: float) -> _Entry | None:
        """The entry that blocks this client at ``now`` (epoch seconds), or ``None``: the
        address itself first, then the narrowest range, then the SASL user."""
        version = address.version
        key = int(address)
        if version == 6 and key >> 32 == 0xFFFF:  # ::ffff:a.b.c.d is a.b.c.d
            version, key = 4, key & 0xFFFFFFFF
        entry = self.exact[version].get(key)
        if entry is not None and now < entry.expires:
            return entry
        for netmask, networks in self.ranges[version]:
            entry = networks.get(key & netmask)
            if entry is not None and now < entry.expires:
                return entry
        if sasl_username:
            entry = self.users.get(sasl_username)
            if entry is not None and now < entry.expires:
                return entry
        return None


def _entry(decision: Decision) -> _Entry:
    action = f"REJECT {refusal_text(decision)}"
    reply = f"action={action}\n\n".encode()
    return _Entry(decision.id, decision.expires_at.timestamp(), action, reply)


def build_table(decisions: Sequence[Decision], now: datetime) -> tuple[_Table, list[str]]:
    """The table of the decisions in force at ``now`` (as every sink chooses them:
    :func:`~detector.sinks.sync.blocked`), and one line for each decision whose value cannot
    be enforced.  User decisions, which IP sinks leave out, are enforced here on
    ``sasl_username``; of several on one user, the one that ends last is kept."""
    exact: dict[int, dict[int, _Entry]] = {4: {}, 6: {}}
    by_prefix: dict[tuple[int, int], dict[int, _Entry]] = {}
    users: dict[str, _Entry] = {}
    entries, problems = blocked(decisions, now)
    for entry in entries:
        network = entry.network
        if network.prefixlen == network.max_prefixlen:
            table = exact[network.version]
        else:
            table = by_prefix.setdefault((network.version, network.prefixlen), {})
        table[int(network.network_address)] = _entry(entry.decision)
    for decision in in_force(decisions, now):
        if decision.scope == "user":
            kept = users.get(decision.value)
            if kept is None or decision.expires_at.timestamp() > kept.expires:
                users[decision.value] = _entry(decision)

    ranges: dict[int, list[tuple[int, dict[int, _Entry]]]] = {4: [], 6: []}
    for (version, prefixlen), networks in sorted(by_prefix.items(), key=lambda kv: -kv[0][1]):
        bits = 32 if version == 4 else 128
        ranges[version].append((((1 << prefixlen) - 1) << (bits - prefixlen), networks))
    signature: set[tuple[str, int, float]] = {
        (normal_value(e.network), e.decision.id, e.decision.expires_at.timestamp()) for e in entries
    }
    signature.update((f"user {name}", e.decision_id, e.expires) for name, e in users.items())
    return _Table(exact, ranges, users, frozenset(signature)), problems


_EMPTY = _Table({4: {}, 6: {}}, {4: [], 6: []}, {}, frozenset())


class ListenAddress(NamedTuple):
    """Where the service listens: ``path`` for a UNIX socket, else ``host`` and ``port``."""

    host: str
    port: int
    path: Path | None

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(listen: str) -> ListenAddress:
    """``"127.0.0.1:10040"``, ``"[::1]:10040"`` (``inet:`` in front is allowed, as in
    main.cf) or ``"unix:/path/to/socket"``; port 0 takes a free port."""
    if listen.startswith("unix:"):
        path = listen[len("unix:") :]
        if not path.startswith("/"):
            raise ConfigError(f"sinks.listen: {listen!r}: a UNIX socket needs an absolute path")
        return ListenAddress("", 0, Path(path))
    host, _, port = listen.removeprefix("inet:").rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"sinks.listen: {listen!r} is neither HOST:PORT (127.0.0.1:10040) nor unix:/PATH"
        )
    return ListenAddress(host, int(port), None)


class _Trouble(Exception):
    """A request the protocol says to answer with silence and a closed connection."""


class PolicySink:
    """The ``postfix-policy`` sink: a policy delegation server answering from the decisions of
    the last :meth:`sync`.

    The owner takes the :class:`PolicyRequest` records with :meth:`drain`.  ``clock`` (epoch
    seconds) decides which decisions have expired at a request.
    """

    def __init__(
        self,
        settings: SinkSettings,
        *,
        buffer_size: int = BUFFER_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.listen = parse_listen(settings.listen or DEFAULT_LISTEN)
        self.name = f"{SINK_TYPE} {self.listen}"
        self.dry_run = settings.dry_run
        self._clock = clock
        self._table = _EMPTY
        self._records: collections.deque[PolicyRequest] = collections.deque(maxlen=buffer_size)
        self._records_lock = threading.Lock()
        # counters: written by the server thread only
        self._requests = self._rejects = self._would_reject = self._bad_requests = 0
        self._connections_total = self._dropped = 0
        self._bound: ListenAddress | None = None
        self._socket_inode: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._open: set[_Connection] = set()  # changed by the server thread only

    # ------------------------------------------------------------------ the decisions

    def sync(self, decisions: Sequence[Decision], now: datetime) -> SyncResult:
        """Enforce exactly ``decisions`` (those active at ``now``) from the next request on."""
        table, problems = build_table(decisions, now)
        changed = table.signature != self._table.signature
        self._table = table  # one assignment: the server thread sees the old or the new table
        return self._result(table, problems, changed, "enforcing")

    def check(self, decisions: Sequence[Decision], now: datetime) -> SyncResult:
        """What :meth:`sync` would enforce, and the service's counters; changes nothing."""
        table, problems = build_table(decisions, now)
        return self._result(
            table, problems, table.signature != self._table.signature, "would enforce"
        )

    def _result(self, table: _Table, problems: list[str], changed: bool, verb: str) -> SyncResult:
        stats = self.stats()
        state = f"listening on {self._bound}" if self._bound else "not started"
        if self._thread is not None and not self._thread.is_alive():
            problems = [*problems, "the policy service stopped (see the log)"]
        mode = " (dry run: answers DUNNO)" if self.dry_run else ""
        message = (
            f"{verb} {table.size} entries{mode}; {state}; {stats.requests} requests answered, "
            f"{stats.rejects} rejected, {stats.would_reject} would have been, "
            f"{stats.bad_requests} refused as malformed, {stats.dropped} records dropped"
        )
        if problems:
            message += f"; {len(problems)} problems: " + "; ".join(problems[:5])
        return SyncResult(
            sink=self.name, ok=not problems, changed=changed, entries=table.size, message=message
        )

    def stats(self) -> PolicyStats:
        return PolicyStats(
            requests=self._requests, rejects=self._rejects, would_reject=self._would_reject,
            bad_requests=self._bad_requests, connections=len(self._open),
            connections_total=self._connections_total, dropped=self._dropped,
            buffered=len(self._records), entries=self._table.size,
        )  # fmt: skip

    # ------------------------------------------------------------------ the records

    def drain(self) -> list[PolicyRequest]:
        """The records buffered since the last call, oldest first."""
        with self._records_lock:
            records = list(self._records)
            self._records.clear()
        return records

    def _record(self, record: PolicyRequest) -> None:
        with self._records_lock:
            if len(self._records) == self._records.maxlen:
                self._dropped += 1
            self._records.append(record)

    # ------------------------------------------------------------------ the server

    @property
    def address(self) -> ListenAddress:
        """Where the service listens (the port it got when ``listen`` said port 0)."""
        if self._bound is None:
            raise RuntimeError("the policy service is not started")
        return self._bound

    def start(self) -> None:
        """Bind, and serve in a daemon thread; the socket accepts connections on return."""
        if self._thread is not None:
            raise RuntimeError("the policy service is already started")
        sock = self._bind()
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(
            target=self._run, args=(loop, sock, started), name="relaywatch-policy", daemon=True
        )
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            started.result(timeout=START_TIMEOUT)
        except BaseException:
            self.close()
            raise
        mode = " (dry run: answers DUNNO)" if self.dry_run else ""
        log.info("postfix-policy: listening on %s%s", self._bound, mode)

    def close(self) -> None:
        """Stop serving (open connections are closed) and join the server thread; the records
        not drained yet stay.  Safe to call twice."""
        loop, thread, stop = self._loop, self._thread, self._stop
        if loop is not None and thread is not None:
            if stop is not None and thread.is_alive():
                with contextlib.suppress(RuntimeError):  # the loop ended by itself
                    loop.call_soon_threadsafe(stop.set)
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                log.warning("postfix-policy: the server thread did not stop in %ss", STOP_TIMEOUT)
        self._loop = self._thread = self._stop = None
        self._remove_socket_file()
        self._bound = None

    def _bind(self) -> socket.socket:
        """The listening socket; :class:`ConfigError` when the address cannot be had."""
        listen = self.listen
        if listen.path is not None:
            self._remove_stale_socket(listen.path)
            family = socket.AF_UNIX
        else:
            family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if listen.path is not None:
                sock.bind(str(listen.path))
                os.chmod(listen.path, 0o666)  # smtpd runs as another user
                self._socket_inode = os.stat(listen.path).st_ino
                self._bound = listen
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not while listened on
                sock.bind((listen.host, listen.port))
                self._bound = ListenAddress(listen.host, sock.getsockname()[1], None)
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            self._remove_socket_file()
            self._bound = None
            raise ConfigError(
                f"postfix-policy sink: cannot listen on {listen}: {exc.strerror or exc}"
            ) from exc
        return sock

    @staticmethod
    def _remove_stale_socket(path: Path) -> None:
        """Remove a socket file nobody serves any more (left by a killed daemon); a live one,
        or a file that is not a socket, is an error."""
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ConfigError(f"postfix-policy sink: {path} exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                path.unlink()
                log.info("postfix-policy: removed the stale socket %s", path)
                return
        raise ConfigError(f"postfix-policy sink: {path} is in use by another server")

    def _remove_socket_file(self) -> None:
        path, inode = self.listen.path, self._socket_inode
        self._socket_inode = None
        if path is None or inode is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if path.lstat().st_ino == inode:  # still ours, not a successor's
                path.unlink()

    def _run(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        started: concurrent.futures.Future[None],
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(sock, started))
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            else:
                log.exception("postfix-policy: the server stopped")
        finally:
            sock.close()
            loop.close()

    async def _serve(self, sock: socket.socket, started: concurrent.futures.Future[None]) -> None:
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if self.listen.path is not None:
            server = await loop.create_unix_server(lambda: _Connection(self), sock=sock)
        else:
            server = await loop.create_server(lambda: _Connection(self), sock=sock)
        started.set_result(None)
        await self._stop.wait()
        # Stop accepting, then let the connections already accepted get their protocol before
        # the server closes: Python 3.11 leaks the socket of one whose task starts after.
        loop.remove_reader(sock.fileno())
        accepting = asyncio.all_tasks() - {asyncio.current_task()}
        await asyncio.gather(*accepting, return_exceptions=True)
        server.close()
        for connection in list(self._open):
            connection.abort()
        await asyncio.sleep(0)  # the aborted transports close their sockets

    def _opened(self, connection: _Connection) -> None:
        self._open.add(connection)
        self._connections_total += 1

    def _closed(self, connection: _Connection) -> None:
        self._open.discard(connection)

    def _trouble(self, peer: str, trouble: _Trouble) -> None:
        self._bad_requests += 1
        log.warning("postfix-policy: closing the connection of %s: %s", peer, trouble)

    def _answer(self, request: bytes) -> bytes:
        """The reply to one request (its lines, without the empty line that ends it), recorded;
        trouble raises :class:`_Trouble`."""
        attributes: dict[str, str] = {}
        for line in request.decode("utf-8", "replace").split("\n"):
            name, equals, value = line.partition("=")
            if not equals or not name:
                raise _Trouble(f"{line[:80]!r} is not a name=value line")
            attributes[name] = value
        client_address = attributes.get("client_address", "")
        if not client_address:
            raise _Trouble("a request without client_address")
        try:
            address = ipaddress.ip_address(client_address)
        except ValueError:
            raise _Trouble(f"client_address={client_address[:80]!r} is not an address") from None
        get = attributes.get
        sasl_username = get("sasl_username", "")
        now = self._clock()
        entry = self._table.lookup(address, sasl_username, now)
        self._requests += 1
        if entry is None:
            action, decision_id, reply = DUNNO, None, _DUNNO_REPLY
        elif self.dry_run:
            self._would_reject += 1
            action, decision_id, reply = DUNNO, entry.decision_id, _DUNNO_REPLY
        else:
            self._rejects += 1
            action, decision_id, reply = entry.action, entry.decision_id, entry.reply
        self._record(
            PolicyRequest(
                now, get("protocol_state", ""), client_address, get("client_name", ""),
                get("helo_name", ""), get("sender", ""), get("recipient", ""), sasl_username,
                get("queue_id", ""), get("instance", ""), action, decision_id, self.dry_run,
            )
        )  # fmt: skip
        return reply


class _Connection(asyncio.Protocol):
    """One smtpd connection: each request answered as soon as its empty line arrives."""

    def __init__(self, sink: PolicySink) -> None:
        self.sink = sink
        self.pending = b""  # the start of a request whose empty line has not come yet
        self.transport: asyncio.Transport | None = None
        self.peer = "a local client"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = f"{peer[0]} port {peer[1]}"
        self.sink._opened(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buffer = self.pending + data if self.pending else data
        start = 0
        try:
            while True:
                if buffer.startswith(b"\n", start):
                    raise _Trouble("an empty request")
                end = buffer.find(b"\n\n", start)
                if end < 0:
                    break
                if end - start > MAX_REQUEST:
                    raise _Trouble(f"a request over {MAX_REQUEST // 1024} KiB")
                self.transport.write(self.sink._answer(buffer[start:end]))
                start = end + 2
            if len(buffer) - start > MAX_REQUEST + 1:
                raise _Trouble(f"a request over {MAX_REQUEST // 1024} KiB")
        except _Trouble as trouble:
            self.sink._trouble(self.peer, trouble)
            self.pending = b""
            self.transport.close()  # after the answers already written
            return
        self.pending = buffer[start:]

    def pause_writing(self) -> None:  # smtpd does not read its answers: read no more
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pending:
            log.warning("postfix-policy: %s closed in the middle of a request", self.peer)
        self.sink._closed(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
