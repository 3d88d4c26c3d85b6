"""What Exchange's CSV logs share: header lines, the columns they announce, RFC 4180 rows.

Exchange 2007–2019 writes its message tracking and SMTP protocol logs as CSV under a header of
``#Software:``, ``#Version:``, ``#Log-type:``, ``#Date:`` and ``#Fields:`` lines (a UTF-8 byte
order mark may come before the first ``#``).  ``#Fields:`` names the columns, so a parser reads
columns by name, never by a fixed position.  A field holding a comma or a quote is quoted, with
quotes doubled inside (RFC 4180).

A parser's grammar (pyparsing, compiled into one regular expression) reads a *record*: the
columns it checks, joined with NUL characters.  No column can hold a NUL (the reader replaces
those bytes, and a line with one is refused), so a column's text, a client's included, can
never spill into another column.  Most rows hold no quote: they split at their commas (or, when
the record is the whole row, have their commas replaced); a row with quotes is split as
:mod:`csv` splits it, by :func:`split_row`, a third of the cost of a ``csv.reader`` per line.
"""

from __future__ import annotations

import csv
import re
from contextlib import suppress
from datetime import UTC, datetime
from typing import Final

from parsers.events import Event, Kind

SEP: Final = "\x00"
"""Between the columns of a record."""
BOM: Final = "\ufeff"
COLUMN: Final = r"[^\x00]*"
"""A column whatever it holds."""

UTC_TIME: Final = r"(?P<stamp>\d\d\d\d-\d\d-\d\dT\d\d:\d\d:\d\d)(?P<fraction>\.\d{1,7})?Z"
"""``2023-01-11T15:59:51.433Z``: Exchange writes every time in UTC, with a Z; ``stamp`` is the
second, ``fraction`` what follows it."""
_DATE = re.compile(rf"{UTC_TIME}\Z", re.ASCII)
MAX_COLUMNS: Final = 64
"""Columns of a ``#Fields:`` line read at most (the rest stays in the last one)."""
_HEADER_NAMES: Final = frozenset({"Software", "Version", "Log-type", "Date", "Fields"})

SECONDS: dict[str, float] = {}
"""Epoch seconds of the stamps (to the second) read so far: lines of one second share them."""


def utc_seconds(stamp: str) -> float:
    """Epoch seconds of ``2023-01-11T15:59:51`` (UTC); ``ValueError`` for a day or an hour out
    of range.  Remembered in :data:`SECONDS`, which callers read first."""
    when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    if len(SECONDS) >= 4096:
        SECONDS.clear()
    SECONDS[stamp] = when
    return when


TIME_EXPRESSION: Final = (
    "(seconds({stamp}) or utc_seconds({stamp})) + (float({fraction}) if {fraction} else 0.0)"
)
"""Python for the time of a record, over the groups of :data:`UTC_TIME` (a LineTime)."""
TIME_NAMES: Final[dict[str, object]] = {"seconds": SECONDS.get, "utc_seconds": utc_seconds}


def split_row(line: str) -> list[str] | None:
    """The columns of a CSV line (RFC 4180 quoting), or ``None`` when it is not one."""
    if '"' not in line:
        return line.split(",")
    row = _split_quoted(line) if line.count('"') <= _QUICK_QUOTES else None
    if row is not None:
        return row
    try:  # what the quick reading leaves: a quote inside a bare field, text after a quoted one
        return next(csv.reader((line,), strict=True))
    except (csv.Error, StopIteration):
        return None


_QUICK_QUOTES = 64
"""Lines with more quotes go to :mod:`csv` at once: the quick reading loops in Python once per
quote (64 KiB of quotes: 40 ms, csv: 1 ms)."""


def _split_quoted(line: str) -> list[str] | None:
    """The columns of a line with quoted fields, read as :mod:`csv` reads them (a third of its
    time: a reader per line is dear), or ``None`` for a line that is not plain RFC 4180."""
    parts = line.split('"')  # odd parts are quoted text; an empty even part between them: ""
    last = len(parts) - 1
    if last % 2:
        return None  # a quote left open
    row = parts[0].split(",")
    if row.pop():
        return None  # a quote inside a bare field
    field, index = "", 1
    while index < last:
        field += parts[index]
        after = parts[index + 1]
        index += 2
        if not after and index <= last - 1:
            field += '"'  # a doubled quote inside the field
            continue
        if after and after[0] != ",":
            return None  # text after the closing quote
        row.append(field)
        rest = after[1:].split(",") if after else []
        if index > last:
            return row + rest
        if rest.pop():
            return None  # a quote inside a bare field
        row += rest
        field = ""
    return row


def header(line: str) -> tuple[str, str] | None:
    """``(name, value)`` of an Exchange header line (``#Fields: a,b``), or ``None``."""
    line = line.removeprefix(BOM)
    if line[:1] != "#":
        return None
    name, colon, value = line[1:].partition(": ")
    return (name, value) if colon and name in _HEADER_NAMES else None


class HeaderState:
    """The header lines a parser has seen: the log type and the ``#Fields:`` columns.

    Header lines become :data:`Kind.HEADER` events.  They carry no time but ``#Date:``; they
    take the last time seen, so they never move the correlator's clock backwards or forwards.
    A log whose ``#Log-type:`` is not ``log_type`` is not the parser's: Exchange's Send and
    Receive protocol logs have the same columns.
    """

    def __init__(self, family: str, log_type: str) -> None:
        self.family = family
        self._log_type = log_type
        self.log_type: str | None = None
        self.fields: tuple[str, ...] | None = None
        self.last = 0.0

    @property
    def seen(self) -> bool:
        """Whether a header has said what the rows are (else they may be read by count)."""
        return self.fields is not None or self.log_type is not None

    @property
    def ours(self) -> bool:
        return self.log_type is None or self.log_type == self._log_type

    def event(self, line: str) -> Event | None:
        """The :data:`Kind.HEADER` event of a header line (``None`` for other lines)."""
        parsed = header(line)
        if parsed is None:
            return None
        name, value = parsed
        if name == "Log-type":
            self.log_type, self.fields = value.strip(), None  # a log begins: its #Fields: follows
        elif name == "Fields":  # Exchange writes 30 at most: a longer list is not its own
            self.fields = tuple(value.strip().split(",", MAX_COLUMNS))
        elif name == "Date" and (date := _DATE.match(value)) is not None:
            with suppress(ValueError):  # a day or an hour out of range
                second = SECONDS.get(date["stamp"]) or utc_seconds(date["stamp"])
                self.last = second + float(date["fraction"] or 0)
        return Event(self.last, "", self.family, None, Kind.HEADER, reason=f"{name}: {value}")

    def state(self) -> object:
        return {"log_type": self.log_type, "fields": self.fields}

    def restore(self, state: object) -> None:
        saved = state if isinstance(state, dict) else {}
        log_type, fields = saved.get("log_type"), saved.get("fields")
        self.log_type = log_type if isinstance(log_type, str) else None
        ok = isinstance(fields, list | tuple) and all(isinstance(f, str) for f in fields)
        self.fields = tuple(fields) if ok and fields is not None else None
