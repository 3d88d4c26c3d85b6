"""The start of syslog lines: timestamps, classic BSD (no year, no zone) or RFC 3339, and host."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, tzinfo

import pyparsing as pp

from parsers.events import Event
from parsers.grammar import LineGrammar, LineTime
from parsers.protocol import Stateless

HEADER_START = (
    pp.Regex(
        r"(?P<rfc3339>\d\d\d\d-[^ ]+)"
        r"|(?P<classic>[^ \d]{3,5} [ \d]?\d \d\d:\d\d:\d\d)"
    ).set_name("timestamp")
    + pp.Literal(" ")
    + pp.Regex(r"(?P<host>[^ ]+)").set_name("host")
    + pp.Literal(" ")
)
"""``<time> <host> `` of a syslog line.  An RFC 3339 stamp is only sketched: ``TIME`` rejects
what is not a time with a zone, and checking each character here cost a quarter of the
envelope's matching.  Character classes are spelled out (``[^ ]`` rather than
``\\S``): the regex engine tests them faster."""

PID = pp.Literal("[") + pp.Regex(r"(?P<pid>\d+)").set_name("pid") + pp.Literal("]: ")
"""``[<pid>]: `` after the program name."""


def _no_zone(stamp: str) -> float:
    raise ValueError(f"no zone in {stamp!r}")


TIME = LineTime(
    ("rfc3339", "classic"),
    "(stamp.timestamp() if (stamp := iso({rfc3339})).tzinfo is not None else no_zone({rfc3339}))"
    " if {rfc3339} is not None else clock({classic})",
    {"iso": datetime.fromisoformat, "no_zone": _no_zone},
)
"""The time of a line that starts with ``HEADER_START``; the parser's clock is
:meth:`SyslogClock.classic`."""

_MONTH_NAMES = (
    "jan feb mar apr may jun jul aug sep oct nov dec",  # C and English locales
    "jan feb mär apr mai jun jul aug sep okt nov dez",  # German
    "janv. févr. mars avr. mai juin juil. août sept. oct. nov. déc.",  # French
    "ene feb mar abr may jun jul ago sep oct nov dic",  # Spanish
    "gen feb mar apr mag giu lug ago set ott nov dic",  # Italian
    "jan feb mrt apr mei jun jul aug sep okt nov dec",  # Dutch
    "jan fev mar abr mai jun jul ago set out nov dez",  # Portuguese
    "jan feb mar apr maj jun jul aug sep okt nov dec",  # Swedish, Danish, Norwegian
)
"""Abbreviated month names as glibc locales write them (``%b``): syslog daemons that format
the timestamp in the system locale write these.  Read without regard to case or a final dot."""
_MONTHS = {
    name.rstrip("."): number
    for names in _MONTH_NAMES
    for number, name in enumerate(names.split(), 1)
}
_CACHE_LIMIT = 4096
_FUTURE_SLACK = 86400.0  # a line more than a day ahead of the clock belongs to the previous year


class SyslogClock:
    """Turns syslog timestamps into UTC epoch seconds.

    A classic timestamp (``Nov  3 08:01:02``) has no year: it takes the year that puts it no more
    than a day in the future of ``now``, so a log spanning New Year read in January dates its
    December lines to the previous year.  It is read in ``tz`` (the local zone when ``None``),
    the zone syslog wrote it in.  Conversions are cached: lines of one second share a string.
    """

    def __init__(self, now: Callable[[], float] = time.time, tz: tzinfo | None = None) -> None:
        self._now = now
        self._tz = tz
        self._classic: dict[str, float] = {}

    def classic(self, stamp: str) -> float:
        cached = self._classic.get(stamp)
        if cached is not None:
            return cached
        month_name, day, clock = stamp.split()
        month = _MONTHS.get(month_name.lower().rstrip("."))
        if month is None:
            raise ValueError(f"no month {month_name!r}")
        hour, minute, second = clock.split(":")
        now = self._now()
        year = datetime.fromtimestamp(now, self._tz).year
        when = self._epoch(year, month, int(day), int(hour), int(minute), int(second))
        if when > now + _FUTURE_SLACK:
            when = self._epoch(year - 1, month, int(day), int(hour), int(minute), int(second))
        if len(self._classic) >= _CACHE_LIMIT:
            self._classic.clear()
        self._classic[stamp] = when
        return when

    def _epoch(self, year: int, month: int, day: int, hour: int, minute: int, sec: int) -> float:
        for candidate in range(year, year - 8, -1):  # Feb 29 exists only in leap years
            try:
                return datetime(
                    candidate, month, day, hour, minute, sec, tzinfo=self._tz
                ).timestamp()
            except ValueError:
                continue
        raise ValueError(f"no year has {month}-{day}")


class SyslogLineParser(Stateless):
    """A family whose lines are syslog lines read whole by one compiled grammar, ``LINE``
    (Postfix, Sendmail): one regular expression match a line, then the event builder of the
    message that matched.

    ``now`` is the clock used to give classic syslog timestamps their year; ``tz`` is the zone
    those timestamps were written in (local time when ``None``).  :meth:`parse` never raises:
    a line it does not understand gives ``None``.
    """

    LINE: LineGrammar

    def __init__(self, now: Callable[[], float] = time.time, tz: tzinfo | None = None) -> None:
        self._clock = SyslogClock(now, tz).classic
        self._match = self.LINE.regex.match
        self._builders = self.LINE.builders

    def parse(self, line: str) -> Event | None:
        m = self._match(line)
        if m is None:
            return None
        try:
            return self._builders[m.lastindex](m, self._clock)  # type: ignore[index,misc]
        except ValueError:  # a day or hour out of range: not a real timestamp
            return None

    def branch(self, line: str) -> str | None:
        m = self._match(line)
        return None if m is None else m.lastgroup
