"""The CrowdSec-compatible bouncer API, so that stock CrowdSec bouncers (firewall, custom,
nginx …) enforce relaywatch's decisions: give a bouncer relaywatch's address as its
``api_url`` and a token of ``[api] tokens`` with the read scope as its ``api_key``::

    GET /v1/decisions?ip=…              query ("live") mode: the decisions in force that
                                         cover the value, or null
    GET /v1/decisions/stream?startup=…  stream mode: everything in force, then what changed

Both follow CrowdSec's Local API: ``X-Api-Key`` (missing or wrong: 403), its ``Decision``
shape (``origin`` "relaywatch", ``type`` "ban", ``scope`` "Ip" or "Range", ``duration``
Go-style such as ``3h51m57s``, ``scenario`` the decision's reason), ``null`` for an empty
list, and its filters (``scopes``, ``origins``, ``scenarios_containing``,
``scenarios_not_containing``; ``ip``, ``range``, ``contains``, ``scope``, ``value``, ``type``
in query mode).  User decisions are not shown: no bouncer scope enforces them.  With
``[enforcement] dry_run`` the decisions are simulated ones, shown only to a bouncer that asks
with ``simulated=true``, so that no bouncer enforces them.  ``POST`` and ``DELETE`` on
``/v1/decisions`` are relaywatch's own write endpoints (:mod:`api.routes.decisions`).

Stream mode keeps, per API key, what that key's bouncer holds: one decision per scope and
value, the one in force that ends last (as CrowdSec's stream does: a bouncer keys its table
by value, so two decisions for one value would leave it with whichever came last).  Each pull
compares the decisions in force now with that: ``new`` are the values the bouncer lacks or
holds with another decision, ``deleted`` the decisions it holds that are no longer the ones
in force (revoked, expired, replaced, lifted by the allowlist), with a negative duration.
Bouncers apply ``deleted`` before ``new``, so a replaced decision's value stays blocked.
Comparing sets rather than times misses nothing that a clock would: a block made from a log
read late starts in the past, and transactions commit out of id order.

``startup=true`` sends everything in force as new and, as deleted, one decision for each
value no longer blocked whose decision ended within :data:`ENDED_WINDOW` or was revoked
before its end, so that a restarted bouncer drops what its firewall may still hold.  The
state lives in memory (``app.state.bouncer_streams``): after relaywatch restarts, a key's
first pull is answered as a ``startup=true`` one whatever it asks, so bouncers converge
without restarting too.  Two bouncers sharing a key would share that state: give each its
own.  A response lost on the way is not sent again; its bouncer catches up at its restart.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import Connection, or_, select

from api.auth import BouncerKey
from api.deps import AppSettings, DbConnection
from api.schemas import CrowdSecDecision, CrowdSecStream, Problem
from detector.config import Settings
from detector.decide import (
    Decision,
    Network,
    Refused,
    active_decisions,
    normal_value,
    parse_value,
)
from detector.errors import InputError
from detector.render import iso
from detector.store.models import DecisionRow

router = APIRouter(
    prefix="/v1/decisions",
    tags=["crowdsec"],
    responses={403: {"model": Problem, "description": "no X-Api-Key, or not a read token"}},
)

ORIGIN = "relaywatch"
CROWDSEC_SCOPES = {"ip": "Ip", "range": "Range"}  # relaywatch's scope: CrowdSec's spelling
ENDED_WINDOW = timedelta(days=1)
"""How far back ``startup=true`` reports decisions that ended by themselves."""
_UUID_NAMESPACE = uuid.UUID("5b0c8f0e-6d1c-4b8e-9a57-8e2f3c1d7a40")

Key = tuple[str, str]  # a decision's (scope, value): what a bouncer holds one entry of


def go_duration(seconds: int) -> str:
    """Seconds as Go's ``time.Duration`` prints them: ``45s``, ``1m0s``, ``3h51m57s``,
    ``-18897h25m3s``, which is what bouncers parse."""
    sign = "-" if seconds < 0 else ""
    hours, rest = divmod(abs(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def crowdsec_decision(
    decision: Decision, now: datetime, *, deleted: bool = False, simulated: bool = False
) -> CrowdSecDecision:
    """``decision`` in CrowdSec's shape at ``now``: the time left (at least 1 s, a bouncer
    takes 0 for no timeout), or for a deleted one the time since it ended, negative."""
    if deleted:
        until = min(decision.revoked_at or decision.expires_at, decision.expires_at, now)
        seconds = -max(1, math.ceil((now - until).total_seconds()))
    else:
        until = decision.expires_at
        seconds = max(1, math.ceil((until - now).total_seconds()))
    return CrowdSecDecision(
        id=decision.id, origin=ORIGIN, type="ban", scope=CROWDSEC_SCOPES[decision.scope],
        value=decision.value, duration=go_duration(seconds), scenario=decision.reason,
        until=iso(until) or "", simulated=simulated,
        uuid=str(uuid.uuid5(_UUID_NAMESPACE, f"{decision.id}/{iso(decision.created_at)}")),
    )  # fmt: skip


def _names(text: str | None) -> frozenset[str]:
    return frozenset(p.strip().lower() for p in (text or "").split(",") if p.strip())


@dataclass(frozen=True, slots=True)
class Filters:
    """CrowdSec's filters of decisions, compared without regard to case as CrowdSec does."""

    scopes: frozenset[str] = frozenset(CROWDSEC_SCOPES)
    origins: frozenset[str] = frozenset()
    scenarios_containing: frozenset[str] = frozenset()
    scenarios_not_containing: frozenset[str] = frozenset()

    def keep(self, decision: Decision) -> bool:
        scenario = decision.reason.lower()
        return (
            decision.scope in CROWDSEC_SCOPES
            and decision.scope in self.scopes
            and (not self.origins or ORIGIN in self.origins)
            and (
                not self.scenarios_containing
                or any(s in scenario for s in self.scenarios_containing)
            )
            and not any(s in scenario for s in self.scenarios_not_containing)
        )


def _filters(
    origins: Annotated[str | None, Query(description="comma-separated; ours: relaywatch")] = None,
    scenarios_containing: Annotated[
        str | None, Query(description="comma-separated words, one of which the reason has")
    ] = None,
    scenarios_not_containing: Annotated[
        str | None, Query(description="comma-separated words the reason has none of")
    ] = None,
) -> Filters:
    return Filters(
        origins=_names(origins), scenarios_containing=_names(scenarios_containing),
        scenarios_not_containing=_names(scenarios_not_containing),
    )  # fmt: skip


def _network(value: str) -> Network | None:
    try:
        return parse_value(value)
    except Refused:
        return None  # a stored value no firewall could take either


def _within(inner: Network | None, outer: Network | None) -> bool:
    return (
        inner is not None
        and outer is not None
        and inner.version == outer.version
        and inner.subnet_of(outer)  # type: ignore[arg-type]
    )


def _last_ending(decisions: Iterable[Decision]) -> dict[Key, Decision]:
    """One decision per scope and value: the one that ends last (the lower id on a tie)."""
    kept: dict[Key, Decision] = {}
    for decision in sorted(decisions, key=lambda d: d.id):
        key = (decision.scope, decision.value)
        if key not in kept or decision.expires_at > kept[key].expires_at:
            kept[key] = decision
    return kept


def _ended(connection: Connection, now: datetime) -> list[Decision]:
    """The decisions not in force at ``now`` that ended within ``ENDED_WINDOW`` or would still
    run but for their revocation."""
    rows = connection.execute(
        select(DecisionRow.__table__)
        .where(
            DecisionRow.expires_at > now - ENDED_WINDOW,
            or_(DecisionRow.revoked_at.is_not(None), DecisionRow.expires_at <= now),
        )
        .order_by(DecisionRow.id)
    )
    return [Decision.from_row(row) for row in rows]


def _by_id(connection: Connection, decisions: list[Decision]) -> list[Decision]:
    """``decisions`` as stored now: a bouncer was sent them in force, they end revoked."""
    if not decisions:
        return []
    rows = connection.execute(
        select(DecisionRow.__table__).where(DecisionRow.id.in_([d.id for d in decisions]))
    )
    stored = {row.id: Decision.from_row(row) for row in rows}
    return [stored.get(d.id, d) for d in decisions]


@dataclass(frozen=True, slots=True)
class Pull:
    """One stream answer: what to add, what to delete, at which time."""

    new: list[Decision]
    deleted: list[Decision]
    now: datetime


class BouncerStreams:
    """What each API key's bouncer holds, in memory; one pull of a key at a time."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._held: dict[str, dict[Key, Decision]] = {}

    def pull(
        self,
        key: str,
        startup: bool,
        in_force: Callable[[datetime], list[Decision]],
        ended: Callable[[datetime], list[Decision]],
    ) -> Pull:
        """The changes for ``key`` since its last pull (everything, at its startup or when
        it has none), from the decisions ``in_force`` and, at startup, those ``ended``."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            now = datetime.now(UTC)
            current = _last_ending(in_force(now))
            held = None if startup else self._held.get(key)
            if held is None:
                new = list(current.values())
                gone = _last_ending(d for d in ended(now) if (d.scope, d.value) not in current)
                deleted = list(gone.values())
            else:
                new = [d for k, d in current.items() if k not in held or held[k].id != d.id]
                deleted = [d for k, d in held.items() if k not in current or current[k].id != d.id]
            self._held[key] = current
        return Pull(new, deleted, now)


_CLASH = (
    "\n\nThis path is shared: ``GET`` is CrowdSec's bouncer API (``X-Api-Key``), ``POST`` "
    "relaywatch's manual block (``Authorization: Bearer``, a write token)."
)


def _dry_run_hidden(settings: Settings, simulated: bool) -> bool:
    """Whether to show nothing: in a dry run every decision is a simulated one, which
    CrowdSec shows only to a bouncer asking for ``simulated=true``."""
    return settings.enforcement.dry_run and not simulated


@router.get(
    "",
    response_model=list[CrowdSecDecision] | None,
    responses={400: {"model": Problem, "description": "ip or range is not an address"}},
    description=(
        "CrowdSec's query (live) mode: the decisions in force that match, or ``null``. "
        "``ip`` (or ``range``) with ``contains=true`` (the default) gives the decisions that "
        "cover it, a range decision for an address inside it too; ``contains=false`` those "
        "inside it.  ``value`` is an exact value, ``scope`` ip or range, ``type`` ban." + _CLASH
    ),
)
def query_decisions(
    connection: DbConnection,
    settings: AppSettings,
    _key: BouncerKey,
    filters: Annotated[Filters, Depends(_filters)],
    ip: str | None = None,
    range_: Annotated[str | None, Query(alias="range")] = None,
    contains: bool = True,
    scope: str | None = None,
    value: str | None = None,
    type_: Annotated[str | None, Query(alias="type")] = None,
    simulated: bool = False,
) -> list[CrowdSecDecision] | None:
    now = datetime.now(UTC)
    found = [d for d in active_decisions(connection, now) if filters.keep(d)]
    if _dry_run_hidden(settings, simulated) or (type_ and type_.lower() != "ban"):
        found = []
    if scope:
        found = [d for d in found if d.scope == scope.lower()]
    if value:
        exact = _network(value)
        wanted = value if exact is None else normal_value(exact)
        found = [d for d in found if d.value == wanted]
    address = ip or range_
    if address:
        asked = _network(address)
        if asked is None:
            raise InputError(f"{address!r} is not an IP address or a CIDR range")
        if contains:
            found = [d for d in found if _within(asked, _network(d.value))]
        else:
            found = [d for d in found if _within(_network(d.value), asked)]
    dry_run = settings.enforcement.dry_run
    return [crowdsec_decision(d, now, simulated=dry_run) for d in found] or None


@router.get(
    "/stream",
    response_model=CrowdSecStream,
    description=(
        "CrowdSec's stream mode: with ``startup=true`` every decision in force as new (and "
        "the recently ended ones as deleted), then on each ``startup=false`` pull what changed "
        "since this API key's previous pull.  ``new``/``deleted`` are null when empty."
    ),
)
def stream_decisions(
    request: Request,
    connection: DbConnection,
    settings: AppSettings,
    key: BouncerKey,
    filters: Annotated[Filters, Depends(_filters)],
    startup: bool = False,
    scopes: Annotated[str, Query(description="comma-separated: ip, range")] = "ip,range",
    simulated: bool = False,
) -> CrowdSecStream:
    filters = replace(filters, scopes=_names(scopes))
    hidden = _dry_run_hidden(settings, simulated)

    def in_force(now: datetime) -> list[Decision]:
        return [] if hidden else [d for d in active_decisions(connection, now) if filters.keep(d)]

    def ended(now: datetime) -> list[Decision]:
        return [d for d in _ended(connection, now) if filters.keep(d)]

    streams: BouncerStreams = request.app.state.bouncer_streams
    pull = streams.pull(key.token, startup, in_force, ended)
    dry_run = settings.enforcement.dry_run
    new = [crowdsec_decision(d, pull.now, simulated=dry_run) for d in pull.new]
    deleted = [
        crowdsec_decision(d, pull.now, deleted=True, simulated=dry_run)
        for d in _by_id(connection, pull.deleted)
    ]
    return CrowdSecStream(new=new or None, deleted=deleted or None)
