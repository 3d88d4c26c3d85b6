"""The allowlist: networks never to block.  Anyone may read it; changes need a write token.

Adding a network lifts the blocks in force that it covers, in the same transaction; removing
one lifts nothing and blocks nothing by itself.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from sqlalchemy import Engine

from api.auth import WriteToken
from api.deps import DbConnection
from api.routes.decisions import WRITE_PROBLEMS, now_utc
from api.schemas import AllowEntryOut, AllowList, AllowRequest, AllowResult, Problem
from detector.decide import Allowed, allow, allowlist, disallow
from detector.errors import NotFound
from detector.render import iso

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/allowlist", tags=["allowlist"])

EntryId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _entry(entry: Allowed) -> AllowEntryOut:
    return AllowEntryOut(
        id=entry.id, network=entry.network, comment=entry.comment,
        created_at=iso(entry.created_at) or "",
    )  # fmt: skip


@router.get("", response_model=AllowList)
def list_entries(connection: DbConnection) -> AllowList:
    """Every allowlist entry, oldest first."""
    return AllowList(allowlist=[_entry(e) for e in allowlist(connection)])


@router.post(
    "",
    status_code=201,
    response_model=AllowResult,
    responses={
        **WRITE_PROBLEMS,
        200: {"model": AllowResult, "description": "the network was there: its comment is new"},
        422: {"model": Problem, "description": "not an IP address or a CIDR range"},
    },
)
def add_entry(
    request: Request, response: Response, body: AllowRequest, token: WriteToken
) -> AllowResult:
    """Never block a network (needs a write token); lifts the blocks in force that it
    covers, whose ids come back in ``revoked_decisions``.  201 for a new entry; 200 when the
    network is there already (it keeps its id and takes the new comment)."""
    engine: Engine = request.app.state.engine
    now = now_utc()
    with engine.begin() as connection:
        there = {e.id for e in allowlist(connection)}
        entry, revoked = allow(connection, body.network, body.comment, now)
    if entry.id in there:
        response.status_code = 200
    logger.info(
        "allowlist entry %d: %s allowed by API token %r (decisions revoked: %s)",
        entry.id, entry.network, token.name, [d.id for d in revoked] or "none",
    )  # fmt: skip
    return AllowResult(**_entry(entry).model_dump(), revoked_decisions=[d.id for d in revoked])


@router.delete("/{entry_id}", response_model=AllowEntryOut, responses=WRITE_PROBLEMS)
def remove_entry(request: Request, entry_id: EntryId, token: WriteToken) -> AllowEntryOut:
    """Remove an allowlist entry (needs a write token); answers with the entry removed, 404
    when there is none with that id."""
    engine: Engine = request.app.state.engine
    with engine.begin() as connection:
        found = [e for e in allowlist(connection) if e.id == entry_id]
        if not found or not disallow(connection, entry_id):
            raise NotFound(f"no allowlist entry {entry_id}")
    logger.info("allowlist entry %d: %s removed by API token %r", entry_id, found[0].network,
                token.name)  # fmt: skip
    return _entry(found[0])
