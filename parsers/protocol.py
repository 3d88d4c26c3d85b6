"""What every family's parser offers the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo
from typing import Final, Protocol

from parsers.events import Event

ENDS_AT_REMOVED: Final = "removed"
"""The family logs the end of a message (Postfix ``removed``, Exim ``Completed``)."""
ENDS_AT_LAST_RECIPIENT: Final = "recipients"
"""The family logs no end of a message: it is over once every recipient it announced has a
final outcome (Sendmail, OpenSMTPD, Exchange tracking)."""


class Parser(Protocol):
    """Turns one family's lines into events, one line at a time, in log order.

    ``parse`` never raises: a line it does not understand gives ``None``.  A parser may keep
    state between lines (the columns a W3C or CSV header announced); ``state`` returns it in a
    JSON-able form, stored with the correlator's checkpoint, and ``restore`` takes it back.
    """

    family: str
    message_end: str  # ENDS_AT_REMOVED or ENDS_AT_LAST_RECIPIENT
    branches: tuple[str, ...]  # names of the branches of its grammars (see ``branch``)

    def __init__(self, now: Callable[[], float] = ..., tz: tzinfo | None = None) -> None:
        """``now`` dates timestamps that carry no year; ``tz`` is the zone of timestamps
        written in local time (the machine's when ``None``)."""

    def parse(self, line: str) -> Event | None: ...

    def branch(self, line: str) -> str | None:
        """The grammar branch ``parse`` would take for ``line`` (in ``branches``), or ``None``;
        changes no state (for tests and ``relaywatch parse``)."""

    def state(self) -> object: ...

    def restore(self, state: object) -> None: ...


class Stateless:
    """The state of a parser that keeps none between lines."""

    message_end: str = ENDS_AT_REMOVED

    def state(self) -> object:
        return None

    def restore(self, state: object) -> None:
        return None
