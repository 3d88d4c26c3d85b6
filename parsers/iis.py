"""IIS SMTP service (SMTPSVC of IIS 5–10, also the SMTP of Exchange 2000/2003): W3C extended
logs to events, and the NCSA common format of the same service.

A W3C log says what its rows hold in its header (``#Software:``, ``#Version:``, ``#Date:``,
``#Fields:``), written again at every start of the service; each ``#Fields:`` line sets the
columns, which this parser keeps as its state (:meth:`IisW3cParser.state`).  Rows before any
header of its own give nothing.  One row is one SMTP command and the reply code IIS gave to it
(``sc-status``): a ``COMMAND`` that carries its ``code`` (:class:`parsers.events.Session`).
Values are space separated, spaces inside them written ``+``, empty ones ``-``.  Times are read
as UTC, in which IIS writes W3C extended logs (its local-time option is for naming and rolling
over the files; ``tz`` is not used); a layout
with ``time`` but no ``date`` takes the day from ``#Date:`` (and the next one when the clock
goes back by more than twelve hours), a layout with neither dates every row at ``#Date:``.

What IIS logs and what it does not (``reference/log-formats.md`` §5):

* no session id: a session is ``(c-ip, cs-username)``, where ``cs-username`` is the name the
  client gave in HELO/EHLO (``-`` before it); ``pid`` is ``"<c-ip> <cs-username>"``, ``program``
  the site (``s-sitename``, e.g. ``SMTPSVC1``) or ``SMTPSVC``.  Concurrent sessions of one client
  under one HELO name share a key and mix (their recipients still belong to that client).
* no reply text, only the code: a ``RCPT`` answered 5xx is a refusal with no reason
  (``refusal_unexplained``), which the classifier counts as a refused relay only when the domain
  is not ours.  No authenticated user either: an ``AUTH`` answered 2xx makes the session
  authenticated as ``(not logged)`` (the correlator's ``NOT_LOGGED``); an ``AUTH`` row answered
  3xx is a step of the SASL exchange, not its outcome (a ``CLIENT_NOTE``).
* ``QUIT`` ends the session (a ``DISCONNECT``, with its stage and code), so what a session
  learnt (its AUTH) does not pass to the next one of the same client and name.
* ``xxxx`` is a verb a Cisco PIX Mailguard masked before IIS saw it; IIS answered it (500), so
  it stays a ``COMMAND`` (stage ``XXXX``) that changes nothing.
* rows with ``cs-username`` ``OutboundConnectionCommand``/``OutboundConnectionResponse`` are IIS
  itself delivering mail to another server (``c-ip`` is that server): ``CLIENT_NOTE`` events with
  ``relay`` = that address and no client.  They carry no message id, so nothing ties them to the
  message they deliver; an accepted relay shows as its ``RCPT`` answered 2xx.  A client cannot
  pass its own rows off as these by naming itself so in HELO: IIS logs the code it gave the
  client (outbound rows log 0), and in a layout without ``sc-status`` the ``+`` it writes before
  the argument of a client's ``MAIL`` and ``RCPT`` still tells them apart.
* the message id is the ``DATA`` row's argument (the Message-ID header of the message, or the
  one IIS made up); the argument of ``MAIL``/``RCPT`` gives the sender/recipient.

The NCSA common format of the SMTP service (``c-ip - cs-username [time zone] "VERB -?query
SMTP" status bytes``, ``iis_smtp/ossec-docs/exchange2000.rst``) has no header: a line is
recognised by its shape (a bracketed time with its zone, a quoted request ending in `` SMTP``),
so it parses wherever it appears.  It has no site name (``program`` is ``SMTPSVC``); its time
carries its own UTC offset.  The "Microsoft IIS log file format" (comma separated, local time
with no zone) is not read.
"""

from __future__ import annotations

import re
import time
from calendar import timegm
from collections.abc import Callable
from datetime import date as datetime_date
from datetime import tzinfo
from functools import lru_cache
from operator import itemgetter
from typing import Any, Final

import pyparsing as pp

from parsers.events import Event, Kind
from parsers.grammar import IP, LineGrammar, to_regex
from parsers.protocol import ENDS_AT_REMOVED

FAMILY: Final = "iis-w3c"
PROGRAM: Final = "SMTPSVC"
"""``program`` of rows with no ``s-sitename`` column (and of NCSA lines)."""

OUTBOUND_COMMAND: Final = "OutboundConnectionCommand"
OUTBOUND_RESPONSE: Final = "OutboundConnectionResponse"
REQUIRED_COLUMNS: Final = ("c-ip", "cs-method")
"""A ``#Fields:`` line without these is not an SMTP service log of IIS (Exchange 2007+ CSV
logs have ``#Fields:`` too): its rows are left alone."""

_CACHE_LIMIT = 4096
_HALF_DAY = 43200


def _re(pattern: str, name: str) -> pp.ParserElement:
    return pp.Regex(pattern).set_name(name)


def _lit(text: str) -> pp.Literal:
    return pp.Literal(text)


def _compiled(element: pp.ParserElement) -> LineGrammar:
    element = element.leave_whitespace().parse_with_tabs()  # tabs as they are, as in the regex
    return LineGrammar(element, re.compile(to_regex(element), re.ASCII), (), ())


# -- header ---------------------------------------------------------------------------------

HEADER_LINE: Final = _compiled(
    _re(r"#(?P<stage>[A-Za-z][A-Za-z-]{0,30}):", "directive")
    + _re(r" *(?P<reason>.*)", "value")
    + pp.StringEnd()
)
"""``#Directive: value``: ``Software``, ``Version``, ``Date``, ``Fields``, ``Remark`` …"""

HEADER_DATE: Final = _compiled(
    _re(r"(?P<date>\d{4}-\d{1,2}-\d{1,2})", "date")
    + _re(r" +", "space")
    + _re(r"(?P<time>\d{1,2}:\d{1,2}:\d{1,2})(?:\.\d+)?", "time")
    + _re(r" *", "trailing spaces")
    + pp.StringEnd()
)
"""The value of ``#Date:`` (UTC)."""

HEADER_BRANCHES: Final = {"Software": "software", "Version": "version", "Date": "date",
                          "Fields": "fields"}  # fmt: skip

# -- rows -----------------------------------------------------------------------------------

QUERY: Final = pp.MatchFirst(
    [
        _re(r"\+?(?i:FROM):\+?(?P<sender><[^<> ]*>|[^<>+ ]+)?[^ ]*", "mail from"),
        _re(r"\+?(?i:TO):\+?(?P<recipient><[^<> ]*>|[^<>+ ]+)?[^ ]*", "rcpt to"),
        _re(r"\+?(?P<message_id><[^<> ]+>)[^ ]*", "message id"),
        _re(r"(?P<argument>[^ ]+)", "argument"),
    ]
).set_results_name("query")
"""``cs-uri-query``: the command's argument, ``+`` for its spaces: ``+FROM:<a@b>+SIZE=10``,
``+TO:+<x@y>``, ``+<message-id>`` (DATA), ``+name`` (HELO), ``+LOGIN`` (AUTH) or ``-``.  Which of
them is the sender, recipient or message id is decided by the verb, not by the shape: a client
can send ``HELO FROM:<x>``."""

COLUMNS: Final[dict[str, pp.ParserElement]] = {
    # one character class each: cheaper to match; _day and _seconds refuse what is no time
    "date": _re(r"(?P<date>[0-9-]+)", "date"),
    "time": _re(r"(?P<time>[0-9:.]+)", "time"),
    "c-ip": _re(r"(?P<client_ip>[0-9A-Fa-f:.]+)", "client ip"),
    "cs-username": _re(r"(?P<username>[^ ]+)", "helo name"),
    "s-sitename": _re(r"(?P<program>[^ ]+)", "site"),
    "s-computername": _re(r"(?P<host>[^ ]+)", "computer name"),
    "cs-method": _re(r"(?P<stage>[^ ]+)", "verb"),
    "cs-uri-query": QUERY,
    "sc-status": _re(r"(?P<code>\d{1,4}|-)", "status"),
}
"""The columns the parser reads; any other is one value (``[^ ]+``)."""
OTHER_COLUMN: Final = _re(r"[^ ]+", "value")


@lru_cache(maxsize=32)
def row_grammar(columns: tuple[str, ...]) -> LineGrammar:
    """The grammar of the rows under ``#Fields: <columns>``: the values in their order, one
    space apart (a column named twice is read once)."""
    parts: list[pp.ParserElement] = []
    seen: set[str] = set()
    for column in columns:
        if parts:
            parts.append(_lit(" "))
        known = column in COLUMNS and column not in seen
        seen.add(column)
        parts.append((COLUMNS[column] if known else OTHER_COLUMN.copy().set_name(column)).copy())
    parts.append(_re(r" *", "trailing spaces"))
    parts.append(pp.StringEnd())
    return _compiled(pp.And(parts).set_name("row"))


NCSA: Final = _compiled(
    _re(rf"(?P<client_ip>{IP})", "client ip")
    + _lit(" - ")
    + _re(r"(?P<username>[^ ]+)", "helo name")
    + _lit(" [")
    + _re(r"(?P<stamp>\d{1,2}/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [-+]\d{4})", "time")
    + _lit('] "')
    + _re(r"(?P<stage>[^ ]+)", "verb")
    + _lit(" ")
    + _re(r"[^ ?]*", "uri stem")
    + pp.Opt(_lit("?") + QUERY)
    + _lit(' SMTP" ')
    + _re(r"(?P<code>\d{1,4})", "status")
    + _lit(" ")
    + _re(r"\d+", "bytes")
    + pp.StringEnd()
)
"""``61.47.65.115 - 207.250.64.66 [11/Oct/2006:13:16:41 -0600] "MAIL -?+FROM:+<k@b.example>
SMTP" 250 46`` (the NCSA common format of the SMTP service)."""

_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def _bracketed(value: str | None) -> str | None:
    """An address as the client wrote it, without its angle brackets (``<>`` is ``""``)."""
    if value is None:
        return None
    if value[:1] == "<":
        return value[1:-1]
    return value


def _words(argument: str | None) -> str | None:
    """A ``+``-encoded argument in plain words (``-`` and nothing are ``None``)."""
    if argument is None or argument == "-":
        return None
    return argument.lstrip("+").replace("+", " ") or None


def _seconds(clock: str) -> int:
    hour, minute, second = clock.split(":")
    h, m, s = int(hour), int(minute), int(second[:2])
    if h > 23 or m > 59 or s > 60:
        raise ValueError(f"no time {clock!r}")
    return h * 3600 + m * 60 + s


def _day(date: str) -> int:
    year, month, day = (int(part) for part in date.split("-"))
    return timegm(datetime_date(year, month, day).timetuple())  # ValueError for no such day


def _ncsa_time(stamp: str) -> float:
    """``11/Oct/2006:13:16:41 -0600`` in UTC epoch seconds."""
    day, month, rest = stamp.split("/")
    year, clock = rest[:4], rest[5:13]
    zone = rest[14:]
    if month not in _MONTHS:
        raise ValueError(f"no month {month!r}")
    offset = (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60) * (-1 if zone[0] == "-" else 1)
    return float(_day(f"{year}-{_MONTHS[month]}-{day}") + _seconds(clock) - offset)


class IisW3cParser:
    """Turns IIS SMTP W3C extended (and NCSA) log lines into events; keeps the columns of the
    last ``#Fields:`` line and the day of the last ``#Date:`` line as its state."""

    family = FAMILY
    message_end = ENDS_AT_REMOVED
    branches: tuple[str, ...] = (
        "software", "version", "date", "fields", "directive",
        "helo", "mail", "rcpt", "data", "auth", "auth_step", "quit", "command", "outbound",
        "ncsa",
    )  # fmt: skip

    def __init__(self, now: Callable[[], float] = time.time, tz: tzinfo | None = None) -> None:
        self._columns: tuple[str, ...] | None = None
        self._row: Callable[[str], re.Match[str] | None] | None = None
        self._pick: Callable[[tuple[str | None, ...]], tuple[str | None, ...]] = _NCSA_PICK
        self._has_date = self._has_time = False
        self._date: str | None = None  # the day of #Date:, for a layout with time only
        self._header_time: float | None = None  # #Date: itself
        self._day: int | None = None  # epoch of the day rows with time only are on
        self._last: int | None = None  # seconds into that day of the last such row
        self._days: dict[str, int] = {}
        self._clocks: dict[str, int] = {}
        self._ncsa: dict[str, float] = {}

    # -- state ------------------------------------------------------------------------------

    def state(self) -> object:
        return {
            "columns": None if self._columns is None else list(self._columns),
            "date": self._date,
            "header_time": self._header_time,
            "day": self._day,
            "last": self._last,
        }

    def restore(self, state: object) -> None:
        saved: dict[str, Any] = state if isinstance(state, dict) else {}
        columns = saved.get("columns")
        self._use(None if columns is None else tuple(columns))
        self._date = saved.get("date")
        self._header_time = saved.get("header_time")
        self._day = saved.get("day")
        self._last = saved.get("last")

    def _use(self, columns: tuple[str, ...] | None) -> None:
        self._columns = columns
        grammar = None if columns is None else row_grammar(columns)
        self._row = None if grammar is None else grammar.regex.match
        self._pick = _NCSA_PICK if grammar is None else _picker(grammar)
        self._has_date = columns is not None and "date" in columns
        self._has_time = columns is not None and "time" in columns

    # -- lines ------------------------------------------------------------------------------

    def parse(self, line: str) -> Event | None:
        try:
            if line[:1] == "#":
                return self._header(line)
            row = self._row
            if row is not None:
                m = row(line)
                if m is not None:
                    values = self._pick(m.groups() + _NO_VALUE)
                    return _event(values, self._row_time(values[0], values[1]))
            if line[-1:].isdigit() and ' SMTP" ' in line:
                m = NCSA.regex.match(line)
                if m is not None:
                    stamp = m["stamp"]
                    when = self._ncsa.get(stamp)
                    if when is None:
                        when = self._ncsa_time(stamp)
                    return _event(_NCSA_PICK(m.groups() + _NO_VALUE), when)
        except ValueError:  # a date or time out of range: not a row of ours
            return None
        return None

    def branch(self, line: str) -> str | None:
        probe = IisW3cParser()
        probe.restore(self.state())
        event = probe.parse(line)
        if event is None:
            return None
        if event.kind == Kind.HEADER:
            return HEADER_BRANCHES.get(event.stage or "", "directive")
        if line[:1] != "#" and (self._row is None or self._row(line) is None):
            return "ncsa"
        if event.kind == Kind.DISCONNECT:
            return "quit"
        if event.kind == Kind.CLIENT_NOTE:
            return "outbound" if event.relay is not None else "auth_step"
        return {"HELO": "helo", "EHLO": "helo", "MAIL": "mail", "RCPT": "rcpt", "DATA": "data",
                "AUTH": "auth"}.get(event.stage or "", "command")  # fmt: skip

    def _header(self, line: str) -> Event | None:
        m = HEADER_LINE.regex.match(line)
        if m is None:
            return None
        directive, value = m["stage"], m["reason"]
        if directive == "Fields":
            columns = tuple(value.split())
            if not all(c in columns for c in REQUIRED_COLUMNS):
                self._use(None)
                return None
            self._use(columns)
        elif directive == "Date":
            d = HEADER_DATE.regex.match(value)
            if d is None:
                return None
            day, seconds = _day(d["date"]), _seconds(d["time"])
            self._date, self._day, self._last = d["date"], day, seconds
            self._header_time = float(day + seconds)
        when = self._header_time if self._header_time is not None else 0.0
        return Event(when, "", PROGRAM, None, Kind.HEADER, stage=directive, reason=value.rstrip())

    def _row_time(self, date: str | None, clock: str | None) -> float:
        if date is not None and clock is not None:
            day = self._days.get(date)
            if day is None:
                day = self._remember(self._days, date, _day(date))
            seconds = self._clocks.get(clock)
            if seconds is None:
                seconds = self._remember(self._clocks, clock, _seconds(clock))
            return float(day + seconds)
        if clock is not None:
            if self._day is None:
                raise ValueError("a time with no #Date: to give its day")
            seconds = _seconds(clock)
            if self._last is not None and seconds + _HALF_DAY < self._last:
                self._day += 86400  # past midnight
            self._last = seconds
            return float(self._day + seconds)
        if self._header_time is None:
            raise ValueError("a row with no time and no #Date:")
        return self._header_time

    def _ncsa_time(self, stamp: str) -> float:
        when = _ncsa_time(stamp)
        if len(self._ncsa) >= _CACHE_LIMIT:
            self._ncsa.clear()
        self._ncsa[stamp] = when
        return when

    @staticmethod
    def _remember(cache: dict[str, int], key: str, value: int) -> int:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = value
        return value


def _event(values: tuple[str | None, ...], when: float) -> Event:
    """The event of one row (W3C or NCSA), from its values in the order of :data:`_PICKED`."""
    _, _, ip, user, program, host, method, status, query, sender, recipient, message_id, arg = (
        values
    )
    ip = ip or ""
    user = user or "-"
    program = program or PROGRAM
    host = host or ""
    code = int(status) if status is not None and status != "-" else None
    if user[:8] == "Outbound" and (code is None or code == 0):
        outbound = _outbound(when, host, program, ip, user, method or "-", query or "-",
                             sender, recipient)  # fmt: skip
        if outbound is not None:
            return outbound
    verb = (method or "-").upper()
    pid = f"{ip} {user}"
    kind = Kind.COMMAND
    helo = sasl = None
    if verb == "RCPT":
        refused = code is not None and 500 <= code < 600
        return _NEW(Event, (
            when, host, program, pid, kind, None, ip, None, None, None, None, None,
            _bracketed(recipient), None, verb, code, None, None, None, None, None, None, None,
            False, refused, None, None,
        ))  # fmt: skip
    if verb == "MAIL":
        return _NEW(Event, (
            when, host, program, pid, kind, None, ip, None, None, None, None,
            _bracketed(sender), None, None, verb, code, None, None, None, None, None, None,
            None, False, False, None, None,
        ))  # fmt: skip
    if verb == "DATA":
        return _NEW(Event, (
            when, host, program, pid, kind, None, ip, None, None, None, None, None, None, None,
            verb, code, None, None, None, None, _bracketed(message_id), None, None, False,
            False, None, None,
        ))  # fmt: skip
    if verb == "HELO" or verb == "EHLO":
        helo = user if user != "-" else _words(arg)
    elif verb == "QUIT":
        kind = Kind.DISCONNECT
    elif verb == "AUTH":
        words = _words(arg)
        sasl = words.split(" ", 1)[0] if words else None
        if code is not None and 300 <= code < 400:  # a challenge, not the outcome
            kind = Kind.CLIENT_NOTE
    return _NEW(Event, (
        when, host, program, pid, kind, None, ip, None, helo, sasl, None, None, None, None,
        verb, code, None, None, None, None, None, None, None, False, False, None, None,
    ))  # fmt: skip


def _outbound(
    when: float, host: str, program: str, ip: str, user: str, method: str, query: str,
    sender: str | None, recipient: str | None,
) -> Event | None:  # fmt: skip
    """A row of IIS delivering mail itself (answered 0 or not at all, by a ``-`` verb for a
    response, with no ``+`` before the argument of a command), or ``None``."""
    if user == OUTBOUND_RESPONSE and method == "-":
        reply = _words(query) or ""
        numbered = reply[:3].isdigit()
        return _NEW(Event, (
            when, host, program, f"{ip} outbound", Kind.CLIENT_NOTE, None, None, None, None,
            None, None, None, None, None, None, int(reply[:3]) if numbered else None, None, None,
            (reply[4:] if numbered else reply) or None, ip, None, None, None, False, False, None,
            None,
        ))  # fmt: skip
    if user == OUTBOUND_COMMAND and query[:1] != "+":
        verb = method.upper()
        return _NEW(Event, (
            when, host, program, f"{ip} outbound", Kind.CLIENT_NOTE, None, None, None, None,
            None, None, _bracketed(sender) if verb == "MAIL" else None,
            _bracketed(recipient) if verb == "RCPT" else None, None, verb, None, None, None, None,
            ip, None, None, None, False, False, None, None,
        ))  # fmt: skip
    return None


_PICKED: Final = ("date", "time", "client_ip", "username", "program", "host", "stage", "code",
                  "query", "sender", "recipient", "message_id", "argument")  # fmt: skip
"""The named values of a row the parser reads, in the order :func:`_event` takes them."""
_NO_VALUE: Final = (None,)
_NEW: Final = tuple.__new__


def _picker(grammar: LineGrammar) -> Callable[[tuple[str | None, ...]], tuple[str | None, ...]]:
    """Picks the values of :data:`_PICKED` out of a match's groups with ``None`` added at their
    end, which stands for the names the layout has not."""
    index = grammar.regex.groupindex
    return itemgetter(*(index[name] - 1 if name in index else -1 for name in _PICKED))


_NCSA_PICK: Final = _picker(NCSA)
