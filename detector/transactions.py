"""Relay transactions: what the correlator builds from events and the classifier labels.

Like :class:`parsers.events.Event`, these records are immutable named tuples rather than frozen
dataclasses: one or more is built for every few log lines, and a frozen dataclass costs about
0.3 µs per field to build (a transaction has 20), which the ingest budget cannot afford.
"""

from __future__ import annotations

from typing import Final, NamedTuple

INTERNAL: Final = "int"
EXTERNAL: Final = "ext"
REFUSED: Final = "refused"
ACCEPTED: Final = "accepted"


_rebuild = tuple.__new__
"""Pickling rebuilds records with this C function rather than the named tuple's Python
``__new__`` (large files hand transactions between processes: measured 0.4 s instead of 1.05 s
to unpickle the transactions of 1M lines)."""


class Outcome:
    """What became of one recipient."""

    DELIVERED: Final = "delivered"
    DEFERRED: Final = "deferred"
    BOUNCED: Final = "bounced"
    EXPIRED: Final = "expired"
    REJECTED: Final = "rejected"  # refused at SMTP time
    QUEUED: Final = "queued"  # accepted; no delivery logged (yet)


def direction(client_side: str, recipient_side: str) -> str:
    """``int→ext`` and friends (DESIGN.md §1)."""
    return f"{client_side}→{recipient_side}"


class Recipient(NamedTuple):
    address: str
    outcome: str  # an Outcome
    time: float  # when the outcome was logged
    orig_address: str | None = None
    code: int | None = None
    enhanced: str | None = None  # enhanced status / dsn
    reason: str | None = None  # reject text or delivery status text
    next_hop: str | None = None  # where a delivery went (``local``, ``mx.example[ip]:25``)
    agent: str | None = None  # delivery agent (smtp, local, lmtp …)
    refused_as_relay: bool = False  # the server said so (e.g. "Relay access denied")
    refusal_unexplained: bool = False  # refused, reason not logged: a relay refusal if foreign
    # set by the classifier
    domain: str | None = None  # destination domain after undoing relay tricks
    direction: str | None = None  # int→int, int→ext, ext→int, ext→ext
    relay_attempt: str | None = None  # REFUSED, ACCEPTED or None

    def labelled(self, domain: str, direction: str, relay_attempt: str | None) -> Recipient:
        """This recipient with the classifier's labels."""
        return tuple.__new__(Recipient, (*self[:_LABELS], domain, direction, relay_attempt))

    def __reduce__(self) -> tuple[object, ...]:
        return _rebuild, (Recipient, tuple(self))


_LABELS = Recipient._fields.index("domain")


class Transaction(NamedTuple):
    """One SMTP transaction of one client on one relay host."""

    host: str  # the relay host (the source's name)
    start: float  # UTC epoch seconds of the first line
    end: float  # … and of the last
    offsets: tuple[int, ...]  # byte offset in the source of each of its lines, in order
    texts: tuple[str, ...]  # the text of each line; () once dropped (see without_texts)
    source_file: str | None = None  # fingerprint of the log file its first line is in
    queue_id: str | None = None
    client_ip: str | None = None
    client_name: str | None = None
    helo: str | None = None
    sasl_user: str | None = None
    local_submission: bool = False  # submitted on the host itself (Postfix pickup), no client
    sender: str | None = None  # "" is the null sender
    message_id: str | None = None
    size: int | None = None
    reject_reason: str | None = None  # a refusal of the whole transaction (HELO, MAIL, DATA)
    recipients: tuple[Recipient, ...] = ()
    # set by the classifier
    internal: bool | None = None  # trusted network, authenticated or local submission
    sender_local: bool | None = None  # the sender's domain is one of ours

    def classified(
        self, recipients: tuple[Recipient, ...], internal: bool, sender_local: bool | None
    ) -> Transaction:
        """This transaction with the classifier's labels."""
        return tuple.__new__(Transaction, (*self[:_RECIPIENTS], recipients, internal, sender_local))

    def without_texts(self) -> Transaction:
        """This transaction with the offsets of its lines but not their text."""
        return _rebuild(Transaction, (*self[:_TEXTS], (), *self[_TEXTS + 1 :]))

    def __reduce__(self) -> tuple[object, ...]:
        return _rebuild, (Transaction, tuple(self))

    @property
    def refused_relays(self) -> int:
        return sum(1 for r in self.recipients if r.relay_attempt == REFUSED)

    @property
    def accepted_relays(self) -> int:
        return sum(1 for r in self.recipients if r.relay_attempt == ACCEPTED)


_TEXTS = Transaction._fields.index("texts")
_RECIPIENTS = Transaction._fields.index("recipients")
