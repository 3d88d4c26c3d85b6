"""Where following each source stands.  The caller owns the database transaction: a position
is saved in the one that stores the rows read up to it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update

from detector.follow import Position
from detector.store.models import SourcePosition


def load_position(connection: Connection, host: str, path: str) -> tuple[Position, str] | None:
    """The saved position of ``path`` on ``host`` and the correlator's state there."""
    row = connection.execute(
        select(SourcePosition).where(SourcePosition.host == host, SourcePosition.path == path)
    ).first()
    if row is None:
        return None
    return Position(row.device, row.inode, row.fingerprint, row.offset), row.correlator_state


def save_position(
    connection: Connection, host: str, path: str, position: Position, correlator_state: str
) -> None:
    values = {
        "device": position.device, "inode": position.inode,
        "fingerprint": position.fingerprint, "offset": position.offset,
        "correlator_state": correlator_state, "updated_at": datetime.now(UTC),
    }  # fmt: skip
    changed = connection.execute(
        update(SourcePosition)
        .where(SourcePosition.host == host, SourcePosition.path == path)
        .values(**values)
    ).rowcount
    if not changed:
        connection.execute(insert(SourcePosition).values(host=host, path=path, **values))
