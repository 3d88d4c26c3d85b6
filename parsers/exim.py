"""Exim: mainlog lines, and the same lines through syslog, to events.

A mainlog line is ``<local time>[.ms][ ±zone] [[pid]] [<message id>] <text>`` (Exim spec,
chapter "Log files"); through syslog the same text follows ``<syslog header> exim[pid]: ``,
with Exim's own timestamp unless ``syslog_timestamp = false`` (or after a date written like
Exim's and ``host exim[pid]: ``, as a syslog-ng template may write it).  The grammar below is
the single source of truth: one body of messages behind each of these three envelopes, each
compiled into the one regular expression it stands for (:mod:`parsers.grammar`).  A mainlog
line costs one match; the others fail the mainlog's expression at their first characters.

How Exim's lines map onto the correlator's contract (:class:`parsers.events.Session`):

- ``<=`` (and the fake-reject ``(=``) is ``QUEUED``: client, HELO, authenticated user,
  sender, size, Message-ID and, with ``+received_recipients``, the recipients; a message
  received without an ``H=`` host (``U=`` local user, ``P=local``, Exim's own bounces) is a
  local submission, ``PICKUP``.  ``=>``/``->``/``>>`` are deliveries (``status`` sent),
  ``==`` deferrals, ``**`` bounces; ``Completed`` is ``REMOVED`` (so ``message_end`` is
  ``ENDS_AT_REMOVED``).  A delivery or bounce whose ``H=`` names a host ``[ip]`` went out
  over SMTP (agent ``smtp``); one without is ``local`` (a local transport, file, pipe, LMTP to
  a named mail store, or a bounce before any host was tried); a deferral names no agent.
  ``pid`` is Exim's ``[pid]`` (``+pid``) in a mainlog, syslog's ``exim[pid]`` through syslog.
- Rejects (``H=… F=<…> rejected RCPT <x>: …`` and the other ACL stages) are ``REJECT``
  events with neither ``pid`` nor ``queue_id``, each a transaction of its own: Exim logs no
  session around them (connect and close lines need ``+smtp_connection``), a ``[pid]`` logged
  by ``+pid`` would keep them waiting for a session end that may never be logged, and the
  message id on an after-DATA reject names a message that was never accepted.
- ``rejectlog`` repeats the rejects of the mainlog (and dumps headers on lines of their own,
  which yield nothing): a source must be the mainlog, never the rejectlog as well, or every
  refusal counts twice.  Through syslog, the rejectlog's copy of a line arrives next to the
  mainlog's unless ``syslog_duplication = false``: the parser drops a reject or failed login
  that repeats one of the last it read from syslog within a second.

Client addresses are taken only from the ``[ip]`` Exim itself writes after ``H=`` (or after
``from`` in its own connection messages), never from text a client controls.  One such text
comes *before* the address: the HELO name in ``(…)``.  Exim refuses HELO names with spaces or
parentheses unless ``helo_accept_junk_hosts`` lets them in (cPanel does, for every client);
then a HELO such as ``x) [192.0.2.9]:25 F=<a> rejected RCPT …`` can put another client's
address first.  So a line in which a second ``(…) [ip]`` follows the client's address is
ambiguous and gives no client (nor name, nor HELO): nobody is blamed for it, and a client that
writes such text into its own sender, recipients or subject hides its address from that line.
Other blind spots: an RFC 1413 ident (``U=``, queried only when ``rfc1413_query_timeout`` is
not 0, as it is by default) or a logged TLS peer DN with spaces is read up to its first space;
syslog lines Exim split into ``[n/m]`` pieces are not read.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Final

import pyparsing as pp

from parsers import syslog
from parsers.events import NOT_LOGGED, Event, Kind
from parsers.grammar import IP, Derived, LineGrammar, LineTime, Message, compile_lines
from parsers.protocol import ENDS_AT_REMOVED

FAMILY: Final = "exim"

RELAY_REFUSALS: Final = (
    "relay not permitted",  # Exim's default configuration, upstream and Debian
    "relaying denied",
    "relay access denied",
    "relaying not allowed - please use smtp auth",
    "smtp auth is required for message submission on port 587",  # cPanel
)
"""What a rejected RCPT's text ends with when the server refused it as a relay (compared
without regard to case).  The text is the ACL's own ``message``; sites write their own."""


def _re(pattern: str, name: str) -> pp.ParserElement:
    return pp.Regex(pattern).set_name(name)


def _lit(text: str) -> pp.Literal:
    return pp.Literal(text)


# -- pieces of patterns ---------------------------------------------------------------------

_QUOTED = r'"(?:[^"\\]++|\\.)*+"'
"""A double-quoted string with backslash escapes (Exim's ``T=``, ``C=``, quoted local parts)."""
_ADDRESS = r'(?:[^ <>"]++|"(?:[^"\\]++|\\.)++")*+'
"""An address whose spaces, if any, are inside a quoted local part (never empty: ``""`` is no
more use in a log than it is in mail, and reading runs of them would be slow)."""
_VALUE = rf'(?:{_QUOTED}|(?:[^ ":]++|:++(?! ))*+)'
"""A field's value: quoted, or up to a space (or a colon before a space: ``I=[ip]:25: 535``)."""
_FIELD = rf"[A-Za-z][\w-]*+={_VALUE}"
"""A field Exim writes after a space: ``I=[ip]:25``, ``X=…``, ``DN="…"``."""
_MESSAGE_ID = r"[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}+-[0-9A-Za-z]{2,4}+"
"""16 characters (``1xXwTq-00046P-1z``) before 4.97, 23 since (``10HmaX-000000005vi-0000``)."""
_EXIM_TIME = r"\d\d\d\d-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6}+)?+"


def _fields(*stop: str, flags: bool = False) -> str:
    """Any fields (each after a space) up to one of the ``stop`` words; with ``flags``, also
    the bare flags of arrivals and deliveries (``L``, ``K``, ``PRDR``)."""
    guard = f"(?!{'|'.join(stop)})" if stop else ""
    field = rf"[A-Za-z][\w-]*+(?:={_VALUE})?+" if flags else _FIELD
    return f"(?: {guard}{field})*+"


# -- envelope -------------------------------------------------------------------------------

STAMP = _re(rf"(?P<stamp>{_EXIM_TIME})(?: (?P<zone>[-+]\d\d\d\d))?+ ", "exim timestamp")
"""``2026-11-30 08:11:22[.123][ +0100] ``: local time unless ``+tz`` logs the zone."""

PROGRAM = _re(r"(?P<program>exim4?+)", "program") + syslog.PID
SAME_PID = _re(r"\[\d++\] ", "pid")
"""Exim's ``[pid]`` (``+pid``) after syslog's ``exim[pid]:``: the same process."""

MAINLOG_ENVELOPE: Final = STAMP + pp.Opt(_re(r"\[(?P<pid>\d++)\] ", "pid"))
"""``<exim timestamp> [[pid]] ``: a line of Exim's own log files."""

SYSLOG_ENVELOPE: Final = syslog.HEADER_START + PROGRAM + pp.Opt(STAMP) + pp.Opt(SAME_PID)
"""``<syslog header> exim[pid]: [<exim timestamp>] [[pid]] ``."""

SYSLOG_NG_ENVELOPE: Final = STAMP + _re(r"(?P<host>[^ \[]++) ", "host") + PROGRAM + pp.Opt(SAME_PID)
"""``<date written like Exim's> host exim[pid]: ``, as a syslog-ng template may write it."""

# -- clients --------------------------------------------------------------------------------

CLIENT_HOST = (
    pp.Opt(_re(r"(?P<client_name>[^ ()\[\]]++) (?=[(\[])", "client name"))
    + pp.Opt(_re(r"\((?P<helo>[^ ()]*+)\) (?=\[)", "helo"))
    + _re(rf"\[(?P<client_ip>{IP})\](?::\d++)?+", "client address")
)
"""``name (helo) [ip]:port``, each of name, HELO and port optional: the name is verified (DNS),
the HELO as the client gave it, the address the connection's own."""

FIELDS = _re(_fields("F="), "fields")
"""The fields after a client's host: ``U=ident``, ``I=[ip]:port``, ``Ci=…``, ``X=…``, ``SNI=…``."""

SENDER = _re(rf"<?+(?P<sender>{_ADDRESS})>?+", "sender")
"""``<sender>``, ``<>`` (the null sender, ``""``), or, in older Exims, ``sender`` bare."""

# -- messages after the message id ----------------------------------------------------------

ARRIVAL_FLAG = _re(r"(?:<=|\(=) ", "arrival flag")
"""``<=``, or ``(=`` for a message an ACL fake-rejected (the client was told no; it was kept)."""

ARRIVAL_TAIL = (
    _re(_fields("S=", flags=True), "fields")
    + _lit(" S=")
    + _re(r"(?P<size>\d++)", "size")
    + _re(_fields("id=", "T=", "for ", "from <", flags=True), "fields")
    + pp.Opt(_re(rf" id=(?P<message_id>{_ADDRESS})", "message id"))
    + _re(_fields("T=", "for ", "from <", flags=True), "fields")
    + pp.Opt(_re(rf" T={_QUOTED}", "subject"))
    + pp.Opt(_re(rf" from <{_ADDRESS}>", "sender"))
    + pp.Opt(_re(r" for (?P<recipients>.+)", "recipients"))
)
"""``S=size``, ``id=<Message-ID>``, ``T="subject"`` (quotes escaped, so a subject cannot end it
early), ``from <sender>`` and ``for rcpt1 rcpt2`` (``+received_recipients``), with whatever
fields Exim writes in between."""

ARRIVAL = (
    _lit(" H=")
    + CLIENT_HOST
    + _re(_fields("A=", "S=", flags=True), "fields")
    + pp.Opt(
        _re(
            r" A=(?P<sasl_method>[^ :]++)(?::(?P<sasl_user>[^ :]*+)(?::[^ ]*+)?+)?+",
            "authenticator",
        )
    )
    + ARRIVAL_TAIL
)
"""``<= sender`` (shared with ``LOCAL_ARRIVAL``), then `` H=(helo) [ip]:port P=esmtpa
A=PLAIN:alice S=472 id=… T="…" for a b``."""

LOCAL_ARRIVAL = (
    pp.Opt(_re(rf" R={_MESSAGE_ID}", "bounce of")) + _re(r"(?= U=| P=)", "local") + ARRIVAL_TAIL
)
"""``<= <>`` then `` R=<id> U=Debian-exim P=local S=2096 …``: no ``H=``, submitted on the host
itself."""

_DELIVERED_ADDRESS = (
    rf"(?P<recipient>(?:\|[^<>]*?(?= \(| <)|(?:[^ \":]++|:++(?! (?!<))|{_QUOTED})++)"
    r"(?: \([^()]*+\))?+(?: <[^<>]*+>)?+)"
)
"""``final [(parent)] [<address as received>]``: the final address may be a local part, a file,
a ``|pipe command`` or ``:blackhole:``; the one in angle brackets is the one the client gave.
A colon before a space ends it (``** rcpt: Unrouteable address``)."""

_ROUTING = (
    rf"(?: F=<{_ADDRESS}>)?+(?: Q=[^ ]++)?+(?: SRS=<{_ADDRESS}>)?+(?: P=<{_ADDRESS}>)?+"
    r"(?: R=[^ :]++)?+(?: T=[^ :]++)?+(?: S=\d++)?+"
)
"""What Exim writes between the address and the host of a delivery: sender, queue, return path,
router, transport, size."""

_NEXT_HOP = r" H=(?P<relay>[^ \[:]++(?: \[[^\]]*+\](?::\d++)?+)?+)\*?+"
"""``H=name [ip]:port`` of an SMTP delivery (``*``: a connection used again), or ``H=name``."""

DELIVERED = (
    _re(r"(?P<status>=>|->|>>) ", "delivery flag")
    + _re(_DELIVERED_ADDRESS, "address")
    + _re(_ROUTING, "routing")
    + pp.Opt(_re(_NEXT_HOP, "next hop"))
    + _re(_fields('C="', flags=True), "fields")
    + pp.Opt(_re(r' C="(?P<reason>(?:[^"\\]|\\.)*+)"', "confirmation"))
)
"""``=> rcpt R=router T=transport H=name [ip]:port C="250 OK"``; ``->`` another recipient of
the same delivery; ``>>`` a cutthrough delivery (logged before the arrival)."""

BOUNCED = (
    _re(r"(?P<status>\*\*) ", "bounce flag")
    + _re(_DELIVERED_ADDRESS, "address")
    + _re(_ROUTING, "routing")
    + pp.Opt(_re(_NEXT_HOP, "next hop"))
    + _re(_fields(), "fields")
    + pp.Opt(_re(r": (?P<reason>.*)", "error"))
)
"""``** rcpt R=router T=transport H=name [ip]:port: SMTP error from remote mail server …``."""

DEFERRED = (
    _re(r"(?P<status>==) ", "defer flag")
    + _re(_DELIVERED_ADDRESS, "address")
    + _re(_ROUTING, "routing")
    + _re(r"(?: routing| transporting)?+ defer \(-?\d++\)(?::? (?P<reason>.+))?+", "error")
)
"""``== rcpt R=router T=transport defer (111): Connection refused``, or ``defer (-44) H=name
[ip]:25: SMTP error from remote mail server after RCPT TO:<…>: 451 …``."""

COMPLETED = _re(r"Completed(?= |\Z)", "completed")

REJECT_HEAD = _re(
    rf"(?: F=<?+(?P<sender>{_ADDRESS})>?+)?+(?: [A-Za-z][\w-]*+={_VALUE})*+"
    r" (?:temporarily )?rejected ",
    "rejected",
)
"""``[ F=<sender>[ A=…]] [temporarily ]rejected ``: Exim writes the sender for RCPT and DATA
rejects, the client's authenticator after it."""

REJECT_WHAT = _re(
    r"(?P<stage>after DATA(?: PRDR)?|EHLO or HELO|during MIME ACL checks|non-SMTP(?:-start)?"
    r"|connection|[A-Z][A-Z0-9-]*+)(?::? (?P<reason>(?:(?<=RCPT )<?+(?P<recipient>[^<>:]*+"
    r"(?::++(?! )[^<>:]*+)*+)(?:>|(?=: |\Z)))?+.*)|\Z)",
    "stage",
)
"""What was refused (``RCPT <rcpt>``, ``MAIL <sender>``, ``after DATA``, ``EHLO or HELO
<name>``, ``connection in "connect" ACL`` …), then ``: `` and the ACL's message.  The recipient
of a ``RCPT`` is read up to ``>`` or ``: ``: Exim logs at most 100 characters of the command, so
the ``>`` may be missing, and before 4.8x there was none (``RCPT rcpt: text``)."""

REJECT_DATA = _lit("H=") + CLIENT_HOST + FIELDS + REJECT_HEAD + REJECT_WHAT
"""``<id> H=… F=<…> rejected after DATA: …`` (the id names a message that was never accepted)."""

LOCAL_SCAN_REJECT = (
    _lit("F=")
    + SENDER
    + _lit(" H=")
    + CLIENT_HOST
    + _re(_fields(), "fields")
    + _re(
        r" (?:temporarily )?rejected by (?P<stage>local_scan)\(\)(?:: (?P<reason>.*))?+", "verdict"
    )
)
"""``<id> F=<sender> H=… P=esmtp rejected by local_scan(): …`` (SpamAssassin and friends)."""

QUEUE_NOTE = _re(r"(?P<reason>SMTP connection) from ", "note") + CLIENT_HOST
"""``<id> SMTP connection from … closed by DROP in ACL``."""

# -- messages without a message id ----------------------------------------------------------

HOST_NOTE = _re(r" (?P<reason>.+)", "note")
"""Any other line that starts with the client: ``H=… sender verify fail for <…>: …``."""

HELO_REJECT = (
    _re(r"rejected (?P<stage>EHLO|HELO) from ", "rejected")
    + CLIENT_HOST
    + _re(r": (?P<reason>.*)", "reason")
)
"""``rejected EHLO from [ip]: syntactically invalid argument(s): …``."""

AUTH_FAILED = (
    _re(r"(?P<sasl_method>[\w-]++) authenticator failed for ", "authenticator")
    + CLIENT_HOST
    + _re(_fields(), "fields")
    + _re(
        r": (?:(?P<code>[245]\d\d) )?+(?P<reason>[^ ]*+(?: (?!\(set_id=[^()]*+\)\Z)[^ ]*+)*+)"
        r"(?: \(set_id=(?P<sasl_user>[^()]*+)\))?+\Z",
        "error",
    )
)
"""``LOGIN authenticator failed for (helo) [ip]:port: 535 Incorrect authentication data
(set_id=user)``."""

PROTOCOL_ERROR = (
    _re(r'(?P<reason>SMTP (?:protocol|syntax) error) in ".*" H=', "protocol error")
    + CLIENT_HOST
    + FIELDS
    + _re(r'(?: [^"\[\]]*+)?+\Z', "error")
)
"""``SMTP protocol error in "<command>" H=… AUTH command used when not advertised``.  The
command is the client's and may hold ``" H=(x) [ip]``: the last ``" H=`` is Exim's, and the
text after the host must be Exim's too (no quotes or brackets) or the line is not read."""

CONNECTION_NOTE = (
    _re(
        r"(?P<reason>SMTP connection|no MAIL in SMTP connection|SMTP call"
        r"|TLS error on connection|SMTP (?:data|command) timeout(?: \(message abandoned\))?"
        r" on (?:TLS )?connection|unexpected disconnection while reading SMTP command"
        r"|SMTP protocol synchronization error \(input sent without waiting for greeting\):"
        r" rejected connection|no IP address found for host [^ ()\[\]]++"
        r" \(during SMTP connection) from (?:H=)?+",
        "note",
    )
    + CLIENT_HOST
)
"""Exim's own words about a connection, then its client: ``SMTP connection from [ip]:port (TCP/IP
connection count = 1)``, ``… closed by QUIT``, ``no MAIL in SMTP connection from …``, ``SMTP
call from … dropped: too many …``.  Only these prefixes: text of any other form before
``from`` could be the client's."""

UNRESOLVED = _re(
    rf"(?P<reason>no host name found for IP address) (?P<client_ip>{IP})\Z", "unresolved"
)
"""``no host name found for IP address 192.0.2.8`` (``host_lookup`` of a connecting client)."""

delivered = Message("delivered", Kind.DELIVERY, DELIVERED)
completed = Message("completed", Kind.REMOVED, COMPLETED)
arrival = Message("arrival", Kind.QUEUED, ARRIVAL)
local_arrival = Message("local_arrival", Kind.PICKUP, LOCAL_ARRIVAL)
deferred = Message("deferred", Kind.DELIVERY, DEFERRED)
bounced = Message("bounced", Kind.DELIVERY, BOUNCED)
reject_data = Message("reject_data", Kind.REJECT, REJECT_DATA)
local_scan_reject = Message("local_scan_reject", Kind.REJECT, LOCAL_SCAN_REJECT)
queue_note = Message("queue_note", Kind.CLIENT_NOTE, QUEUE_NOTE)
reject = Message("reject", Kind.REJECT, REJECT_HEAD + REJECT_WHAT)
host_note = Message("host_note", Kind.CLIENT_NOTE, HOST_NOTE)
helo_reject = Message("helo_reject", Kind.REJECT, HELO_REJECT)
auth_failed = Message("auth_failed", Kind.AUTH_FAILED, AUTH_FAILED)
protocol_error = Message("protocol_error", Kind.CLIENT_NOTE, PROTOCOL_ERROR)
connection_note = Message("connection_note", Kind.CLIENT_NOTE, CONNECTION_NOTE)
unresolved = Message("unresolved", Kind.CLIENT_NOTE, UNRESOLVED)

BODY: Final = pp.MatchFirst(
    [  # the most frequent first; lines of a message share its id as a prefix
        _re(rf"(?P<queue_id>{_MESSAGE_ID}) ", "message id")
        + pp.MatchFirst(
            [
                delivered(),
                completed(),
                ARRIVAL_FLAG + SENDER + pp.MatchFirst([arrival(), local_arrival()]),
                deferred(),
                bounced(),
                reject_data(),
                local_scan_reject(),
                queue_note(),
            ]
        ),
        _lit("H=") + CLIENT_HOST + FIELDS + pp.MatchFirst([reject(), host_note()]),
        connection_note(),
        auth_failed(),
        helo_reject(),
        protocol_error(),
        unresolved(),
    ]
)
MESSAGES: Final = (
    delivered, completed, arrival, local_arrival, deferred, bounced, reject_data,
    local_scan_reject, queue_note, reject, host_note, helo_reject, auth_failed,
    protocol_error, connection_note, unresolved,
)  # fmt: skip

# -- fields computed from what the line says -------------------------------------------------

_STATUS = {"=>": "sent", "->": "sent", ">>": "sent", "**": "bounced", "==": "deferred"}
_STAGES = {
    "after DATA": "DATA",
    "after DATA PRDR": "DATA",
    "during MIME ACL checks": "DATA",
    "local_scan": "DATA",
    "EHLO or HELO": "EHLO",
    "connection": "CONNECT",
}
_RELAY_SUFFIXES = tuple(" " + text for text in RELAY_REFUSALS)
_QUOTED_RECIPIENT = re.compile(r'(?:[^ "]++|"[^"]*+")++')
"""A recipient of a ``for`` list; escapes in quoted local parts are not followed, so a quote
always ends at the next one and the list is read in one pass whatever it holds."""


def _status(flag: str | None) -> str | None:
    return None if flag is None else _STATUS[flag]


def _stage(stage: str | None) -> str | None:
    return None if stage is None else _STAGES.get(stage, stage)


def _delivered_to(address: str | None) -> str | None:
    """The address the client gave, from ``final [(parent)] [<as received>]``."""
    if address is None:
        return None
    if address.endswith(">") and " <" in address:
        return address[address.rindex(" <") + 2 : -1]
    return address.partition(" (")[0]


def _agent(relay: str | None) -> str:
    return "smtp" if relay is not None and "[" in relay else "local"  # a host [ip], or none


def relay_refused(stage: str | None, reason: str | None) -> bool:
    """Whether a reject refuses a recipient as a relay: an RCPT reject whose text ends with one
    of ``RELAY_REFUSALS``.  The end of the line is the ACL's message, never the client's."""
    if stage != "RCPT" or reason is None:
        return False
    verdict = reason.lower()
    return verdict in RELAY_REFUSALS or verdict.endswith(_RELAY_SUFFIXES)


def _authenticated(method: str | None, user: str | None, _size: str | None) -> str | None:
    """The user of an arrival (the only message with a size and an authenticator)."""
    if user:
        return user
    return NOT_LOGGED if method is not None else None  # no server_set_id: it did authenticate


def _recipients(listed: str | None) -> tuple[str, ...] | None:
    if listed is None:
        return None
    return tuple(_QUOTED_RECIPIENT.findall(listed) if '"' in listed else listed.split())


_DUPLICATE_WINDOW = 1.0  # seconds between a syslog line and its rejectlog copy
_RECENT = 16  # rejects remembered to compare with


class EximClock(syslog.SyslogClock):
    """What an :class:`EximParser` keeps between lines: it reads Exim's timestamps (local time in
    ``tz`` unless a zone follows) and, called with a classic syslog timestamp, those of the
    syslog header; and it remembers the last rejects read from syslog (:meth:`first_copy`)."""

    def __init__(self, now: Callable[[], float] = time.time, tz: tzinfo | None = None) -> None:
        super().__init__(now, tz)
        self._zone = tz
        self._seconds: dict[tuple[str, str | None], float] = {}
        self._recent: deque[tuple[Event, float]] = deque(maxlen=_RECENT)

    def __call__(self, stamp: str) -> float:
        return self.classic(stamp)

    def first_copy(self, event: Event) -> Event | None:
        """``event`` unless it repeats one read within the last second: Exim sends a line meant
        for the mainlog and the rejectlog to syslog twice (unless ``syslog_duplication`` is
        false)."""
        key = event._replace(time=0.0)
        for seen, when in self._recent:
            if seen == key and abs(event.time - when) <= _DUPLICATE_WINDOW:
                return None
        self._recent.append((key, event.time))
        return event

    def exim(self, stamp: str, zone: str | None) -> float:
        """``2026-11-30 08:11:22[.123]`` with an optional ``+0100``, as UTC epoch seconds."""
        when = self._seconds.get((stamp, zone))  # most lines: no milliseconds, no zone
        if when is not None:
            return when
        key = (stamp[:19], zone)
        when = self._seconds.get(key)
        if when is None:
            local = self._zone
            if zone is not None:
                offset = int(zone[1:3]) * 3600 + int(zone[3:5]) * 60
                local = timezone(timedelta(seconds=-offset if zone[0] == "-" else offset))
            when = datetime(
                int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]), int(stamp[11:13]),
                int(stamp[14:16]), int(stamp[17:19]), tzinfo=local,
            ).timestamp()  # fmt: skip
            if len(self._seconds) >= 4096:
                self._seconds.clear()
            self._seconds[key] = when
        return when + float(stamp[19:]) if len(stamp) > 19 else when


EXIM_TIME: Final = LineTime(("stamp", "zone"), "clock.exim({stamp}, {zone})")
"""The time of a mainlog line (or syslog-ng's copy of one): Exim's timestamp."""
SYSLOG_TIME: Final = LineTime(
    ("stamp", "zone", *syslog.TIME.groups),
    f"(clock.exim(s, {{zone}}) if (s := {{stamp}}) is not None else ({syslog.TIME.expression}))",
    syslog.TIME.names,
)
"""Exim's own timestamp when the syslog line carries it, else the syslog header's."""

DERIVED: Final[Derived] = {
    "status": (_status, ("status",)),
    "recipient": (_delivered_to, ("recipient",)),
    "agent": (_agent, ("relay",)),
    "stage": (_stage, ("stage",)),
    "relay_refused": (relay_refused, ("stage", "reason")),
    "sasl_user": (_authenticated, ("sasl_method", "sasl_user", "size")),
    "recipients": (_recipients, ("recipients",)),
}
MAINLOG: Final = compile_lines(
    MAINLOG_ENVELOPE,
    BODY,
    MESSAGES,
    time=EXIM_TIME,
    derived={**DERIVED, "host": ("".__str__, ()), "program": (FAMILY.__str__, ())},
)
"""Mainlog lines: no host, and Exim as the program."""
SYSLOG_LINE: Final = compile_lines(
    SYSLOG_ENVELOPE, BODY, MESSAGES, time=SYSLOG_TIME, derived=DERIVED
)
SYSLOG_NG: Final = compile_lines(
    SYSLOG_NG_ENVELOPE, BODY, MESSAGES, time=EXIM_TIME, derived=DERIVED
)


def _standalone(build: Callable[..., Event | None]) -> Callable[..., Event | None]:
    """A reject builder whose events carry neither pid nor queue id (see the module doc)."""

    def build_reject(m: re.Match[str], clock: EximClock) -> Event | None:
        event = build(m, clock)
        return None if event is None else event._replace(pid=None, queue_id=None)

    return build_reject


_SECOND_HOST = re.compile(rf"\) \[{IP}\]")
"""What follows a junk HELO that imitates a host: another ``(…) [ip]`` (see the module doc)."""


def _first_copy(build: Callable[..., Event | None]) -> Callable[..., Event | None]:
    """A builder for a line Exim also writes to the rejectlog, read from syslog: its second
    copy gives nothing (see :meth:`EximClock.first_copy`)."""

    def build_once(m: re.Match[str], clock: EximClock) -> Event | None:
        event = build(m, clock)
        return None if event is None else clock.first_copy(event)

    return build_once


class _Grammar:
    """One envelope's compiled line grammar, with its builders as :class:`EximParser` runs them."""

    def __init__(self, line: LineGrammar, syslog_copies: bool) -> None:
        index = line.regex.groupindex
        self.line = line
        self.match = line.regex.match
        builders: list[Callable[..., Event | None] | None] = list(line.builders)
        self.client_ends: dict[int, int] = {}
        for number, message in enumerate(MESSAGES):
            group = index[message.name]
            build = builders[group]
            assert build is not None
            if message.kind == Kind.REJECT:
                build = _standalone(build)
            if syslog_copies and message.kind in (Kind.REJECT, Kind.AUTH_FAILED):
                build = _first_copy(build)
            builders[group] = build
            # the client's address; after the shared "H=" prefix it is not the message's own
            self.client_ends[group] = index.get(f"client_ip_{number}") or index["client_ip"]
        self.builders = tuple(builders)


_MAINLOG = _Grammar(MAINLOG, syslog_copies=False)
_SYSLOG_NG = _Grammar(SYSLOG_NG, syslog_copies=True)
_SYSLOG = _Grammar(SYSLOG_LINE, syslog_copies=True)


_GRAMMARS = (_MAINLOG, _SYSLOG, _SYSLOG_NG)
"""In the order :class:`EximParser` tries them: a mainlog line fails the other two at once."""
_MAINLOG_MATCH, _SYSLOG_MATCH, _SYSLOG_NG_MATCH = (grammar.match for grammar in _GRAMMARS)


def line_grammar(line: str) -> LineGrammar | None:
    """The grammar that reads ``line``, or ``None`` (for tests and ``relaywatch parse``)."""
    for grammar in _GRAMMARS:
        if grammar.match(line) is not None:
            return grammar.line
    return None


class EximParser:
    """Turns Exim log lines into :class:`~parsers.events.Event` objects.

    ``now`` gives classic syslog timestamps their year; ``tz`` is the zone of timestamps
    written in local time (Exim's, unless ``+tz``, and the syslog header's).  :meth:`parse`
    never raises: a line it does not understand gives ``None``.  The rejects it remembers to
    drop their syslog duplicates are not kept across restarts (``state`` is ``None``): a
    restart between a line and its copy counts that one twice.
    """

    family = FAMILY
    message_end = ENDS_AT_REMOVED
    branches = tuple(message.name for message in MESSAGES)

    def __init__(self, now: Callable[[], float] = time.time, tz: tzinfo | None = None) -> None:
        self._clock = EximClock(now, tz)

    def parse(self, line: str) -> Event | None:
        grammar = _MAINLOG
        m = _MAINLOG_MATCH(line)
        if m is None:
            grammar = _SYSLOG
            m = _SYSLOG_MATCH(line)
            if m is None:
                grammar = _SYSLOG_NG
                m = _SYSLOG_NG_MATCH(line)
                if m is None:
                    return None
        try:
            event = grammar.builders[m.lastindex](m, self._clock)  # type: ignore[index,misc]
        except ValueError:  # a day or hour out of range: not a real timestamp
            return None
        if (
            line.count(") [") > 1  # cheap first: the line names a host twice, perhaps
            and event is not None
            and event.client_ip is not None
            and _SECOND_HOST.search(line, m.end(grammar.client_ends[m.lastindex]))  # type: ignore[index]
        ):
            return event._replace(client_ip=None, client_name=None, helo=None)
        return event

    def branch(self, line: str) -> str | None:
        for grammar in _GRAMMARS:
            m = grammar.match(line)
            if m is not None:
                return m.lastgroup
        return None

    def state(self) -> object:
        return None

    def restore(self, state: object) -> None:
        return None
