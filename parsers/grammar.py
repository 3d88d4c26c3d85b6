"""Grammars are written with pyparsing and run as the regular expression they stand for.

pyparsing keeps the grammars readable, composable and testable; calling ``parse_string`` for
every log line would cost about 100 µs a line.  :func:`compile_lines` walks a family's
whole-line grammar, built from the subset of pyparsing used in ``parsers/``, and emits one
regular expression with the same meaning: regexes, alternatives and optional parts become
atomic groups or possessive quantifiers, because pyparsing never backtracks into an element
once it has matched (which also rules out catastrophic backtracking by construction); results
names become named groups.
It also generates, per message, the function that builds an :class:`Event` from a match.
``tests/parsers/test_grammar.py`` checks on every sample line that pyparsing's own parse and
the compiled expression agree.
"""

from __future__ import annotations

import re

# the re module's own parser: private, but the one exact reading of a pattern
import re._constants as _sre_constants  # type: ignore[import-not-found]
import re._parser as _sre_parser  # type: ignore[import-not-found]
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyparsing as pp

from parsers.events import EVENT_FIELDS, Event

Clock = Callable[..., float]
"""The parser's own part of reading a line's time (see :class:`LineTime`); raises ValueError
for what is not a time."""

EventBuilder = Callable[[re.Match[str], Clock], Event]
"""``build(match, clock) -> Event`` for a match of a whole line."""


@dataclass(frozen=True)
class LineTime:
    """How a family's lines give their time (UTC epoch seconds).

    ``expression`` is Python over the values of the envelope's ``groups`` (written
    ``{group}``), the parser's ``clock`` and the objects in ``names``.  It is written into every
    event builder rather than called: a call per line cost 3% of parsing.
    """

    groups: tuple[str, ...]
    expression: str
    names: dict[str, object] = field(default_factory=dict)


_INT_FIELDS = frozenset({"code", "size", "nrcpt"})


class GrammarError(Exception):
    """A grammar uses a pyparsing construct the compiler does not translate."""


_SINGLE_RUN = re.compile(
    r"(?P<group>\(\?P<\w+>)?(?P<run>(?:\[(?:\\.|[^\]\\])+\]|\\[dw]|\.)(?:[*+]|\{\d+,\d*\}))(?(group)\))"
)
"""A regex that is one character class (or ``\\d``, ``\\w``, ``.``) under one greedy quantifier,
perhaps in a named group: made possessive, it matches as pyparsing does, more cheaply."""

_CHOICES = frozenset({_sre_constants.BRANCH, _sre_constants.MAX_REPEAT, _sre_constants.MIN_REPEAT})


def _deterministic(pattern: str) -> bool:
    """Whether a regex can match in one way only at a position (no alternative, no quantifier
    that could give back): it needs no atomic group, whose entry and exit cost more than
    possessive quantifiers.  Read with the ``re`` module's own parser."""

    def walk(items: Any) -> bool:
        for op, argument in items:
            if op in _CHOICES and not (
                op is _sre_constants.MAX_REPEAT and argument[0] == argument[1]
            ):
                return False
            if op is _sre_constants.SUBPATTERN and not walk(argument[3]):
                return False
            if op is _sre_constants.MAX_REPEAT and not walk(argument[2]):
                return False
        return True

    return walk(_sre_parser.parse(pattern, re.ASCII))


def _element_pattern(element: pp.ParserElement, leaves: dict[str, int] | None = None) -> str:
    """The regex for ``element``.  A sub-element named in ``leaves`` (a message) is followed by
    an empty group of its name, and its own groups carry the suffix ``_<number>`` (Python wants
    group names unique).  The empty group closes last, so ``match.lastindex`` names the message;
    and an alternative that begins with its first literal, rather than with a group, is skipped
    by the regex engine at the cost of one character comparison when that character differs."""
    if element.skipWhitespace:
        raise GrammarError(f"{element!r} skips whitespace; call leave_whitespace() on the grammar")
    leaves = leaves or {}
    body: str
    atomic = True  # pyparsing commits to what an element matched; so must the regex
    if isinstance(element, pp.Regex):
        if element.flags:
            raise GrammarError(f"{element!r} has regex flags; write them inline")
        body = str(element.pattern)
        run = _SINGLE_RUN.fullmatch(body)
        if run:
            body = f"{run['group'] or ''}{run['run']}+{')' if run['group'] else ''}"
        atomic = not _deterministic(body)
    elif isinstance(element, pp.Literal):  # also matches _SingleCharLiteral
        body, atomic = re.escape(element.match), False  # matches one way only
    elif isinstance(element, pp.Suppress):
        body, atomic = _element_pattern(element.expr, leaves), False
    elif isinstance(element, pp.And):  # its parts are atomic already
        body, atomic = "".join(_element_pattern(e, leaves) for e in element.exprs), False
    elif isinstance(element, pp.MatchFirst):
        body = "|".join(_element_pattern(e, leaves) for e in element.exprs)
    elif isinstance(element, pp.Opt):  # possessive quantifiers: atomic, and cheaper
        body, atomic = f"(?:{_element_pattern(element.expr, leaves)})?+", False
    elif isinstance(element, pp.ZeroOrMore):
        body, atomic = f"(?:{_element_pattern(element.expr, leaves)})*+", False
    elif isinstance(element, pp.OneOrMore):
        body, atomic = f"(?:{_element_pattern(element.expr, leaves)})++", False
    elif isinstance(element, pp.LineEnd | pp.StringEnd):
        body, atomic = r"\Z", False
    else:
        raise GrammarError(f"cannot compile {type(element).__name__} ({element!r})")
    name = element.resultsName
    if name in leaves:
        body = re.sub(r"\(\?P<(\w+)>", rf"(?P<\1_{leaves[name]}>", body)
        return f"{f'(?>{body})' if atomic else body}(?P<{name}>)"
    if name:
        return f"(?P<{name}>{f'(?>{body})' if atomic else body})"
    return f"(?>{body})" if atomic else body


def to_regex(element: pp.ParserElement) -> str:
    """The regular expression ``element`` (whitespace left alone) stands for."""
    return _element_pattern(element)


@dataclass(frozen=True)
class Message:
    """One kind of message a log line can carry, after its envelope."""

    name: str  # a Python identifier, unique in its family
    kind: str  # the Kind of the events it yields
    element: pp.ParserElement

    def __call__(self) -> pp.ParserElement:
        """The message's grammar, marked so the compiler knows where it starts and ends."""
        return self.element.copy().set_results_name(self.name)


Derived = dict[str, tuple[Callable[..., object], tuple[str, ...]]]
"""Event fields computed from others: ``{"relay_refused": (function, ("stage", "reason"))}``."""


@dataclass(frozen=True)
class LineGrammar:
    """A family's whole-line grammar: the envelope, then the first message that matches.

    ``element`` is the pyparsing grammar; ``regex`` the one expression it compiles to, in which
    every message ends in an empty group of its name and the groups of message number ``i``
    carry the suffix ``_i`` (Python wants group names unique).  A message's group is the last to
    close, so ``builders[match.lastindex]`` turns a match into an :class:`Event`.
    """

    element: pp.ParserElement
    regex: re.Pattern[str]
    messages: tuple[Message, ...]
    builders: tuple[EventBuilder | None, ...]

    def fields(self, match: re.Match[str]) -> dict[str, str]:
        """The non-empty named values of a match, under their grammar names (for tests)."""
        wrappers = {m.name for m in self.messages}
        return {
            re.sub(r"_\d+$", "", name): value
            for name, value in match.groupdict().items()
            if value is not None and name not in wrappers
        }

    def parse_fields(self, line: str) -> dict[str, str] | None:
        """What pyparsing itself makes of ``line``, in the form of :meth:`fields` (for tests)."""
        try:
            result = self.element.parse_string(line).as_dict()
        except pp.ParseException:
            return None
        wrappers = {m.name for m in self.messages}
        return {k: v for k, v in result.items() if v is not None and k not in wrappers}


def compile_lines(
    envelope: pp.ParserElement,
    body: pp.ParserElement,
    messages: Sequence[Message],
    *,
    time: LineTime,
    derived: Derived | None = None,
) -> LineGrammar:
    """Compile ``envelope + body``, where ``body`` is built from the messages' marked grammars
    (``message()``), possibly behind shared prefixes such as a queue id."""
    element = (envelope + body).leave_whitespace().set_name("line")
    leaves = {message.name: number for number, message in enumerate(messages)}
    regex = re.compile(_element_pattern(element, leaves), re.ASCII)
    names = (*(m.name for m in messages), *time.groups)
    missing = [name for name in names if name not in regex.groupindex]
    if missing:
        raise GrammarError(f"not in the grammar: {', '.join(missing)}")
    builders: list[EventBuilder | None] = [None] * (regex.groups + 1)
    for number, message in enumerate(messages):
        builders[regex.groupindex[message.name]] = _event_builder(
            regex, message.kind, f"_{number}", time, derived or {}
        )
    return LineGrammar(element, regex, tuple(messages), tuple(builders))


def _event_builder(
    regex: re.Pattern[str], kind: str, suffix: str, time: LineTime, derived: Derived
) -> EventBuilder:
    """Generate the function that turns a match into an :class:`Event` of ``kind``.

    Named groups whose name is an ``Event`` field fill that field (the message's own groups
    carry ``suffix``).  The function fetches its groups in one call, time groups included, and
    builds the tuple positionally, the fastest way Python has to build a record; it is
    generated once per message, the way ``dataclasses`` generates ``__init__``.
    """
    indexes: list[int] = []
    where: dict[str, str] = {}
    for name in (*time.groups, *EVENT_FIELDS):
        index = regex.groupindex.get(name + suffix) or regex.groupindex.get(name)
        if index is not None:
            where[name] = f"g[{len(indexes)}]"
            indexes.append(index)
    values = []
    namespace: dict[str, Any] = {**time.names, "new": tuple.__new__, "Event": Event}
    for name in EVENT_FIELDS:
        if name == "time":
            values.append(f"({time.expression.format_map(where)})")
        elif name == "kind":
            values.append(repr(kind))
        elif name in derived and all(arg in where for arg in derived[name][1]):
            function, args = derived[name]
            namespace[f"derive_{name}"] = function
            values.append(f"derive_{name}({', '.join(where[a] for a in args)})")
        elif name in where:
            value = where[name]
            values.append(
                f"(None if {value} is None else int({value}))" if name in _INT_FIELDS else value
            )
        else:
            values.append(repr(Event._field_defaults.get(name)))
    source = (
        "def build(m, clock):\n"
        f"    g = m.group({', '.join(map(str, indexes))})\n"
        f"    return new(Event, ({', '.join(values)}))\n"
    )
    exec(source, namespace)  # the source is built above from field names only
    builder: EventBuilder = namespace["build"]
    return builder


# Tokens shared by the families that name clients the same way.

IP = r"[0-9A-Fa-f:.]*[0-9A-Fa-f]"
"""An IPv4 or IPv6 address as MTAs print it (IPv6 unbracketed, possibly IPv4-mapped).  Kept to
one character class because alternatives cost the regex engine dearly on every line; the
classifier checks the address properly."""
