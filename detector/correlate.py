"""Joins the events of one relay host into transactions.

Two keys tie events together (``reference/log-formats.md`` §1.3): the SMTP server process
(host, program, pid) knows the client from ``connect`` to ``disconnect``, and a queue id
(host, queue id) collects sender, recipients and deliveries until the message is ``removed``.
Recipients refused before a queue file exists (``NOQUEUE``) form a transaction of their own
per session and envelope sender.  State is bounded: a session or message that has seen no
event for a while (in log time) is flushed as it stands.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from detector.transactions import Outcome, Recipient, Transaction
from parsers.events import Event, Kind

SESSION_TIMEOUT = 600.0
"""Seconds (log time) after which a session that never disconnected is dropped."""
MESSAGE_TIMEOUT = 7200.0
"""Seconds (log time) a queued message may go without a line before it is flushed unfinished;
covers Postfix's default retry back-off (up to 4000 s) for deferred mail."""
_EXPIRE_EVERY = 60.0  # seconds of log time between sweeps for stale state

_DELIVERY_OUTCOMES = {
    "sent": Outcome.DELIVERED,
    "deferred": Outcome.DEFERRED,
    "bounced": Outcome.BOUNCED,
    "expired": Outcome.EXPIRED,
    "deliverable": Outcome.DELIVERED,  # address verification probes
    "undeliverable": Outcome.BOUNCED,
}


@dataclass(slots=True)
class _Builder:
    """A transaction being assembled."""

    start: float
    last: float
    lines: list[tuple[int, str]]  # (offset, text); text "" once it cannot be evidence
    queue_id: str | None = None
    client_ip: str | None = None
    client_name: str | None = None
    helo: str | None = None
    sasl_user: str | None = None
    local_submission: bool = False
    sender: str | None = None
    message_id: str | None = None
    size: int | None = None
    reject_reason: str | None = None
    recipients: dict[tuple[str, str | None], Recipient] = field(default_factory=dict)
    source_file: str | None = None
    texts: bool = True  # keeps the text of its lines (see Correlator._ours)

    def add(self, where: tuple[int, str], time: float) -> None:
        """Take one more line (offset, text) of the transaction, logged at ``time``."""
        self.lines.append(where if self.texts else (where[0], ""))
        self.last = time

    def drop_texts(self) -> None:
        self.texts = False
        self.lines = [(offset, "") for offset, _ in self.lines]

    def build(self, host: str) -> Transaction:
        offsets, texts = zip(*self.lines, strict=True)
        return Transaction(  # positional: a named tuple builds faster so
            host, self.start, self.last, offsets, texts, self.source_file, self.queue_id,
            self.client_ip, self.client_name, self.helo, self.sasl_user, self.local_submission,
            self.sender, self.message_id, self.size, self.reject_reason,
            tuple(self.recipients.values()),
        )  # fmt: skip


@dataclass(slots=True)
class _Session:
    client_ip: str | None
    client_name: str | None
    last: float
    helo: str | None = None
    refused: _Builder | None = None  # NOQUEUE rejects of the current MAIL FROM


class Correlator:
    """Feed it events in log order; it hands back finished transactions.

    ``host`` names the relay host the events come from (the source's ``host``);
    ``internal_ip`` says whether a client address is in an internal network;
    ``source_file`` is the fingerprint of the log file being read, which the transactions
    started from now on are stored under (a follower changes it when the log rotates).
    """

    def __init__(
        self,
        host: str,
        session_timeout: float = SESSION_TIMEOUT,
        message_timeout: float = MESSAGE_TIMEOUT,
        source_file: str | None = None,
        internal_ip: Callable[[str], bool] = lambda ip: False,
    ) -> None:
        self.host = host
        self.internal_ip = internal_ip
        self.source_file = source_file
        self._sessions: dict[tuple[str, str, str | None], _Session] = {}
        self._messages: dict[str, _Builder] = {}
        self._session_timeout = session_timeout
        self._message_timeout = message_timeout
        self._next_sweep = 0.0
        self._handlers: dict[str, Callable[[Event, tuple[int, str], list[Transaction]], None]] = {
            Kind.DELIVERY: self._delivery,
            Kind.QUEUED: self._message_info,
            Kind.MESSAGE_ID: self._message_info,
            Kind.PICKUP: self._message_info,
            Kind.REMOVED: self._removed,
            Kind.CLIENT: self._client,
            Kind.CONNECT: self._connect,
            Kind.DISCONNECT: self._disconnect,
            Kind.REJECT: self._reject,
            Kind.PERMIT: self._permit,
        }  # other kinds (SASL failures, notes, postscreen) are events, not parts of transactions

    @property
    def pending(self) -> int:
        """Sessions and messages held in memory."""
        return len(self._sessions) + len(self._messages)

    def feed(self, event: Event, offset: int, line: str, out: list[Transaction]) -> None:
        """Take one event (from ``line``, at ``offset`` in its source); append finished ones."""
        handler = self._handlers.get(event.kind)
        if handler is not None:
            handler(event, (offset, line), out)
        if event.time >= self._next_sweep:
            self.expire(event.time, out)

    def _removed(self, event: Event, where: tuple[int, str], out: list[Transaction]) -> None:
        message = self._messages.pop(event.queue_id or "", None)
        if message is not None:
            message.add(where, event.time)
            out.append(message.build(self.host))

    def _connect(self, event: Event, _where: tuple[int, str], out: list[Transaction]) -> None:
        key = (event.host, event.program, event.pid)
        self._end_session(key, out)
        self._sessions[key] = _Session(event.client_ip, event.client_name, event.time)

    def _disconnect(self, event: Event, _where: tuple[int, str], out: list[Transaction]) -> None:
        self._end_session((event.host, event.program, event.pid), out)

    def _permit(self, event: Event, _where: tuple[int, str], _out: list[Transaction]) -> None:
        session = self._session(event)
        session.helo = event.helo or session.helo

    def expire(self, now: float, out: list[Transaction]) -> None:
        """Flush sessions and messages that have been quiet too long before ``now`` (log time)."""
        self._next_sweep = now + _EXPIRE_EVERY
        for key in [k for k, s in self._sessions.items() if now - s.last > self._session_timeout]:
            self._end_session(key, out)
        stale = [q for q, m in self._messages.items() if now - m.last > self._message_timeout]
        for queue_id in stale:
            out.append(self._messages.pop(queue_id).build(self.host))

    def flush(self, out: list[Transaction]) -> None:
        """Flush everything held (end of a batch import)."""
        for key in list(self._sessions):
            self._end_session(key, out)
        for message in self._messages.values():
            out.append(message.build(self.host))
        self._messages.clear()

    def _session(self, event: Event) -> _Session:
        key = (event.host, event.program, event.pid)
        session = self._sessions.get(key)
        if session is None:  # the log began after the connect line
            session = _Session(event.client_ip, event.client_name, event.time)
            self._sessions[key] = session
        session.last = event.time
        return session

    def _end_session(self, key: tuple[str, str, str | None], out: list[Transaction]) -> None:
        session = self._sessions.pop(key, None)
        if session is not None and session.refused is not None:
            out.append(session.refused.build(self.host))

    def _message(self, event: Event, where: tuple[int, str]) -> _Builder:
        queue_id = event.queue_id or ""
        message = self._messages.get(queue_id)
        if message is None:  # its first lines were in an earlier log, or it was re-queued
            message = _Builder(
                event.time, event.time, [], queue_id=queue_id, source_file=self.source_file
            )
            self._messages[queue_id] = message
        message.add(where, event.time)
        return message

    def _client(self, event: Event, where: tuple[int, str], out: list[Transaction]) -> None:
        earlier = self._messages.pop(event.queue_id or "", None)
        if earlier is not None:  # queue id reused without a "removed" line
            out.append(earlier.build(self.host))
        session = self._session(event)
        if session.refused is not None:  # a new MAIL FROM got a queue file: the refusals end
            out.append(session.refused.build(self.host))
            session.refused = None
        message = self._message(event, where)
        message.client_ip = event.client_ip
        message.client_name = event.client_name
        message.sasl_user = event.sasl_user
        message.helo = session.helo

    def _message_info(self, event: Event, where: tuple[int, str], out: list[Transaction]) -> None:
        message = self._message(event, where)
        if event.kind == Kind.MESSAGE_ID:
            message.message_id = event.message_id
        elif event.kind == Kind.PICKUP:
            message.local_submission = True
            message.sender = event.sender
        elif event.status == "expired":
            for key, recipient in message.recipients.items():
                if recipient.outcome in (Outcome.DEFERRED, Outcome.QUEUED):
                    message.recipients[key] = recipient._replace(
                        outcome=Outcome.EXPIRED, time=event.time
                    )
        else:  # qmgr has the message: its SMTP conversation is over
            message.sender = event.sender
            message.size = event.size
            if message.texts and self._ours(message):
                message.drop_texts()

    def _ours(self, message: _Builder) -> bool:
        """Whether a message received in full can never be a relay attempt, so that its lines
        are never evidence and their text need not be kept (deferred mail waits here for
        hours): its client is ours (a local submission, authenticated, or in an internal
        network) and no recipient was refused as a relay."""
        ours = (
            message.local_submission
            or message.sasl_user is not None
            or (message.client_ip is not None and self.internal_ip(message.client_ip))
        )
        return ours and not any(r.refused_as_relay for r in message.recipients.values())

    def _delivery(self, event: Event, where: tuple[int, str], _out: list[Transaction]) -> None:
        message = self._message(event, where)
        address = event.recipient or ""
        message.recipients[(address, event.orig_recipient)] = Recipient(
            address, _DELIVERY_OUTCOMES.get(event.status or "", Outcome.QUEUED), event.time,
            event.orig_recipient, None, event.enhanced, event.reason, event.relay,
            event.program.rpartition("/")[2],
        )  # fmt: skip

    def _reject(self, event: Event, where: tuple[int, str], out: list[Transaction]) -> None:
        session = self._session(event)
        session.helo = event.helo or session.helo
        if event.queue_id:
            target = self._message(event, where)
        else:
            target = self._refusals(session, event, where, out)
        target.helo = target.helo or event.helo
        target.client_ip = target.client_ip or event.client_ip
        target.client_name = target.client_name or event.client_name
        if event.recipient and event.stage in ("RCPT", "DATA", "BDAT"):
            target.recipients[(event.recipient, None)] = Recipient(
                event.recipient, Outcome.REJECTED, event.time, None, event.code, event.enhanced,
                event.reason, None, None, event.relay_refused,
            )  # fmt: skip
        else:
            target.reject_reason = event.reason

    def _refusals(
        self, session: _Session, event: Event, where: tuple[int, str], out: list[Transaction]
    ) -> _Builder:
        """The NOQUEUE transaction of the session's current MAIL FROM."""
        refused = session.refused
        if refused is not None and refused.sender != event.sender:
            out.append(refused.build(self.host))
            refused = None
        if refused is None:
            refused = _Builder(
                event.time, event.time, [], sender=event.sender, source_file=self.source_file
            )
            session.refused = refused
        refused.add(where, event.time)
        return refused

    # -- state kept across restarts ---------------------------------------------------------

    def snapshot(self) -> str:
        """What is held (sessions and messages not finished yet), as JSON, for :meth:`restore`:
        stored with the position of the lines read, so a restart goes on where this stopped."""
        return json.dumps({
            "sessions": [
                [list(key), s.client_ip, s.client_name, s.last, s.helo,
                 None if s.refused is None else _builder_state(s.refused)]
                for key, s in self._sessions.items()
            ],
            "messages": [_builder_state(m) for m in self._messages.values()],
            "next_sweep": self._next_sweep,
        }, separators=(",", ":"))  # fmt: skip

    def restore(self, snapshot: str) -> None:
        """Take back what :meth:`snapshot` saved."""
        state = json.loads(snapshot)
        self._sessions = {
            (key[0], key[1], key[2]): _Session(
                ip, name, last, helo, None if refused is None else _builder(refused)
            )
            for key, ip, name, last, helo, refused in state["sessions"]
        }
        self._messages = {}
        for saved in state["messages"]:
            message = _builder(saved)
            self._messages[message.queue_id or ""] = message
        self._next_sweep = state["next_sweep"]


_BUILDER_FIELDS = tuple(f.name for f in fields(_Builder) if f.name not in ("lines", "recipients"))


def _builder_state(builder: _Builder) -> dict[str, object]:
    state: dict[str, object] = {name: getattr(builder, name) for name in _BUILDER_FIELDS}
    state["lines"] = builder.lines
    state["recipients"] = [list(r) for r in builder.recipients.values()]
    return state


def _builder(state: dict[str, Any]) -> _Builder:
    recipients = [Recipient(*r) for r in state["recipients"]]
    return _Builder(
        **{name: state[name] for name in _BUILDER_FIELDS if name in state},  # older: defaults
        lines=[(offset, text) for offset, text in state["lines"]],
        recipients={(r.address, r.orig_address): r for r in recipients},
    )
