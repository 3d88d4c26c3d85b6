"""Joins the events of one relay host into transactions.

Two keys tie events together (``reference/log-formats.md`` §1.3): the SMTP server process
(host, program, pid) knows the client from ``connect`` to ``disconnect``, and a queue id
(host, queue id) collects sender, recipients and deliveries until the message is ``removed``.
Recipients refused before a queue file exists (``NOQUEUE``) form a transaction of their own
per session and envelope sender.  Families that log the SMTP conversation itself (Exchange
and IIS protocol logs, Exchange 5.5 IMS) give commands and replies: a session's ``MAIL FROM``
starts a transaction, the replies to its ``RCPT TO`` commands accept or refuse recipients, and
the end of ``DATA``, ``RSET``, ``QUIT`` or the end of the session finish it.  The keys each
family gives its events are described in :class:`parsers.events.Session`.  State is bounded:
a session or message that has seen no event for a while (in log time) is flushed as it stands.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from detector.transactions import Outcome, Recipient, Transaction
from parsers.events import EVENT_FIELDS, NOT_LOGGED, Event, Kind
from parsers.protocol import ENDS_AT_LAST_RECIPIENT, ENDS_AT_REMOVED

SESSION_TIMEOUT = 600.0
"""Seconds (log time) after which a session that never disconnected is dropped."""
MESSAGE_TIMEOUT = 7200.0
"""Seconds (log time) a queued message may go without a line before it is flushed unfinished;
covers Postfix's default retry back-off (up to 4000 s) for deferred mail."""
_EXPIRE_EVERY = 60.0  # seconds of log time between sweeps for stale state
PENDING_COMMANDS = 100
"""Unanswered commands kept per session (pipelining sends a few; a log that lost replies
must not grow without bound)."""
_FINAL = frozenset({Outcome.DELIVERED, Outcome.BOUNCED, Outcome.EXPIRED})

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
    expected: int | None = None  # recipients the server accepted (nrcpt), when it says

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
    sasl_user: str | None = None
    pending: list[Event] = field(default_factory=list)  # commands not answered yet, in order
    envelope: _Builder | None = None  # the MAIL transaction of a protocol log


class Correlator:
    """Feed it events in log order; it hands back finished transactions.

    ``host`` names the relay host the events come from (the source's ``host``);
    ``internal_ip`` says whether a client address is in an internal network;
    ``source_file`` is the fingerprint of the log file being read, which the transactions
    started from now on are stored under (a follower changes it when the log rotates);
    ``message_end`` says how the family ends a message (see :mod:`parsers.protocol`).
    """

    def __init__(
        self,
        host: str,
        session_timeout: float = SESSION_TIMEOUT,
        message_timeout: float = MESSAGE_TIMEOUT,
        source_file: str | None = None,
        internal_ip: Callable[[str], bool] = lambda ip: False,
        message_end: str = ENDS_AT_REMOVED,
    ) -> None:
        self.host = host
        self.internal_ip = internal_ip
        self.source_file = source_file
        self.message_end = message_end
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
            Kind.RECIPIENT: self._recipient,
            Kind.REMOVED: self._removed,
            Kind.CLIENT: self._client,
            Kind.CONNECT: self._connect,
            Kind.DISCONNECT: self._disconnect,
            Kind.REJECT: self._reject,
            Kind.PERMIT: self._permit,
            Kind.AUTH: self._auth,
            Kind.COMMAND: self._command,
            Kind.REPLY: self._reply,
        }  # other kinds (SASL failures, notes, postscreen, headers) are not parts of transactions

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

    def _auth(self, event: Event, where: tuple[int, str], _out: list[Transaction]) -> None:
        session = self._session(event)
        session.sasl_user = event.sasl_user or session.sasl_user or NOT_LOGGED
        if session.envelope is not None:
            session.envelope.add(where, event.time)

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
        elif session.client_ip is None and event.client_ip is not None:
            session.client_ip, session.client_name = event.client_ip, event.client_name
        session.last = event.time
        return session

    def _end_session(self, key: tuple[str, str, str | None], out: list[Transaction]) -> None:
        session = self._sessions.pop(key, None)
        if session is not None:
            if session.refused is not None:
                out.append(session.refused.build(self.host))
            self._close_envelope(session, out)

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

    def _done(self, message: _Builder, out: list[Transaction]) -> None:
        """Finish ``message`` if its family logs no end and every recipient has an outcome."""
        if self.message_end != ENDS_AT_LAST_RECIPIENT or message.expected is None:
            return
        final = sum(1 for r in message.recipients.values() if r.outcome in _FINAL)
        if final >= message.expected:
            self._messages.pop(message.queue_id or "", None)
            out.append(message.build(self.host))

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
            return
        if event.kind == Kind.PICKUP:
            message.local_submission = True
            message.sender = event.sender
        elif event.status == "expired":
            for key, recipient in message.recipients.items():
                if recipient.outcome in (Outcome.DEFERRED, Outcome.QUEUED):
                    message.recipients[key] = recipient._replace(
                        outcome=Outcome.EXPIRED, time=event.time
                    )
            return
        else:  # the server has the message: its SMTP conversation is over
            message.sender = event.sender
            message.size = event.size
            self._take_client(message, event)
        message.message_id = event.message_id or message.message_id
        if event.nrcpt is not None:
            message.expected = event.nrcpt
        for address in event.recipients or ((event.recipient,) if event.recipient else ()):
            message.recipients.setdefault(
                (address, None), Recipient(address, Outcome.QUEUED, event.time)
            )
        if message.texts and self._ours(message):
            message.drop_texts()
        self._done(message, out)

    def _take_client(self, message: _Builder, event: Event) -> None:
        """What the event, or the session it came from, says of the message's client."""
        session = self._sessions.get((event.host, event.program, event.pid))
        if event.client_ip is not None:
            message.client_ip, message.client_name = event.client_ip, event.client_name
        elif session is not None and message.client_ip is None:
            message.client_ip, message.client_name = session.client_ip, session.client_name
        message.helo = event.helo or message.helo or (session.helo if session else None)
        message.sasl_user = (
            event.sasl_user or message.sasl_user or (session.sasl_user if session else None)
        )

    def _recipient(self, event: Event, where: tuple[int, str], _out: list[Transaction]) -> None:
        message = self._message(event, where)
        if message.client_ip is None:
            self._take_client(message, event)
        message.sender = event.sender if event.sender is not None else message.sender
        address = event.recipient or ""
        message.recipients.setdefault(
            (address, event.orig_recipient),
            Recipient(address, Outcome.QUEUED, event.time, event.orig_recipient),
        )

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
        return ours and not any(
            r.refused_as_relay or r.refusal_unexplained for r in message.recipients.values()
        )

    def _delivery(self, event: Event, where: tuple[int, str], out: list[Transaction]) -> None:
        message = self._message(event, where)
        agent = event.agent or event.program.rpartition("/")[2]
        outcome = _DELIVERY_OUTCOMES.get(event.status or "", Outcome.QUEUED)
        for address in event.recipients or (event.recipient or "",):
            message.recipients[(address, event.orig_recipient)] = Recipient(
                address, outcome, event.time, event.orig_recipient, None, event.enhanced,
                event.reason, event.relay, agent,
            )  # fmt: skip
        self._done(message, out)

    def _reject(self, event: Event, where: tuple[int, str], out: list[Transaction]) -> None:
        if event.pid is None and not event.queue_id:  # no session around it (Exim)
            target = _Builder(
                event.time, event.time, [], sender=event.sender, source_file=self.source_file
            )
            target.add(where, event.time)
            self._refuse(target, event)
            out.append(target.build(self.host))
            return
        session = self._session(event)
        session.helo = event.helo or session.helo
        if event.queue_id:
            target = self._message(event, where)
        else:
            target = self._refusals(session, event, where, out)
        if target.client_ip is None and event.client_ip is None:  # only the session names it
            target.client_ip, target.client_name = session.client_ip, session.client_name
        target.sasl_user = target.sasl_user or session.sasl_user
        self._refuse(target, event)

    def _refuse(self, target: _Builder, event: Event) -> None:
        target.helo = target.helo or event.helo
        target.client_ip = target.client_ip or event.client_ip
        target.client_name = target.client_name or event.client_name
        if event.recipient and event.stage in ("RCPT", "DATA", "BDAT"):
            target.recipients[(event.recipient, None)] = _refused(event.recipient, event)
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

    # -- protocol logs: commands and replies ------------------------------------------------

    def _command(self, event: Event, where: tuple[int, str], out: list[Transaction]) -> None:
        session = self._session(event)
        verb = event.stage
        if verb in ("HELO", "EHLO"):
            session.helo = event.helo or session.helo
        elif verb == "MAIL":
            self._close_envelope(session, out)
            session.envelope = self._envelope(session, event)
        if session.envelope is not None:
            session.envelope.add(where, event.time)
        if event.code is not None:  # answered on the same line
            self._answer(session, event, event, out)
        else:
            if len(session.pending) >= PENDING_COMMANDS:
                del session.pending[0]
            session.pending.append(event)

    def _reply(self, event: Event, where: tuple[int, str], out: list[Transaction]) -> None:
        session = self._session(event)
        if session.envelope is not None:
            session.envelope.add(where, event.time)
        pending = session.pending
        if event.stage is None:
            if pending:
                self._answer(session, pending.pop(0), event, out)
            return
        for index, command in enumerate(pending):  # a reply that says which verb it answers
            if command.stage == event.stage:
                del pending[: index + 1]  # replies come in order: the earlier ones went unlogged
                self._answer(session, command, event, out)
                return
        # no such command waits: it came before the log began, and the reply answers nothing

    def _envelope(self, session: _Session, event: Event) -> _Builder:
        envelope = _Builder(
            event.time, event.time, [], sender=event.sender, source_file=self.source_file
        )
        envelope.client_ip, envelope.client_name = session.client_ip, session.client_name
        envelope.helo, envelope.sasl_user = session.helo, session.sasl_user
        return envelope

    def _answer(
        self, session: _Session, command: Event, reply: Event, out: list[Transaction]
    ) -> None:
        verb, code = command.stage, reply.code
        accepted = code is not None and code < 400
        envelope = session.envelope
        if verb == "RCPT" and command.recipient is not None:
            if envelope is None:  # the log began after MAIL FROM
                envelope = session.envelope = self._envelope(session, command)
            address = command.recipient
            envelope.recipients[(address, None)] = (
                Recipient(address, Outcome.QUEUED, reply.time)
                if accepted
                else _refused(address, reply)
            )
        elif verb == "AUTH" and accepted:
            session.sasl_user = command.sasl_user or session.sasl_user or NOT_LOGGED
        elif verb in ("DATA", "BDAT") and code == 354:  # the next reply ends the message
            session.pending.insert(0, command._replace(stage="END-OF-DATA"))
        elif verb in ("DATA", "BDAT", "END-OF-DATA", "RSET", "QUIT"):
            if envelope is not None and not accepted and verb != "QUIT":
                envelope.reject_reason = reply.reason or f"{code}"
            self._close_envelope(session, out)
        elif verb == "MAIL" and envelope is not None and not accepted:
            envelope.reject_reason = reply.reason or f"{code}"

    def _close_envelope(self, session: _Session, out: list[Transaction]) -> None:
        envelope, session.envelope = session.envelope, None
        if envelope is not None and (envelope.recipients or envelope.reject_reason):
            out.append(envelope.build(self.host))

    # -- state kept across restarts ---------------------------------------------------------

    def snapshot(self, parser_state: object = None) -> str:
        """What is held (sessions and messages not finished yet), as JSON, for :meth:`restore`:
        stored with the position of the lines read, so a restart goes on where this stopped.
        ``parser_state`` is what the parser keeps (a header's columns), saved alongside."""
        return json.dumps({
            "sessions": [
                [list(key), s.client_ip, s.client_name, s.last, s.helo,
                 None if s.refused is None else _builder_state(s.refused), s.sasl_user,
                 [list(e) for e in s.pending],
                 None if s.envelope is None else _builder_state(s.envelope)]
                for key, s in self._sessions.items()
            ],
            "messages": [_builder_state(m) for m in self._messages.values()],
            "next_sweep": self._next_sweep,
            "parser": parser_state,
        }, separators=(",", ":"))  # fmt: skip

    def restore(self, snapshot: str) -> object:
        """Take back what :meth:`snapshot` saved; returns the parser's state saved with it."""
        state = json.loads(snapshot)
        self._sessions = {}
        for row in state["sessions"]:
            key, ip, name, last, helo, refused = row[:6]
            sasl_user, pending, envelope = row[6:9] if len(row) >= 9 else (None, [], None)
            self._sessions[(key[0], key[1], key[2])] = _Session(
                ip, name, last, helo, None if refused is None else _builder(refused),
                sasl_user, [_event(e) for e in pending],
                None if envelope is None else _builder(envelope),
            )  # fmt: skip
        self._messages = {}
        for saved in state["messages"]:
            message = _builder(saved)
            self._messages[message.queue_id or ""] = message
        self._next_sweep = state["next_sweep"]
        return state.get("parser")


def _refused(address: str, reply: Event) -> Recipient:
    """``address`` refused, as ``reply`` says."""
    return Recipient(
        address, Outcome.REJECTED, reply.time, None, reply.code, reply.enhanced, reply.reason,
        None, None, reply.relay_refused, reply.refusal_unexplained,
    )  # fmt: skip


def _event(fields: list[Any]) -> Event:
    event = Event(*fields[: len(EVENT_FIELDS)])
    recipients = event.recipients
    return event if recipients is None else event._replace(recipients=tuple(recipients))


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
