"""Log parsers, one module per MTA family: text in, typed events out.

Parsers are pure (standard library and pyparsing only) and never raise on a line they do not
know: they return ``None`` and the caller counts it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import tzinfo
from typing import Protocol

from parsers.events import Event
from parsers.postfix import PostfixParser


class Parser(Protocol):
    family: str

    def parse(self, line: str) -> Event | None: ...


PARSERS: dict[str, Callable[..., Parser]] = {"postfix": PostfixParser}
"""Every family relaywatch reads, by the name used in ``--format`` and ``format =``."""

DETECT_LINES = 200


def make_parser(family: str, *, tz: tzinfo | None = None) -> Parser:
    return PARSERS[family](tz=tz)


def detect_format(lines: Iterable[str]) -> str | None:
    """The family that understands most of the first lines of a log, or ``None``."""
    sample = [line for _, line in zip(range(DETECT_LINES), lines, strict=False) if line.strip()]
    best, best_count = None, 0
    for family, factory in PARSERS.items():
        parser = factory()
        count = sum(1 for line in sample if parser.parse(line) is not None)
        if count > best_count:
            best, best_count = family, count
    return best
