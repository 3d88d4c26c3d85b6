"""Grammars are written with pyparsing and run as the regular expression they stand for.

pyparsing keeps the grammars readable, composable and testable; calling ``parse_string`` for
every log line would cost about 100 µs a line.  :func:`compile_grammar` walks a grammar built
from the subset of pyparsing used in ``parsers/`` and emits one regular expression with the
same meaning: every element becomes an atomic group, because pyparsing never backtracks into
an element once it has matched.  That also rules out catastrophic backtracking by construction.
Results names become named groups.  ``tests/parsers/test_grammar.py`` checks on every sample
line that ``parse_string`` and the compiled expression agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyparsing as pp

from parsers.events import EVENT_FIELDS, Event

EventBuilder = Callable[[re.Match[str], float, str, str, "int | None", bool], Event]
"""``build(match, time, host, program, pid, relay_refused) -> Event``."""

_INT_FIELDS = frozenset({"code", "size", "nrcpt"})
_ENVELOPE = ("time", "host", "program", "pid")


class GrammarError(Exception):
    """A grammar uses a pyparsing construct the compiler does not translate."""


def _element_pattern(element: pp.ParserElement) -> str:
    if element.skipWhitespace:
        raise GrammarError(f"{element!r} skips whitespace; call leave_whitespace() on the grammar")
    body: str
    if isinstance(element, pp.Regex):
        if element.flags:
            raise GrammarError(f"{element!r} has regex flags; write them inline")
        body = str(element.pattern)
    elif isinstance(element, pp.Literal):  # also matches _SingleCharLiteral
        body = re.escape(element.match)
    elif isinstance(element, pp.Suppress):
        body = _element_pattern(element.expr)
    elif isinstance(element, pp.And):
        body = "".join(_element_pattern(e) for e in element.exprs)
    elif isinstance(element, pp.MatchFirst):
        body = "|".join(_element_pattern(e) for e in element.exprs)
    elif isinstance(element, pp.Opt):
        body = f"(?:{_element_pattern(element.expr)})?"
    elif isinstance(element, pp.ZeroOrMore):
        body = f"(?:{_element_pattern(element.expr)})*"
    elif isinstance(element, pp.OneOrMore):
        body = f"(?:{_element_pattern(element.expr)})+"
    elif isinstance(element, pp.LineEnd | pp.StringEnd):
        body = r"\Z"
    else:
        raise GrammarError(f"cannot compile {type(element).__name__} ({element!r})")
    if element.resultsName:
        return f"(?P<{element.resultsName}>(?>{body}))"
    return f"(?>{body})"


def event_builder(regex: re.Pattern[str], kind: str) -> EventBuilder:
    """Generate the function that turns a match of ``regex`` into an :class:`Event` of ``kind``.

    Named groups whose name is an ``Event`` field fill that field; the function builds the
    tuple positionally (the fastest way Python has to build a record), so it is generated once
    per grammar, the way ``dataclasses`` generates ``__init__``.
    """
    values = []
    for name in EVENT_FIELDS:
        if name in _ENVELOPE or name == "relay_refused":
            values.append(name)
        elif name == "kind":
            values.append(repr(kind))
        elif name in regex.groupindex:
            group = f"g({regex.groupindex[name]})"
            values.append(
                f"(None if (v := {group}) is None else int(v))" if name in _INT_FIELDS else group
            )
        else:
            values.append("None")
    source = (
        "def build(m, time, host, program, pid, relay_refused):\n"
        "    g = m.group\n"
        f"    return new(Event, ({', '.join(values)}))\n"
    )
    namespace: dict[str, Any] = {"new": tuple.__new__, "Event": Event}
    exec(source, namespace)
    builder: EventBuilder = namespace["build"]
    return builder


@dataclass(frozen=True)
class Grammar:
    """A named pyparsing grammar, the regular expression it compiles to and its event builder."""

    name: str
    element: pp.ParserElement
    regex: re.Pattern[str]
    event: EventBuilder

    def parse(self, text: str) -> dict[str, str]:
        """Parse with pyparsing itself (slow; for tests and the rare irregular line)."""
        result: dict[str, str] = self.element.parse_string(text).as_dict()
        return result


def compile_grammar(name: str, element: pp.ParserElement, kind: str = "") -> Grammar:
    """Name ``element``, stop it skipping whitespace and compile it to one regular expression.

    ``kind`` is the :class:`~parsers.events.Kind` of the events the grammar yields.
    """
    element = element.leave_whitespace().set_name(name)
    regex = re.compile(_element_pattern(element))
    return Grammar(name, element, regex, event_builder(regex, kind))


# Tokens shared by the families that log through syslog or name clients the same way.

IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
IP = r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]*|" + IPV4
"""An IPv4 or IPv6 address as MTAs print it (IPv6 unbracketed, possibly IPv4-mapped)."""

MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"

SYSLOG_HEADER = (
    pp.Regex(
        rf"(?P<classic>(?:{MONTHS}) {{1,2}}\d{{1,2}} \d\d:\d\d:\d\d)"
        r"|(?P<rfc3339>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d))"
    ).set_name("timestamp")
    + pp.Literal(" ")
    + pp.Regex(r"(?P<host>[^\s\[\]:]+)").set_name("host")
    + pp.Literal(" ")
    + pp.Regex(r"(?P<program>[^\s\[\]:]+)").set_name("program")
    + pp.Opt(pp.Literal("[") + pp.Regex(r"(?P<pid>\d{1,10})") + pp.Literal("]"))
    + pp.Literal(": ")
)
"""``<time> <host> <program>[<pid>]: `` in classic BSD syslog or RFC 3339 form."""
