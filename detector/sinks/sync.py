"""What every sink shares: the result of a sync, the :class:`Sink` protocol, and the choice of
the decisions a sink enforces.

A sink is told the active decisions and makes its target enforce exactly those: a full,
idempotent sync, so a missed or failed one heals on the next.  Time is the caller's ``now``
(the log's time): a decision that has expired at ``now``, or was revoked, is left out even if
the caller passed it.  Its start is not checked: a block made from a log read late holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from detector.decide import Decision, Network, Refused, normal_value, parse_value, refusal_text
from detector.render import iso


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one sync (or check) of one sink did.

    ``ok`` is false when the target could not be brought to the rendered state (a write, a
    check or a reload failed; the previous state stays).  ``changed`` says whether the target
    changed (in a dry run or a check: whether it would).  ``entries`` counts the decisions the
    target enforces.  ``message`` is one line: what happened, or why it failed.
    """

    sink: str
    ok: bool
    changed: bool
    entries: int
    message: str


class Sink(Protocol):
    """A place decisions are pushed to.  ``name`` says which, e.g.
    ``postfix-cidr /etc/postfix/relaywatch.cidr``."""

    name: str

    def sync(self, decisions: Sequence[Decision], now: datetime) -> SyncResult:
        """Make the target enforce exactly ``decisions`` (those still in force at ``now``)."""
        ...

    def check(self, decisions: Sequence[Decision], now: datetime) -> SyncResult:
        """Render ``decisions`` and run the target's own check of the result; apply nothing."""
        ...

    def close(self) -> None:
        """Release what the sink holds (sockets, threads); a sink is not used afterwards."""
        ...


@dataclass(frozen=True, slots=True)
class Blocked:
    """One IP or range decision as an IP sink enforces it."""

    decision: Decision
    network: Network
    text: str  # refusal_text(decision), the words the mail server logs with its refusal


@dataclass(frozen=True, slots=True)
class Rendered:
    """A target's text for a set of decisions: ``entries`` decisions are in it, and
    ``left_out`` says, one item per decision, which ones it cannot express and why."""

    text: str
    entries: int
    left_out: list[str] = field(default_factory=list)


def in_force(decisions: Sequence[Decision], now: datetime) -> list[Decision]:
    """The decisions neither revoked nor expired at ``now``, by id."""
    kept = [d for d in decisions if d.revoked_at is None and d.expires_at > now]
    return sorted(kept, key=lambda d: d.id)


def blocked(decisions: Sequence[Decision], now: datetime) -> tuple[list[Blocked], list[str]]:
    """The IP and range decisions in force at ``now``, and one line for each decision whose
    value is not an address or a CIDR range.

    IPv4 comes first, then IPv6; within each, the narrowest networks first (addresses, then
    ranges by size), each size by address: where the first matching line wins (Postfix,
    Exim), a client meets the decision closest to it.

    User decisions are not for IP sinks and are skipped.  When several decisions name the
    same network, the one that ends last is kept: it covers the others' time too, and targets
    such as rbldnsd or the Exchange IP Block List do not take a value twice.
    """
    by_network: dict[Network, Blocked] = {}
    problems = []
    for decision in in_force(decisions, now):
        if decision.scope == "user":
            continue
        try:
            network = parse_value(decision.value)
        except Refused as exc:
            problems.append(f"decision {decision.id}: {exc}")
            continue
        kept = by_network.get(network)
        if kept is None or decision.expires_at > kept.decision.expires_at:
            by_network[network] = Blocked(decision, network, refusal_text(decision))
    ordered = sorted(
        by_network.values(),
        key=lambda b: (b.network.version, -b.network.prefixlen, b.network.network_address),
    )
    return ordered, problems


def decision_json(decision: Decision) -> dict[str, object]:
    """A decision as the blocklist's ``json`` format and the webhook show it."""
    return {
        "id": decision.id, "value": decision.value, "scope": decision.scope,
        "origin": decision.origin, "reason": decision.reason,
        "created_at": iso(decision.created_at), "expires_at": iso(decision.expires_at),
    }  # fmt: skip


def blocked_ipv4(
    decisions: Sequence[Decision], now: datetime, target: str
) -> tuple[list[Blocked], list[str]]:
    """:func:`blocked` for a target that knows IPv4 only: the IPv6 decisions are left out,
    each with a line saying so (``target`` names what knows IPv4 only)."""
    entries, problems = blocked(decisions, now)
    problems += [
        f"decision {b.decision.id}: {normal_value(b.network)} is IPv6 ({target} IPv4 only)"
        for b in entries
        if b.network.version == 6
    ]
    return [b for b in entries if b.network.version == 4], problems
