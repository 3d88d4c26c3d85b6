"""OpenSMTPD: syslog (classic or RFC 3339) lines of ``smtpd[pid]`` to events.

OpenSMTPD 6.x and later write ``<session id> <subsystem> <event> key=value ...``; 5.x wrote
sentences (``smtp-in: New session ...``, ``delivery: Ok for ...``).  The 16-hex session id is
the SMTP session (``pid`` of the events, program ``smtpd``): the client is named once, on its
``connected`` line, and every other line of the session refers to it by that id.  A message is
``msgid`` (8 hex digits); an envelope, one recipient of it, is ``evpid``, whose first 8 digits
are the ``msgid``, so deliveries (logged by another, ``mta``/``mda``, session) join the message
by it.  OpenSMTPD logs no end of a message: it is over once its ``nrcpt`` recipients have a
final outcome.

The grammar below is the single source of truth, compiled once into the one regular expression
it stands for (:mod:`parsers.grammar`).  Client addresses are taken only from the ``connected``
and ``New session`` lines, where OpenSMTPD writes the socket's peer before any text the client
controls; a failed command's text is the client's (quotes and all), so its reply is read after
the last ``" result="`` of the line, which a reply of OpenSMTPD never contains.

Sessions on the local socket (``address=local``: ``sendmail``, bounces) have no client
address; the parser remembers them (its state) and reports their messages as local
submissions (``PICKUP``), as Postfix's pickup does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import tzinfo
from typing import Final

import pyparsing as pp

from parsers import syslog
from parsers.events import Event, Kind
from parsers.grammar import IP, Message, compile_lines
from parsers.protocol import ENDS_AT_LAST_RECIPIENT

FAMILY: Final = "opensmtpd"

DELIVERY_STATUS: Final = {"Ok": "sent", "TempFail": "deferred", "PermFail": "bounced"}
"""``result=`` of a delivery in the correlator's words (a loop is logged as ``PermFail``)."""

DELIVERY_AGENTS: Final = {"mta": "smtp", "relay": "smtp", "mda": "local", "delivery": "local"}
"""The subsystem that logged a delivery (6.x ``mta``/``mda``, 5.x ``relay:``/``delivery:``) in
Postfix's words: ``mta`` relays over SMTP, ``mda`` delivers to a mailbox of this host."""

UNEXPLAINED_REFUSAL: Final = "Invalid recipient"
"""OpenSMTPD's reply to a recipient no rule accepts: an unknown local user and a foreign domain
it does not relay for get the same words, so the reply does not say "relay"."""

LOCAL_SESSIONS: Final = 1024
"""Open local-socket sessions remembered (each lasts the time of one submission)."""


def _re(pattern: str, name: str) -> pp.ParserElement:
    return pp.Regex(pattern).set_name(name)


def _lit(text: str) -> pp.Literal:
    return pp.Literal(text)


SESSION_ID = _re(r"(?P<pid>[0-9a-f]{16})", "session id")
EVPID = _re(r"(?P<queue_id>[0-9a-f]{8})[0-9a-f]{8}", "envelope id")
"""``evpid=3eb4bde56d3cecb4``: the message id is its first half."""
SENDER = _re(r"(?P<sender>[^>]*)", "sender")
RECIPIENT = _re(r"(?P<recipient>[^>]*)", "recipient")

ADDRESS = pp.MatchFirst(
    [
        _lit("local"),
        _re(rf"(?:\[|IPv6:)?(?P<client_ip>{IP})(?:%[^ \]]*)?\]?", "client address"),
    ]
)
"""``127.0.0.1``, ``[::1]`` (6.x), ``IPv6:::1`` (5.x and early 6.x), or ``local`` (the local
socket: no client address)."""

COMMAND = (
    r"(?:(?P<stage>[A-Za-z]++)"
    r"(?:(?<=[Rr][Cc][Pp][Tt]) [Tt][Oo]: *+<(?P<recipient>[^>\"]*+)>"
    r"|(?<=[Mm][Aa][Ii][Ll]) [Ff][Rr][Oo][Mm]: *+<(?P<sender>[^>\"]*+)>)?+)?+"
)
"""The verb of a failed command (as the client spelt it) and its address: the client's text.
Possessive throughout: what follows scans to the end of the line, and must do so once."""

REPLY = r"(?P<code>[2-5]\d\d)(?:[ -](?P<enhanced>[245]\.\d{1,3}\.\d{1,3})\b:?)?+ ?+"
"""``550 Invalid recipient: <x>``, ``503 5.5.1 Invalid command: ...``, ``421 4.3.0: Temporary
Error`` (5.x): the server's reply to a command."""

STATUS_TEXT = r"(?P<reason>(?:[2-5]\d\d[ -](?P<enhanced>[245]\.\d{1,3}\.\d{1,3})\b)?+.*)"
"""A delivery's ``stat=``: the next hop's reply (``250 2.0.0 Ok``) or the agent's word."""

# 6.x and later: "<session id> smtp <event> key=value ..."

CONNECTED = (
    _lit("connected address=")
    + ADDRESS
    + _lit(" host=")
    + _re(r"(?P<client_name>.+)", "client name")
)
"""``smtp connected address=203.0.113.5 host=mx.example.net`` (``host=<unknown>``: no name)."""

MESSAGE = _re(
    r"message msgid=(?P<queue_id>[0-9a-f]{8}) size=(?P<size>\d++) nrcpt=(?P<nrcpt>\d++)"
    r" proto=[A-Z]+",
    "message",
)
"""``smtp message msgid=3eb4bde5 size=440 nrcpt=1 proto=ESMTP``: the message is queued."""

ENVELOPE = (
    _lit("envelope evpid=")
    + EVPID
    + _lit(" from=<")
    + SENDER
    + _lit("> to=<")
    + RECIPIENT
    + _lit(">")
)
"""``smtp envelope evpid=3eb4bde56d3cecb4 from=<s> to=<r>``: one accepted recipient."""

DISCONNECTED = _re(r"disconnected reason=(?P<reason>.*)", "disconnected")
"""``smtp disconnected reason=quit`` (or ``reason="io-error: ..."``, quotes and all)."""

FAILED_COMMAND = (
    _lit('failed-command command="')
    + _re(COMMAND + r'(?>.*" result=")', "command")
    + _re(REPLY + r'(?>(?P<reason>.*)")\Z', "result")
)
"""``smtp failed-command command="RCPT TO:<x>" result="550 Invalid recipient: <x>"``.  The
command is the client's text, escaped but for its quotes: the reply starts after the last
``" result="``."""

AUTHENTICATED = _re(r"authentication user=(?P<sasl_user>[^ ]*+) result=ok\Z", "auth ok")
AUTH_FAILED = _re(
    r"authentication user=(?P<sasl_user>[^ ]*+) result=(?P<reason>permfail)\Z", "auth failed"
)
"""The user name is the client's, with spaces escaped (``\\040``)."""

SMTP_NOTE = _re(r"(?P<reason>(?:tls|bad-input|cert-check|authentication|timeout) .*)", "note")
"""``smtp tls ciphers=...``, ``smtp bad-input result="500 ..."``, an authentication that failed
for want of the server (``result=tempfail``): lines about a client that change nothing."""

FROM_TO = _lit(" from=<") + SENDER + _lit("> to=<") + RECIPIENT + _lit(">")

MTA_DELIVERY = (
    _re(r"(?P<agent>mta) delivery evpid=", "mta delivery")
    + EVPID
    + FROM_TO
    + _lit(" rcpt=<")
    + _re(r"(?:-(?=>)|(?P<orig_recipient>[^>]*+))", "original recipient")
    + _lit('> source="')
    + _re(r'[^"]*', "source")
    + _lit('" relay="')
    + _re(r'(?P<relay>[^"]*)', "relay")
    + _lit('" delay=')
    + _re(r"[^ ]*", "delay")
    + _lit(' result="')
    + _re(r"(?P<status>[A-Za-z]+)", "result")
    + _lit('" stat="')
    + _re(f'(?>{STATUS_TEXT}")\\Z', "status text")
)
"""``mta delivery evpid=E from=<s> to=<r> rcpt=<-> source="ip" relay="ip (name)" delay=0s
result="Ok" stat="250 OK"``: a relay over SMTP (``rcpt=`` names the address the client gave
when an alias changed it)."""

MDA_DELIVERY = (
    _re(r"(?P<agent>mda) delivery evpid=", "mda delivery")
    + EVPID
    + FROM_TO
    + pp.Opt(_lit(" rcpt=<") + _re(r"(?P<orig_recipient>[^>]*)", "original recipient") + _lit(">"))
    + _lit(" user=")
    + _re(r"[^ ]*", "user")
    + _lit(" delay=")
    + _re(r"[^ ]*", "delay")
    + _lit(" result=")
    + _re(r"(?P<status>[A-Za-z]+)", "result")
    + _lit(" stat=")
    + _re(r"(?P<reason>.*)", "status text")
)
"""``mda delivery evpid=E from=<s> to=<r> rcpt=<r> user=u delay=0s result=Ok stat=Delivered``."""

# 5.x: "smtp-in: ..." sentences, and "delivery:"/"relay:" lines.

SESSION_V5 = _lit(" on session ") + SESSION_ID

NEW_SESSION_V5 = (
    _lit("New session ")
    + SESSION_ID
    + _lit(" from host ")
    + _re(
        r"(?>(?P<client_name>.*) \[)"
        rf"(?:local|(?:IPv6:)?(?P<client_ip>{IP})(?:%[^ \]]*+)?)\]\Z",
        "client",
    )
)
"""``smtp-in: New session 08d856b172f69c5c from host mx.example.net [192.0.2.8]``: the address
is the last thing on the line (a reverse name is whatever its DNS owner wrote)."""

ACCEPTED_V5 = (
    _re(r"Accepted message (?P<queue_id>[0-9a-f]{8})", "message id")
    + SESSION_V5
    + _lit(": from=<")
    + SENDER
    + _lit(">, ")
    + pp.Opt(_lit("to=<") + RECIPIENT + _lit(">, "))
    + _re(r"size=(?P<size>\d++), ", "size")
    + pp.MatchFirst([_re(r"nrcpts=(?P<nrcpt>\d+)", "recipients"), _re(r"ndest=\d+", "dests")])
    + _re(r", proto=[A-Z]+", "proto")
)
"""``smtp-in: Accepted message 4296f490 on session 08d856b172f69c5c: from=<s>, to=<r>,
size=1746, ndest=1, proto=ESMTP`` (one line per recipient), or before 5.4 ``from=<s>,
size=1746, nrcpts=2, proto=ESMTP`` (one per message)."""

FAILED_COMMAND_V5 = (
    _lit("Failed command")
    + SESSION_V5
    + _lit(': "')
    + _re(COMMAND + r'(?>.*" => )', "command")
    + _re(REPLY + r"(?P<reason>.*)", "result")
)
"""``smtp-in: Failed command on session 1f55bdcdf16e28a3: "MAIL FROM:<x>  " => 421 4.3.0:
Temporary Error``."""

CLOSED_V5 = (
    _re(r"(?:Closing session|Received disconnect from session|Disconnecting session) ", "closed")
    + SESSION_ID
    + pp.Opt(_re(r": (?P<reason>.*)", "reason"))
)
AUTHENTICATED_V5 = (
    _re(r"Accepted authentication for user (?P<sasl_user>[^ ]*+)", "auth ok") + SESSION_V5
)
AUTH_FAILED_V5 = (
    _re(r"(?P<reason>Authentication failed) for user (?P<sasl_user>[^ ]*+)", "auth failed")
    + SESSION_V5
)

DELIVERY_V5 = (
    _re(r"(?P<agent>delivery|relay): (?P<status>[A-Za-z]++) for ", "delivery")
    + EVPID
    + _lit(": ")
    + pp.Opt(_re(r"session=[0-9a-f]{16}, ", "session"))
    + _lit("from=<")
    + SENDER
    + _lit(">, to=<")
    + RECIPIENT
    + _lit(">, ")
    + pp.Opt(
        _lit("rcpt=<")
        + _re(r"(?:-(?=>)|(?P<orig_recipient>[^>]*+))", "original recipient")
        + _lit(">, ")
    )
    + pp.Opt(_re(r"source=[^,]*+, ", "source"))
    + pp.MatchFirst(
        [
            _re(r"user=[^,]*+, method=[^,]*+, ", "mailbox"),
            _re(r"relay=(?P<relay>[^ ,]*+(?: \([^()]*+\))?+),? (?=delay=)", "relay"),
        ]
    )
    + _re(r"delay=[^,]*+, stat=", "delay")
    + _re(STATUS_TEXT, "status text")
)
"""``delivery: Ok for <evpid>: from=<s>, to=<r>, user=u, method=mbox, delay=0s,
stat=Delivered`` (mda) and ``relay: Ok for <evpid>: from=<s>, to=<r>, relay=host delay=2s,
stat=250 ...`` (mta), as OpenSMTPD 5.x's sources write them."""

connected = Message("connected", Kind.CONNECT, CONNECTED)
message = Message("message", Kind.QUEUED, MESSAGE)
envelope = Message("envelope", Kind.RECIPIENT, ENVELOPE)
disconnected = Message("disconnected", Kind.DISCONNECT, DISCONNECTED)
failed_command = Message("failed_command", Kind.REJECT, FAILED_COMMAND)
authenticated = Message("authenticated", Kind.AUTH, AUTHENTICATED)
auth_failed = Message("auth_failed", Kind.AUTH_FAILED, AUTH_FAILED)
smtp_note = Message("smtp_note", Kind.CLIENT_NOTE, SMTP_NOTE)
mta_delivery = Message("mta_delivery", Kind.DELIVERY, MTA_DELIVERY)
mda_delivery = Message("mda_delivery", Kind.DELIVERY, MDA_DELIVERY)
new_session_v5 = Message("new_session_v5", Kind.CONNECT, NEW_SESSION_V5)
accepted_v5 = Message("accepted_v5", Kind.QUEUED, ACCEPTED_V5)
failed_command_v5 = Message("failed_command_v5", Kind.REJECT, FAILED_COMMAND_V5)
closed_v5 = Message("closed_v5", Kind.DISCONNECT, CLOSED_V5)
authenticated_v5 = Message("authenticated_v5", Kind.AUTH, AUTHENTICATED_V5)
auth_failed_v5 = Message("auth_failed_v5", Kind.AUTH_FAILED, AUTH_FAILED_V5)
delivery_v5 = Message("delivery_v5", Kind.DELIVERY, DELIVERY_V5)

BODY: Final = pp.MatchFirst(
    [  # the most frequent first
        SESSION_ID
        + _lit(" ")
        + pp.MatchFirst(
            [
                _lit("smtp ")
                + pp.MatchFirst(
                    [
                        connected(),
                        message(),
                        envelope(),
                        disconnected(),
                        failed_command(),
                        authenticated(),
                        auth_failed(),
                        smtp_note(),
                    ]
                ),
                mta_delivery(),
                mda_delivery(),
            ]
        ),
        _lit("smtp-in: ")
        + pp.MatchFirst(
            [
                new_session_v5(),
                accepted_v5(),
                failed_command_v5(),
                closed_v5(),
                authenticated_v5(),
                auth_failed_v5(),
            ]
        ),
        delivery_v5(),
    ]
)
MESSAGES: Final = (
    connected, message, envelope, disconnected, failed_command, authenticated, auth_failed,
    smtp_note, mta_delivery, mda_delivery, new_session_v5, accepted_v5, failed_command_v5,
    closed_v5, authenticated_v5, auth_failed_v5, delivery_v5,
)  # fmt: skip


def upper(stage: str | None) -> str | None:
    """A failed command's verb as SMTP spells it (clients may write ``rcpt to:``)."""
    return None if stage is None else stage.upper()


def refusal_unexplained(stage: str | None, code: str | None, reason: str | None) -> bool:
    """Whether a failed command refused a recipient without saying why ("Invalid recipient")."""
    return (
        stage is not None
        and stage.upper() == "RCPT"
        and code is not None
        and code.startswith("5")
        and reason is not None
        and reason.startswith(UNEXPLAINED_REFUSAL)
    )


def delivery_status(result: str | None) -> str | None:
    return DELIVERY_STATUS.get(result or "")


def delivery_agent(subsystem: str | None) -> str | None:
    return DELIVERY_AGENTS.get(subsystem or "")


def unbracketed(name: str | None) -> str | None:
    """A client's reverse name; ``<unknown>`` (none) in Postfix's word, ``unknown``."""
    return name[1:-1] if name is not None and name[:1] == "<" and name[-1:] == ">" else name


def original_recipient(original: str | None, recipient: str | None) -> str | None:
    """``rcpt=``: the address the client gave, when an alias made it another (``mda`` writes
    it always)."""
    return None if original == recipient else original


ENVELOPE_START: Final = syslog.HEADER_START + _re(r"(?P<program>smtpd)(?:\[\d++\])?: ", "program")
"""``<time> <host> smtpd[<pid>]: ``: the process id is not the session (see ``SESSION_ID``)."""

LINE: Final = compile_lines(
    ENVELOPE_START,
    BODY,
    MESSAGES,
    time=syslog.TIME,
    derived={
        "client_name": (unbracketed, ("client_name",)),
        "stage": (upper, ("stage",)),
        "refusal_unexplained": (refusal_unexplained, ("stage", "code", "reason")),
        "status": (delivery_status, ("status",)),
        "agent": (delivery_agent, ("agent",)),
        "orig_recipient": (original_recipient, ("orig_recipient", "recipient")),
    },
)


class OpenSMTPDParser:
    """Turns OpenSMTPD log lines into :class:`~parsers.events.Event` objects.

    ``now`` is the clock used to give classic syslog timestamps their year; ``tz`` is the zone
    those timestamps were written in (local time when ``None``).  :meth:`parse` never raises:
    a line it does not understand gives ``None``.  The state is the open local-socket sessions.
    """

    family = FAMILY
    message_end = ENDS_AT_LAST_RECIPIENT
    branches = tuple(message.name for message in MESSAGES)

    def __init__(self, now: Callable[[], float] = time.time, tz: tzinfo | None = None) -> None:
        self._clock = syslog.SyslogClock(now, tz).classic
        self._local: dict[str, None] = {}  # session ids, oldest first

    def parse(self, line: str) -> Event | None:
        m = _MATCH(line)
        if m is None:
            return None
        index = m.lastindex
        try:
            event = _BUILDERS[index](m, self._clock)  # type: ignore[index,misc]
        except ValueError:  # a day or hour out of range: not a real timestamp
            return None
        if index in _SESSION_LINES:
            return self._local_session(event)
        return event

    def _local_session(self, event: Event) -> Event:
        """Note the local-socket sessions; their messages are local submissions."""
        kind, session = event.kind, event.pid or ""
        if kind == Kind.QUEUED:
            return event._replace(kind=Kind.PICKUP) if session in self._local else event
        self._local.pop(session, None)
        if kind == Kind.CONNECT and event.client_ip is None:
            if len(self._local) >= LOCAL_SESSIONS:
                del self._local[next(iter(self._local))]
            self._local[session] = None
        return event

    def branch(self, line: str) -> str | None:
        m = _MATCH(line)
        return None if m is None else m.lastgroup

    def state(self) -> object:
        return {"local_sessions": list(self._local)}

    def restore(self, state: object) -> None:
        sessions = state.get("local_sessions") if isinstance(state, dict) else None
        self._local = {s: None for s in sessions or () if isinstance(s, str)}


_MATCH = LINE.regex.match
_BUILDERS = LINE.builders
_SESSION_LINES = frozenset(
    LINE.regex.groupindex[m.name]
    for m in (connected, message, disconnected, new_session_v5, accepted_v5, closed_v5)
)
