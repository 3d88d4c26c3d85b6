from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import DbConnection
from api.params import since_param
from api.schemas import TransactionPage
from detector.errors import InputError
from detector.store.queries import list_transactions

router = APIRouter(prefix="/v1/transactions", tags=["transactions"])

DIRECTIONS = ("int→int", "int→ext", "ext→int", "ext→ext")


@router.get("", response_model=TransactionPage)
def transactions(
    connection: DbConnection,
    client_ip: str | None = None,
    direction: Annotated[
        str | None, Query(description="int→ext, ext→ext … (also written ext->ext)")
    ] = None,
    since: Annotated[str | None, Query(description="duration (1h, 7d) or ISO time")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> TransactionPage:
    """Transactions newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    if direction is not None:
        direction = direction.replace("->", "→")
        if direction not in DIRECTIONS:
            raise InputError(f"direction must be one of {', '.join(DIRECTIONS)}")
    now = datetime.now(UTC)
    page, next_cursor = list_transactions(
        connection, client_ip=client_ip, direction=direction, since=since_param(since, now),
        limit=limit, cursor=cursor,
    )  # fmt: skip
    return TransactionPage.model_validate({"transactions": page, "next_cursor": next_cursor})
