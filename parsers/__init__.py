"""Log parsers, one module per MTA family: text in, typed events out.

Parsers are pure (standard library and pyparsing only) and never raise on a line they do not
know: they return ``None`` and the caller counts it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import tzinfo
from typing import NamedTuple

from parsers.events import Kind
from parsers.exchange55 import Exchange55TrackingParser, ImsParser
from parsers.exchange_smtp import ExchangeSmtpParser
from parsers.exchange_tracking import ExchangeTrackingParser
from parsers.exim import EximParser
from parsers.iis import IisW3cParser
from parsers.opensmtpd import OpenSMTPDParser
from parsers.postfix import PostfixParser
from parsers.protocol import Parser
from parsers.sendmail import SendmailParser

__all__ = ["PARSERS", "Detection", "Parser", "detect_format", "make_parser"]

PARSERS: dict[str, type[Parser]] = {
    "postfix": PostfixParser,
    "exim": EximParser,
    "sendmail": SendmailParser,
    "opensmtpd": OpenSMTPDParser,
    "iis-w3c": IisW3cParser,
    "ims": ImsParser,
    "exchange55-tracking": Exchange55TrackingParser,
    "exchange-tracking": ExchangeTrackingParser,
    "exchange-smtp": ExchangeSmtpParser,
}
"""Every family relaywatch reads, by the name used in ``--format`` and ``format =``."""

DETECT_LINES = 200


def make_parser(family: str, *, tz: tzinfo | None = None) -> Parser:
    return PARSERS[family](tz=tz)


class Detection(NamedTuple):
    family: str
    reason: str  # why, in one line, for ``relaywatch parse``


def detect_format(lines: Iterable[str]) -> Detection | None:
    """The family that understands most of the first lines of a log, or ``None``.

    Every family reads the same first lines; header-driven families (W3C, CSV) understand
    nothing before a header of their own, so a header decides for them.
    """
    sample = [line for _, line in zip(range(DETECT_LINES), lines, strict=False) if line.strip()]
    counts = []
    for family, factory in PARSERS.items():
        parser = factory()
        events = [parser.parse(line) for line in sample]
        headers = sum(1 for e in events if e is not None and e.kind == Kind.HEADER)
        understood = sum(1 for e in events if e is not None)
        if understood > headers:  # a header alone is not a log of the family
            counts.append((understood, headers, family))
    if not counts:
        return None
    counts.sort(key=lambda c: (-c[0], -c[1]))
    understood, headers, family = counts[0]
    reason = f"{understood} of its first {len(sample)} lines are {family} lines"
    if headers:
        reason += f" ({headers} of them {'its header' if headers == 1 else 'header lines'})"
    if len(counts) > 1:
        reason += f"; next best: {counts[1][2]} with {counts[1][0]}"
    return Detection(family, reason)
