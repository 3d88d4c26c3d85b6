"""Manual blocks and unblocks: ``POST /v1/decisions`` and ``DELETE /v1/decisions/{id}``, with a
write token.

``GET /v1/decisions`` (the same path) is not here: it is the CrowdSec bouncers' query endpoint
(:mod:`api.routes.crowdsec`), authenticated with ``X-Api-Key`` as CrowdSec does.

Each change is one database transaction of its own, at the wall clock's time; the sinks take
it at their next sync, the CrowdSec bouncers at their next pull.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from sqlalchemy import Connection, Engine

from api.auth import WriteToken
from api.deps import AppSettings
from api.schemas import BlockRequest, DecisionOut, Problem
from detector.config import parse_duration
from detector.decide import Decision, NeverBlock, block, policy_rejects, revoke
from detector.errors import NotFound
from detector.render import iso

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])

WRITE_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no token, or not one of [api] tokens "
          "(with WWW-Authenticate: Bearer)"},
    403: {"model": Problem, "description": "the token has no write scope"},
}  # fmt: skip

DecisionId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def now_utc() -> datetime:
    """The wall clock in whole seconds, as the CLI stamps its changes."""
    return datetime.now(UTC).replace(microsecond=0)


def decisions_out(
    connection: Connection, decisions: list[Decision], now: datetime
) -> list[DecisionOut]:
    """Decisions as the API answers them, with how often they were enforced."""
    rejects = policy_rejects(connection, (d.id for d in decisions))
    return [
        DecisionOut(
            id=d.id, value=d.value, scope=d.scope, origin=d.origin, reason=d.reason,
            created_at=iso(d.created_at) or "", expires_at=iso(d.expires_at) or "",
            revoked_at=iso(d.revoked_at), active=d.active(now), hits=d.hits,
            last_hit_at=iso(d.last_hit_at), policy_rejects=rejects.get(d.id, 0),
        )
        for d in decisions
    ]  # fmt: skip


@router.post(
    "",
    status_code=201,
    response_model=DecisionOut,
    responses={**WRITE_PROBLEMS, 422: {"model": Problem, "description": (
        "a value that must never be blocked (an internal network, an address of the relay "
        "host, an allowlisted network) or is not an IP address or CIDR range; detail says which"
    )}},
)  # fmt: skip
def block_value(
    request: Request, body: BlockRequest, settings: AppSettings, token: WriteToken
) -> DecisionOut:
    """Block an IP address or a CIDR range by hand (needs a write token, ``Authorization:
    Bearer``), replacing its blocks in force.  Answers 201 with the decision.

    The same path answers ``GET`` for CrowdSec bouncers (``X-Api-Key``), a different API."""
    engine: Engine = request.app.state.engine
    network = settings.network
    never_block = NeverBlock(network.internal_networks, network.own_addresses)
    duration = parse_duration(body.duration) if body.duration else settings.scoring.block_duration
    now = now_utc()
    with engine.begin() as connection:
        made = block(
            connection, body.value, duration=duration, reason=body.reason, now=now,
            never_block=never_block,
        )  # fmt: skip
        [answer] = decisions_out(connection, [made], now)
    logger.info(
        "decision %d: %s blocked until %s by API token %r",
        made.id, made.value, answer.expires_at, token.name,
    )  # fmt: skip
    return answer


@router.delete("/{decision_id}", response_model=DecisionOut, responses=WRITE_PROBLEMS)
def revoke_decision(request: Request, decision_id: DecisionId, token: WriteToken) -> DecisionOut:
    """Lift one decision in force (needs a write token); 404 when there is none with that id
    in force (never made, expired or revoked already).  Answers with the revoked decision."""
    engine: Engine = request.app.state.engine
    now = now_utc()
    with engine.begin() as connection:
        revoked = revoke(connection, decision_id, now)
        if revoked is None:
            raise NotFound(f"no decision {decision_id} is in force")
        [answer] = decisions_out(connection, [revoked], now)
    logger.info("decision %d: %s revoked by API token %r", revoked.id, revoked.value, token.name)
    return answer
