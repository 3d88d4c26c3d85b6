"""Exchange 2007–2019 SMTP Receive protocol logs (``RECV*.LOG``) to events.

Each line is one step of an SMTP session, in CSV under a ``#Fields:`` header (see
:mod:`parsers.csvlog`): ``date-time,connector-id,session-id,sequence-number,local-endpoint,
remote-endpoint,event,data,context``.  ``event`` says who spoke: ``+`` the client connected,
``-`` the session ended, ``<`` the client sent a command, ``>`` the server replied, ``*`` the
server noted something (permissions, TLS, the authenticated user, a tarpit).

Events: ``program`` is the connector, ``host`` the server named before its backslash, ``pid``
the session id (sessions interleave in a file); ``client_ip`` is always the remote endpoint
(``ip:port`` or ``[ipv6]:port``), a column Exchange itself writes, never text of the client.
Commands are ``COMMAND`` events whose ``stage`` is the verb upper-cased (``EHLO`` with
``helo``, ``MAIL`` with ``sender``, ``RCPT`` with ``recipient``, ``AUTH`` with ``sasl_method``;
Exchange's ``X-EXPS`` between its servers is an ``AUTH``, ``X-ANONYMOUSTLS`` a ``STARTTLS``);
replies are ``REPLY`` events the correlator pairs with the commands in order, except that a
reply whose text says which command it answers (``250 2.1.0 Sender OK`` answers ``MAIL``, a
relay refusal ``RCPT``, ``354`` ``DATA``, ``235``/``535`` ``AUTH``, ``221`` ``QUIT``, the
``220`` greeting no command) carries that verb as ``stage``: a log that begins between a
``MAIL FROM`` and its reply then pairs the rest rightly.  Only the last line of a multi-line
reply (``250-…`` continues) and no ``334`` challenge of an AUTH exchange answer a command:
those are notes.  ``550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain`` and
``550 5.7.1 Unable to relay`` set ``relay_refused``.  A ``*`` line with the context
``authenticated`` names the user who logged in (``AUTH``); ``Inbound AUTH LOGIN failed …`` is
``AUTH_FAILED``; ``User Name: x`` is only a note, because Exchange writes it after a failed
login too; every other ``*`` line is a note.

Without a header of its own (a log shipped without it), a row of exactly the nine documented
columns is read with them.  The rows of an SMTP *Send* protocol log (``#Log-type: SMTP Send
Protocol Log``; same columns, our server as the client) give nothing.
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Callable
from datetime import tzinfo
from typing import Final

import pyparsing as pp

from parsers import csvlog
from parsers.events import Event, Kind
from parsers.grammar import LineTime, Message, compile_lines
from parsers.protocol import ENDS_AT_REMOVED

FAMILY: Final = "exchange-smtp"
LOG_TYPE: Final = "SMTP Receive Protocol Log"
FIELDS: Final = (
    "date-time", "connector-id", "session-id", "sequence-number", "local-endpoint",
    "remote-endpoint", "event", "data", "context",
)  # fmt: skip
"""The columns of every version, 2007 to 2019: the record the grammar reads has them all, in
this order."""

RELAY_REFUSAL: Final = r"(?:SMTP; )?Unable to relay\b"
"""Exchange's relay refusals: ``550 5.7.54 SMTP; Unable to relay recipient in non-accepted
domain`` (2013+, anonymous client, recipient outside the accepted domains) and ``550 5.7.1
Unable to relay`` (2007/2010, and connectors of later versions)."""

_REPLY_VERBS: Final = (
    ("250 2.1.0 Sender OK", "MAIL"),
    ("250 2.1.5 Recipient OK", "RCPT"),
    ("250 2.0.0 Resetting", "RSET"),
    ("220 2.0.0 SMTP server ready", "STARTTLS"),
)
_CODE_VERBS: Final = {"354": "DATA", "235": "AUTH", "535": "AUTH", "221": "QUIT", "220": "CONNECT"}
"""Replies only one command gets (``220`` without ``2.0.0`` is the greeting)."""
_REFUSAL = re.compile(rf"[45]\d\d(?: [45]\.\d{{1,3}}\.\d{{1,3}})? ++{RELAY_REFUSAL}")


_VERB_ALIASES: Final = {"X-EXPS": "AUTH", "X-ANONYMOUSTLS": "STARTTLS"}
"""Exchange's own verbs between its servers, answered as AUTH and STARTTLS are."""


def stage(raw: str | None) -> str | None:
    """A command's verb upper-cased; for a reply (it starts with its code), the verb of the
    command its words say it answers, or ``None`` when they do not say."""
    if not raw:
        return None
    if not raw[0].isdigit():
        verb = raw.upper()
        return _VERB_ALIASES.get(verb, verb)
    for text, verb in _REPLY_VERBS:
        if raw.startswith(text):
            return verb
    if _REFUSAL.match(raw):
        return "RCPT"
    return _CODE_VERBS.get(raw[:3])


def _re(pattern: str, name: str) -> pp.ParserElement:
    return pp.Regex(pattern).set_name(name)


SEP = pp.Literal(csvlog.SEP)
REST = _re(r"[^\x00]*+\x00[^\x00]*+\Z", "data and context")
"""What a message leaves of the record: the rest of its data column, and the context."""
CONTEXT = _re(r"[^\x00]*+\Z", "context")
ADDRESS = r"<?+(?P<{name}>(?<=<)[^>\x00]*+|[^ <>\x00]*+)>?+"
"""``<address>`` (``<>`` the null sender) or a bare address, as a client wrote it."""

ENVELOPE: Final = (
    _re(csvlog.UTC_TIME, "date-time")
    + SEP
    + _re(r"(?P<program>(?P<host>[^\\\x00]*+(?=\\)|)[^\x00]*+)", "connector-id")
    + SEP
    + _re(r"(?P<pid>[0-9A-Fa-f]{8,32})", "session-id")
    + _re(r"\x00\d*+\x00[^\x00]*+\x00", "sequence number and local endpoint")
    + _re(r"\[?+(?P<client_ip>(?<=\[)[0-9A-Fa-f:.%]++|[0-9.]++)\]?+:\d++\x00", "remote-endpoint")
)
"""``date-time … remote-endpoint`` of a record (``ip:port``, ``[ipv6]:port``); ``host`` is the
server the connector is named
after (``EX01\\Default Frontend EX01``)."""

HELO = _re(r"(?P<stage>(?i:EHLO|HELO))(?: ++(?P<helo>[^\x00]++))?+ *+\x00", "HELO") + CONTEXT
MAIL = _re(r"(?P<stage>(?i:MAIL)) (?i:FROM): *" + ADDRESS.format(name="sender"), "MAIL FROM") + REST
RCPT = _re(r"(?P<stage>(?i:RCPT)) (?i:TO): *" + ADDRESS.format(name="recipient"), "RCPT TO") + REST
AUTH = _re(r"(?P<stage>(?i:AUTH|X-EXPS))(?=[ \x00]) *+(?P<sasl_method>[^ \x00]++)?+", "AUTH") + REST
COMMAND = _re(r"(?P<stage>[A-Za-z][^ \x00]*+)?+", "command") + REST
"""Any other command: its verb (none for a line that does not start with a letter)."""

CONTINUED = _re(r"(?P<reason>[2-5]\d\d-[^\x00]*+)\x00", "continued reply") + CONTEXT
CHALLENGE = _re(r"(?P<reason>334(?: [^\x00]*+)?+)\x00", "AUTH challenge") + CONTEXT
REFUSAL = (
    _re(
        r"(?P<stage>(?P<code>[45]\d\d)(?: (?P<enhanced>[45]\.\d{1,3}+\.\d{1,3}+))?+ ++"
        rf"(?P<reason>(?P<relay_refused>{RELAY_REFUSAL})[^\x00]*+))\x00",
        "relay refusal",
    )
    + CONTEXT
)
REPLY = (
    _re(
        r"(?P<stage>(?P<code>[2-5]\d\d)(?: (?P<enhanced>[2-5]\.\d{1,3}+\.\d{1,3}+)(?=[ \x00]))?+"
        r" *+(?P<reason>[^\x00]++)?+)\x00",
        "reply",
    )
    + CONTEXT
)
"""``550 5.1.1 User unknown``: code, enhanced code, text (the whole reply is the ``stage``
group, which :func:`stage` reads)."""

AUTHENTICATED = _re(r"(?P<sasl_user>[^\x00]++)\x00authenticated\Z", "authenticated user")
AUTH_FAILED = _re(
    r"[^\x00]*+\x00(?P<reason>Inbound AUTH (?P<sasl_method>[^ \x00]++) failed[^\x00]*+)\Z",
    "AUTH failed",
)
USER_NAME = _re(r"[^\x00]*+\x00(?P<reason>User Name): (?P<sasl_user>[^\x00]*+)\Z", "user name")
PERMISSIONS = _re(r"(?P<reason>[^\x00]*+)\x00Set Session Permissions\Z", "permissions")
NOTE = _re(r"[^\x00]*+\x00(?P<reason>[^\x00]++)\Z", "note")
NOTE_DATA = _re(r"(?P<reason>[^\x00]++)?+\x00\Z", "note text")

connect = Message("connect", Kind.CONNECT, pp.Literal("+\x00") + REST)
disconnect = Message(
    "disconnect", Kind.DISCONNECT, _re(r"-\x00[^\x00]*+\x00(?P<reason>[^\x00]++)?+\Z", "by")
)
ehlo = Message("ehlo", Kind.COMMAND, HELO)
mail = Message("mail", Kind.COMMAND, MAIL)
rcpt = Message("rcpt", Kind.COMMAND, RCPT)
auth = Message("auth", Kind.COMMAND, AUTH)
command = Message("command", Kind.COMMAND, COMMAND)
continued = Message("continued", Kind.CLIENT_NOTE, CONTINUED)
challenge = Message("challenge", Kind.CLIENT_NOTE, CHALLENGE)
refusal = Message("refusal", Kind.REPLY, REFUSAL)
reply = Message("reply", Kind.REPLY, REPLY)
authenticated = Message("authenticated", Kind.AUTH, AUTHENTICATED)
auth_failed = Message("auth_failed", Kind.AUTH_FAILED, AUTH_FAILED)
user_name = Message("user_name", Kind.CLIENT_NOTE, USER_NAME)
permissions = Message("permissions", Kind.CLIENT_NOTE, PERMISSIONS)
note = Message("note", Kind.CLIENT_NOTE, NOTE)
note_data = Message("note_data", Kind.CLIENT_NOTE, NOTE_DATA)

BODY: Final = pp.MatchFirst(
    [
        pp.Literal("<\x00") + pp.MatchFirst([ehlo(), mail(), rcpt(), auth(), command()]),
        pp.Literal(">\x00") + pp.MatchFirst([continued(), challenge(), refusal(), reply()]),
        pp.Literal("*\x00")
        + pp.MatchFirst(
            [authenticated(), auth_failed(), user_name(), permissions(), note(), note_data()]
        ),
        connect(),
        disconnect(),
    ]
)
MESSAGES: Final = (
    ehlo, mail, rcpt, auth, command, continued, challenge, refusal, reply, authenticated,
    auth_failed, user_name, permissions, note, note_data, connect, disconnect,
)  # fmt: skip

LINE: Final = compile_lines(
    ENVELOPE,
    BODY,
    MESSAGES,
    time=LineTime(("stamp", "fraction"), csvlog.TIME_EXPRESSION, csvlog.TIME_NAMES),
    derived={"stage": (stage, ("stage",)), "relay_refused": (operator.truth, ("relay_refused",))},
)


class ExchangeSmtpParser:
    """Turns Exchange SMTP Receive protocol log lines into events (see the module's text).

    Keeps the log type and the columns of the last header as its state.  :meth:`parse` never
    raises: a line it does not understand gives ``None``.
    """

    family = FAMILY
    message_end = ENDS_AT_REMOVED  # sessions end at their "-" line; no message is queued here
    branches = ("header", *(message.name for message in MESSAGES))

    def __init__(self, now: Callable[[], float] = time.time, tz: tzinfo | None = None) -> None:
        self._headers = csvlog.HeaderState(FAMILY, LOG_TYPE)  # Exchange writes UTC: no tz
        self._direct = True  # rows have the documented columns, in order
        self._picks: tuple[int, ...] | None = tuple(range(len(FIELDS)))

    def parse(self, line: str) -> Event | None:
        match = self._row(line)
        if match is None:
            if line.lstrip(csvlog.BOM)[:1] != "#":
                return None
            event = self._headers.event(line)
            self._layout_changed()
            return event
        try:
            event = _BUILDERS[match.lastindex](match, csvlog.utc_seconds)  # type: ignore[index,misc]
        except ValueError:  # a day or an hour out of range: not a real timestamp
            return None
        self._headers.last = event.time
        return event

    def branch(self, line: str) -> str | None:
        if line.lstrip(csvlog.BOM)[:1] == "#":
            return None if csvlog.header(line) is None else "header"
        match = self._row(line)
        return None if match is None else match.lastgroup

    def record(self, line: str) -> str | None:
        """The record the grammar reads for a row (for tests), or ``None``."""
        line = line.removeprefix(csvlog.BOM)
        if line[:1] == "#" or csvlog.SEP in line or self._picks is None:
            return None
        row = csvlog.split_row(line)
        if row is None or (not self._headers.seen and len(row) != len(FIELDS)):
            return None
        if self._headers.seen and len(row) != len(self._headers.fields or ()):
            return None
        row.append("")  # a column the header lacks
        return csvlog.SEP.join([row[i] for i in self._picks])

    def state(self) -> object:
        return self._headers.state()

    def restore(self, state: object) -> None:
        self._headers.restore(state)
        self._layout_changed()

    def _layout_changed(self) -> None:
        fields = self._headers.fields
        if (
            not self._headers.ours
            or (self._headers.seen and fields is None)
            or (fields is not None and not set(fields) >= _NEEDED)
        ):  # not a receive log's rows, or not yet
            self._direct, self._picks = False, None
        elif fields is None or fields == FIELDS:
            self._direct, self._picks = True, tuple(range(len(FIELDS)))
        else:  # another order, or more columns: pick ours (a missing one reads as empty)
            index = {name: number for number, name in enumerate(fields)}
            self._direct = False
            self._picks = tuple(index.get(name, len(fields)) for name in FIELDS)

    def _row(self, line: str) -> re.Match[str] | None:
        if self._direct and '"' not in line and csvlog.SEP not in line and line[:1] != "#":
            return _MATCH(line.removeprefix(csvlog.BOM).replace(",", csvlog.SEP))
        record = self.record(line)
        return None if record is None else _MATCH(record)


_MATCH = LINE.regex.match
_BUILDERS = LINE.builders
_NEEDED = frozenset(FIELDS) - {"sequence-number", "local-endpoint"}
