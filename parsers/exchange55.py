"""Exchange Server 5.5: the Internet Mail Service's SMTP protocol log (family ``ims``) and the
message tracking log of Exchange 4.0/5.0/5.5 (family ``exchange55-tracking``).

No real file of either format is public; both grammars rest on the Microsoft KB articles in
``../shared/corpus/exchange55`` (``reference/log-formats.md`` §6): the IMS log on the excerpts of
KB Q262945 and Q295725 and on fphkb.com's copy of one (with the addresses its page lost), the
tracking log on KB Q173280 (fields) and Q173364 (event numbers).  What they leave open is
decided below and said where it is decided.

**IMS protocol log** (``\\exchsrvr\\IMCData\\Log\\SMTP*.log``, diagnostics logging "SMTP Interface
Events" at maximum)::

    5/13/00 2:36:27 PM : A connection was accepted from SERVER1.
    5/13/00 2:36:28 PM : <<< RCPT TO:<janed@company2.com> NOTIFY=FAILURE,DELAY
    5/13/00 2:36:28 PM : >>> 250 OK - Recipient <janed@company2.com>

Local time (the parser's ``tz``), ``M/D/YY`` (years 70–99 are 19xx, others 20xx).
``A connection was accepted from <host>`` starts a session (``CONNECT``; ``client_ip`` only when
the host is an address, else ``client_name``); ``<<<`` lines are the client's commands
(``COMMAND``), ``>>>`` lines the replies (``REPLY``), matched in order by the correlator.  The
log names no session: program ``ims``, ``pid`` ``None``, so sessions are told apart only by
their ``A connection was accepted`` lines; sessions the service ran at the same time interleave
in the log and cannot be separated (KB Q295725 shows a second connection accepted while the
first waits in DATA).  Kept as state, because the lines alone do not say it:

* the later lines of a multi-line reply (``250-XEXCH50`` … ``250 AUTH=LOGIN``, written with no
  prefix, or with ``>>>``) are ``CLIENT_NOTE`` events, never a second reply;
* a ``334`` reply is a step of SMTP AUTH, and the client's next lines are its SASL answers, not
  commands: both are ``CLIENT_NOTE`` events, so the reply that ends the exchange (``235`` or
  ``535``) answers the ``AUTH`` command;
* after ``354`` the client's lines are its message, not commands, until the server replies;
* ``IO:`` lines (fphkb.com) are the raw data a command line repeats: ``CLIENT_NOTE``.

``550 relaying prohibited`` (KB Q193922), ``550 5.7.1 Relaying prohibited`` (KB Q304897) and
``550 Unable to relay for <x>`` (KB Q230309) set ``relay_refused``.

**Message tracking log** (``\\Exchsrvr\\Tracking.log\\yyyymmdd.log``, GMT, tab separated): a
record is one line of fields 1–13 (Message ID, Event Number, Date/Time, Gateway Name, Partner
Name, Remote ID, Originator, Priority, Length, Seconds, Cost, Subject-ID, Recipients), then one
line per recipient (field 14, Recipient Name, "separated from the previous field by a linefeed
… repeated for each recipient", with field 15, the report status, after a tab).  The parser
keeps the record being read as its state; a recipient line belongs to it until as many have
come as field 13 counts.  Guessed where the KB is silent: the Date/Time is written ``yyyy/m/d``,
``yyyy-m-d`` or ``m/d/yy[yy]`` with ``h:mm:ss`` and an optional ``GMT``; a recipient line holds
one recipient, perhaps after tabs; ``SMTP:`` before an address is Exchange's proxy type and is
dropped; the Remote ID of an IMS event is the message's Internet Message-ID.

Events (KB Q173364): 1012 SMTP Received Inbound → ``QUEUED`` (sender, size, recipient count,
Message-ID) and a ``RECIPIENT`` per recipient; 1014 SMTP Message Rerouted (Exchange's word for
relaying) and 1010 SMTP Queued Outbound → a ``DELIVERY`` by agent ``smtp`` still queued; 1011
SMTP Transferred Outbound → ``DELIVERY`` ``smtp`` sent; 1000 Local Delivery → ``DELIVERY``
``local`` sent; each ``DELIVERY`` is one recipient line, with the Partner Name as ``relay``, and
the record's own line is a ``CLIENT_NOTE``.  Other events are understood and ignored
(``CLIENT_NOTE``).  The log names no
SMTP client: Partner Name is the component the message was handed to (the MTA, the information
store), Remote ID the gateway's message id.  So a relayed message (1012 → 1014 → 1011) is seen,
but not who sent it: that is in the IMS protocol log of the same hours.
"""

from __future__ import annotations

import ipaddress
import re
import time
from calendar import timegm
from collections.abc import Callable
from datetime import datetime, tzinfo
from functools import lru_cache
from typing import Any, Final

import pyparsing as pp

from parsers.events import Event, Kind
from parsers.grammar import LineGrammar, LineTime, Message, compile_lines, to_regex
from parsers.protocol import ENDS_AT_LAST_RECIPIENT, ENDS_AT_REMOVED

IMS_FAMILY: Final = "ims"
TRACKING_FAMILY: Final = "exchange55-tracking"
IMS_PROGRAM: Final = "ims"
TRACKING_PROGRAM: Final = "tracking"

RELAY_REFUSALS: Final = re.compile(r"(?i)(?:relaying prohibited|unable to relay\b)")
"""Reply texts (after the code and enhanced code) that mean "I do not relay for you"; they
must start the text: an address quoted later in a reply is the client's."""

_CACHE_LIMIT = 4096


def _re(pattern: str, name: str) -> pp.ParserElement:
    return pp.Regex(pattern).set_name(name)


def _lit(text: str) -> pp.Literal:
    return pp.Literal(text)


def _year(year: int) -> int:
    """A year as written with two digits (or four): 70–99 are 19xx, others 20xx."""
    if year >= 100:
        return year
    return year + (1900 if year >= 70 else 2000)


def _hour(hour: int, half: str | None) -> int:
    """``hour`` on a 24-hour clock; ``half`` is ``AM``/``PM`` on a 12-hour one."""
    if half is None:
        return hour
    if not 1 <= hour <= 12:
        raise ValueError(f"no hour {hour} {half}")
    return hour % 12 + (12 if half.upper() == "PM" else 0)


# -- IMS protocol log -----------------------------------------------------------------------

STAMP: Final = _re(
    r"(?P<stamp>\d{1,2}/\d{1,2}/\d{2,4} \d{1,2}:\d\d:\d\d(?: [AaPp][Mm])?)", "timestamp"
) + _lit(" : ")
"""``5/13/00 2:36:27 PM : `` (local time; a 24-hour clock is read too)."""

CONNECT: Final = (
    _lit("A connection was accepted from ")
    + _re(r"(?P<client_name>[^ ]*[^ .])\.?", "host")
    + pp.StringEnd()
)
"""``A connection was accepted from SERVER1.`` (the name IMS found for the client, or its
address; the last dot ends the sentence)."""

IO: Final = _re(r"(?:<<<|>>>) (?P<reason>IO:.*)", "raw data")
"""``<<< IO: |HELO pop3.test.com``: what the next line says again, as read from the socket."""

# possessive quantifiers (``++``): what they give back could never let the rest match
HELO: Final = _re(r"(?P<stage>(?i:HELO|EHLO))(?![^ ])(?: ++(?P<helo>[^ ]++))?.*", "helo")
MAIL: Final = _re(
    r"(?P<stage>(?i:MAIL)) ++(?i:FROM): *+(?P<sender><[^<>]*+>|[^<> ]++)?.*", "mail from"
)
RCPT: Final = _re(
    r"(?P<stage>(?i:RCPT)) ++(?i:TO): *+(?P<recipient><[^<>]*+>|[^<> ]++)?.*", "rcpt to"
)
AUTH: Final = _re(r"(?P<stage>(?i:AUTH)) ++(?P<sasl_method>[-\w]++).*", "auth")
COMMAND: Final = _re(r"(?P<stage>[^ ]*).*", "command")
"""Any other line of the client (``DATA``, ``QUIT``, ``RSET``, an unknown verb): the server
answers it, so it is a command whatever it says."""

REPLY: Final = (
    _re(r"(?P<code>[1-5]\d\d)(?:[- ]|$)", "code")
    + pp.Opt(_re(r"(?P<enhanced>[245]\.\d{1,3}\.\d{1,3})(?: |$)", "enhanced code"))
    + _re(r"(?P<reason>.*)", "text")
)
"""``250 OK - Recipient <janed@company2.com>``, ``550 5.7.1 Relaying prohibited``, or the first
line of a multi-line reply (``250-server2.COMPANY2.COM Hello [server2]``)."""

CONTINUATION: Final = (
    _re(r"(?P<code>[1-5]\d\d)", "code")
    + pp.Opt(_re(r"[- ](?P<reason>.*)", "text"))
    + pp.StringEnd()
)
"""A later line of a multi-line reply, written with no prefix (``250-XEXCH50``)."""

connect = Message("connect", Kind.CONNECT, CONNECT)
io = Message("io", Kind.CLIENT_NOTE, IO)
greeting = Message("greeting", Kind.COMMAND, HELO)
mail = Message("mail", Kind.COMMAND, MAIL)
rcpt = Message("rcpt", Kind.COMMAND, RCPT)
auth = Message("auth", Kind.COMMAND, AUTH)
command = Message("command", Kind.COMMAND, COMMAND)
reply = Message("reply", Kind.REPLY, REPLY)

IMS_BODY: Final = pp.MatchFirst(
    [
        io(),
        _lit("<<< ") + pp.MatchFirst([mail(), rcpt(), greeting(), auth(), command()]),
        _lit(">>> ") + reply(),
        connect(),
    ]
)
IMS_MESSAGES: Final = (io, mail, rcpt, greeting, auth, command, reply, connect)


def _upper(verb: str | None) -> str | None:
    return None if verb is None else verb.upper()


def _address(value: str | None) -> str | None:
    """An address without its angle brackets (``<>`` is the null sender, ``""``)."""
    if value is None:
        return None
    return value[1:-1] if value[:1] == "<" else value


_IP_CHARACTERS: Final = re.compile(r"\[?[0-9A-Fa-f:.]{2,45}\]?")


@lru_cache(maxsize=1024)
def _ip_literal(host: str) -> str | None:
    """``host`` as an IP address when it is one (``192.0.2.1``, ``[192.0.2.1]``)."""
    if _IP_CHARACTERS.fullmatch(host) is None:  # a name; and no long string for ipaddress
        return None
    candidate = host[1:-1] if host[:1] == "[" and host[-1:] == "]" else host
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def _client_name(host: str | None) -> str | None:
    return None if host is None or _ip_literal(host) is not None else host


def _client_ip(host: str | None) -> str | None:
    return None if host is None else _ip_literal(host)


def relay_refused(code: str | None, reason: str | None) -> bool:
    """Whether a reply refuses a recipient as a relay, in IMS's own words."""
    return (
        code is not None
        and code[0] in "45"
        and reason is not None
        and RELAY_REFUSALS.match(reason) is not None
    )


IMS_LINE: Final = compile_lines(
    STAMP,
    IMS_BODY,
    IMS_MESSAGES,
    time=LineTime(("stamp",), "clock({stamp})"),
    derived={
        "stage": (_upper, ("stage",)),
        "sender": (_address, ("sender",)),
        "recipient": (_address, ("recipient",)),
        "client_ip": (_client_ip, ("client_name",)),
        "client_name": (_client_name, ("client_name",)),
        "relay_refused": (relay_refused, ("code", "reason")),
    },
)
IMS_LINE.element.parse_with_tabs()  # pyparsing reads tabs as they are, as the regex does
_CONTINUATION_ELEMENT = CONTINUATION.leave_whitespace().parse_with_tabs().set_name("continuation")
IMS_CONTINUATION: Final = LineGrammar(
    _CONTINUATION_ELEMENT, re.compile(to_regex(_CONTINUATION_ELEMENT), re.ASCII), (), ()
)

_IMS_MATCH = IMS_LINE.regex.match
_IMS_BUILDERS = IMS_LINE.builders
_CONTINUATION_MATCH = IMS_CONTINUATION.regex.match
_GROUPS = IMS_LINE.regex.groupindex
_REPLY: Final = _GROUPS[reply.name]
_REPLY_CODE: Final = _GROUPS[f"code_{IMS_MESSAGES.index(reply)}"]
_CONNECT: Final = _GROUPS[connect.name]
_COMMANDS: Final = frozenset(_GROUPS[m.name] for m in IMS_MESSAGES if m.kind == Kind.COMMAND)
"""``match.lastindex`` of each kind of message (see :class:`parsers.grammar.LineGrammar`)."""
_NEW: Final = tuple.__new__
_NO_FIELDS: Final = tuple(Event._field_defaults[name] for name in Event._fields[5:])


class ImsClock(dict[str, float]):
    """``M/D/YY H:MM:SS AM`` in ``tz`` (the machine's zone when ``None``) to UTC epoch
    seconds: ``clock[stamp]``.  A dict of the stamps seen: the lines of one second share a
    stamp, and a dict's own lookup is the cheapest call Python has."""

    def __init__(self, tz: tzinfo | None = None) -> None:
        super().__init__()
        self._tz = tz

    def __missing__(self, stamp: str) -> float:
        date, clock, *half = stamp.split(" ")
        month, day, year = (int(part) for part in date.split("/"))
        hour, minute, second = (int(part) for part in clock.split(":"))
        when = datetime(
            _year(year), month, day, _hour(hour, half[0] if half else None), minute, second,
            tzinfo=self._tz,
        ).timestamp()  # fmt: skip
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        self[stamp] = when
        return when


class ImsParser:
    """Turns Exchange 5.5 IMS SMTP protocol log lines into events (see the module's text for
    what it keeps between lines)."""

    family = IMS_FAMILY
    message_end = ENDS_AT_REMOVED
    branches = (*(m.name for m in IMS_MESSAGES), "continuation", "reply_step", "client_data")

    def __init__(self, now: Callable[[], float] = time.time, tz: tzinfo | None = None) -> None:
        self._clock = ImsClock(tz).__getitem__
        self._time: float | None = None  # of the last line with a time (continuations have none)
        self._multiline = False  # a multi-line reply goes on
        self._sasl = False  # the server asked for SASL data (334)
        self._data = False  # the server took DATA (354): the client sends its message

    def state(self) -> object:
        return {"time": self._time, "multiline": self._multiline, "sasl": self._sasl,
                "data": self._data}  # fmt: skip

    def restore(self, state: object) -> None:
        saved: dict[str, Any] = state if isinstance(state, dict) else {}
        self._time = saved.get("time")
        self._multiline = bool(saved.get("multiline"))
        self._sasl = bool(saved.get("sasl"))
        self._data = bool(saved.get("data"))

    def parse(self, line: str) -> Event | None:
        m = _IMS_MATCH(line)
        if m is None:
            return self._continuation(line) if self._multiline else None
        message = m.lastindex
        try:
            event = _IMS_BUILDERS[message](m, self._clock)  # type: ignore[index,misc]
        except ValueError:  # a day or hour out of range: not a real timestamp
            return None
        self._time = event[0]
        if message == _REPLY:
            return self._reply(event, m)
        self._multiline = False
        if message in _COMMANDS:
            if self._sasl or self._data:  # SASL data, or the message: not commands
                return _NEW(Event, (event[0], "", IMS_PROGRAM, None, Kind.CLIENT_NOTE,
                                    *_NO_FIELDS))  # fmt: skip
        elif message == _CONNECT:
            self._sasl = self._data = False
        return event

    def _reply(self, event: Event, m: re.Match[str]) -> Event:
        end = m.end(_REPLY_CODE)
        more = m.string[end : end + 1] == "-"
        if self._multiline:  # a later line of a multi-line reply, written with ">>>"
            self._multiline = more
            return event._replace(kind=Kind.CLIENT_NOTE, relay_refused=False)
        self._multiline = more
        code = event[15]
        if code == 334:  # a step of SMTP AUTH, not its outcome
            self._sasl = True
            return event._replace(kind=Kind.CLIENT_NOTE)
        self._sasl = False
        self._data = code == 354
        return event

    def _continuation(self, line: str) -> Event | None:
        if self._time is None:
            return None
        m = _CONTINUATION_MATCH(line)
        if m is None:
            return None
        self._multiline = line[3:4] == "-"
        return Event(self._time, "", IMS_PROGRAM, None, Kind.CLIENT_NOTE,
                     code=int(m["code"]), reason=m["reason"])  # fmt: skip

    def branch(self, line: str) -> str | None:
        probe = ImsParser()
        probe.restore(self.state())
        event = probe.parse(line)
        if event is None:
            return None
        m = _IMS_MATCH(line)
        if m is None:
            return "continuation"
        name = m.lastgroup
        if name == "reply" and event.kind != Kind.REPLY:
            return "reply_step"
        if name in ("mail", "rcpt", "greeting", "auth", "command") and event.kind != Kind.COMMAND:
            return "client_data"
        return name


# -- message tracking log -------------------------------------------------------------------

TAB = _lit("\t")

RECORD: Final = (
    _re(r"(?P<queue_id>[^\t]+)", "message id")
    + TAB
    + _re(r"(?P<event>\d{1,5})", "event number")
    + TAB
    + _re(
        r"(?P<stamp>\d{1,4}[-/]\d{1,2}[-/]\d{1,4} \d{1,2}:\d{1,2}:\d{1,2}(?: [AaPp][Mm])?)"
        r"(?: GMT)?",
        "date/time",
    )
    + TAB
    + _re(r"[^\t]*", "gateway name")
    + TAB
    + _re(r"(?P<relay>[^\t]*)", "partner name")
    + TAB
    + _re(r"(?P<message_id>[^\t]*)", "remote id")
    + TAB
    + _re(r"(?P<sender>[^\t]*)", "originator")
    + TAB
    + _re(r"-?\d*", "priority")
    + TAB
    + _re(r"(?P<size>\d*)", "length")
    + TAB
    + _re(r"\d*", "seconds")
    + TAB
    + _re(r"\d*", "cost")
    + TAB
    + _re(r"[^\t]*", "subject id")
    + TAB
    + _re(r"(?P<nrcpt>\d*)", "recipients")
    + _re(r"[\t ]*", "trailing")
    + pp.StringEnd()
)
"""Fields 1–13 of a record (KB Q173280), one line."""

RECIPIENT: Final = (
    _re(r"\t*", "tabs")
    + _re(r"(?P<recipient>[^\t]+)", "recipient name")
    + pp.Opt(_re(r"\t+(?P<status>[01])", "report status"))
    + _re(r"[\t ]*", "trailing")
    + pp.StringEnd()
)
"""Fields 14–15: one recipient of the record, and its report status (reports only)."""


def _grammar(element: pp.ParserElement, name: str) -> LineGrammar:
    element = element.leave_whitespace().parse_with_tabs().set_name(name)
    return LineGrammar(element, re.compile(to_regex(element), re.ASCII), (), ())


TRACKING_RECORD: Final = _grammar(RECORD, "record")
TRACKING_RECIPIENT: Final = _grammar(RECIPIENT, "recipient line")
_RECORD_MATCH = TRACKING_RECORD.regex.match
_RECIPIENT_MATCH = TRACKING_RECIPIENT.regex.match

EVENTS: Final = {
    0: "Message transfer in", 1: "Probe transfer in", 2: "Report transfer in",
    4: "Message submission", 5: "Probe submission", 6: "Probe transfer out",
    7: "Message transfer out", 8: "Report transfer out", 9: "Message delivered",
    10: "Report delivered", 26: "Distribution list expansion", 28: "Message redirected",
    29: "Message rerouted", 31: "Downgrading", 33: "Report absorption",
    34: "Report generation", 43: "Unroutable report discarded", 50: "Gateway deleted message",
    51: "Gateway deleted probe", 52: "Gateway deleted report", 1000: "Local Delivery",
    1001: "Backbone transfer in", 1002: "Backbone transfer out", 1003: "Gateway transfer out",
    1004: "Gateway transfer in", 1005: "Gateway report transfer in",
    1006: "Gateway report transfer out", 1007: "Gateway report generation",
    1010: "SMTP Queued Outbound", 1011: "SMTP Transferred Outbound",
    1012: "SMTP Received Inbound", 1013: "SMTP Transferred Inbound",
    1014: "SMTP Message Rerouted", 1015: "SMTP Report Transferred In",
    1016: "SMTP Report Transferred Out", 1017: "SMTP Report Generated",
    1018: "SMTP Report Absorbed",
}  # fmt: skip
"""Event numbers of Exchange 5.0/5.5 (KB Q173364)."""

RECEIVED: Final = 1012
DELIVERIES: Final = {
    1000: ("local", "sent"),
    1010: ("smtp", None),
    1011: ("smtp", "sent"),
    1014: ("smtp", None),
}
"""Events that move a message towards its recipients: (agent, status); a status of ``None``
leaves the recipient queued (rerouted, queued outbound), ``sent`` is final."""


def _proxy(address: str) -> str:
    """An address without Exchange's ``SMTP:`` proxy type."""
    return address[5:] if address[:5].upper() == "SMTP:" else address


def _tracking_time(stamp: str) -> float:
    """``yyyy/m/d h:mm:ss``, ``yyyy-m-d …`` or ``m/d/yy[yy] …`` (GMT) in epoch seconds."""
    date, clock, *half = stamp.split(" ")
    first, second, third = (int(part) for part in re.split(r"[-/]", date))
    year, month, day = (first, second, third) if first > 31 else (_year(third), first, second)
    hour, minute, sec = (int(part) for part in clock.split(":"))
    moment = datetime(year, month, day, _hour(hour, half[0] if half else None), minute, sec)
    return float(timegm(moment.timetuple()))


class Exchange55TrackingParser:
    """Turns Exchange 4.0/5.0/5.5 message tracking log lines into events; keeps the record
    being read (its message id, event, time, partner and the recipients still to come)."""

    family = TRACKING_FAMILY
    message_end = ENDS_AT_LAST_RECIPIENT
    branches: tuple[str, ...] = (
        "received", "delivery", "other", "received_recipient", "delivered_recipient",
        "other_recipient",
    )  # fmt: skip

    def __init__(self, now: Callable[[], float] = time.time, tz: tzinfo | None = None) -> None:
        self._record: dict[str, Any] | None = None
        self._before: tuple[object, ...] = ()  # the fields of its recipients' events before …
        self._after: tuple[object, ...] = ()  # … and after the recipient
        self._times: dict[str, float] = {}

    def state(self) -> object:
        return None if self._record is None else dict(self._record)

    def restore(self, state: object) -> None:
        self._open(dict(state) if isinstance(state, dict) else None)

    def _open(self, record: dict[str, Any] | None) -> None:
        """Read the recipient lines of ``record`` from now on (none when ``None``)."""
        self._record = record
        if record is None:
            return
        number = record["event"]
        name = EVENTS.get(number, f"event {number}")
        kind, agent, status, relay = Kind.CLIENT_NOTE, None, None, None
        reason: str | None = name
        if number == RECEIVED:
            kind, reason = Kind.RECIPIENT, None
        elif number in DELIVERIES:
            kind, relay = Kind.DELIVERY, record["relay"]
            agent, status = DELIVERIES[number]
        fields = (
            record["time"], "", TRACKING_PROGRAM, None, kind, record["queue_id"], None, None,
            None, None, None, None, None, None, None, None, None, status, reason, relay, None,
            None, None, False, False, None, agent,
        )  # fmt: skip
        self._before, self._after = fields[:12], fields[13:]  # the recipient is field 12

    def parse(self, line: str) -> Event | None:
        m = _RECORD_MATCH(line)
        if m is not None:
            try:
                return self._record_line(m)
            except ValueError:  # a date out of range: not a record
                self._record = None
                return None
        record = self._record
        if record is None:
            return None
        m = _RECIPIENT_MATCH(line)
        recipient = None if m is None else m[1].strip()
        if not recipient:
            return None
        if recipient[:5].upper() == "SMTP:":
            recipient = recipient[5:]
        left = record["left"]
        if left is not None:
            record["left"] = left - 1
            if left <= 1:
                self._record = None
        return _NEW(Event, (*self._before, recipient, *self._after))

    def _record_line(self, m: re.Match[str]) -> Event:
        queue_id, number_text, stamp, relay, message_id, sender, size, nrcpt = m.group(
            "queue_id", "event", "stamp", "relay", "message_id", "sender", "size", "nrcpt"
        )
        when = self._times.get(stamp)
        if when is None:
            when = _tracking_time(stamp)
            if len(self._times) >= _CACHE_LIMIT:
                self._times.clear()
            self._times[stamp] = when
        number = int(number_text)
        count = int(nrcpt) if nrcpt else None
        queue_id = queue_id.strip()
        self._open({"queue_id": queue_id, "event": number, "time": when,
                    "relay": relay or None, "left": count or None})  # fmt: skip
        name = EVENTS.get(number) or f"event {number}"
        if number == RECEIVED:
            return _NEW(Event, (
                when, "", TRACKING_PROGRAM, None, Kind.QUEUED, queue_id, None, None, None, None,
                None, _proxy(sender) or None, None, None, None, None, None, None, name, None,
                message_id.strip("<>") or None, int(size) if size else None, count, False,
                False, None, None,
            ))  # fmt: skip
        return _NEW(Event, (
            when, "", TRACKING_PROGRAM, None, Kind.CLIENT_NOTE, queue_id, None, None, None, None,
            None, None, None, None, None, None, None, None, name, None, None, None, None, False,
            False, None, None,
        ))  # fmt: skip

    def branch(self, line: str) -> str | None:
        probe = Exchange55TrackingParser()
        probe.restore(self.state())
        event = probe.parse(line)
        if event is None:
            return None
        recipient_line = TRACKING_RECORD.regex.match(line) is None
        kind = event.kind
        if kind in (Kind.QUEUED, Kind.RECIPIENT):
            return "received_recipient" if recipient_line else "received"
        if kind == Kind.DELIVERY:
            return "delivered_recipient"
        if recipient_line:
            return "other_recipient"
        number = int(line.split("\t", 2)[1])
        return "delivery" if number in DELIVERIES else "other"
