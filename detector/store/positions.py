"""Where following each source stands.  The caller owns the database transaction: a position
is saved in the one that stores the rows read up to it.

Two positions are kept per source: how far it was read (saved with every batch), and a
checkpoint, the correlator's state (sessions and messages not finished yet) with the position
it was taken at (saved every few seconds: it holds every pending message, and serialising it
with each batch cost a third of the daemon's time).  A restart resumes at the checkpoint and
reads the lines after it again; the transactions finished there are stored already, and
storing skips them (:func:`detector.store.writes.insert_transactions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update

from detector.follow import Position
from detector.store.models import SourcePosition


@dataclass(frozen=True)
class Checkpoint:
    """The correlator's state (JSON) at ``position``."""

    position: Position
    state: str


@dataclass(frozen=True)
class Saved:
    read: Position  # read, and its transactions stored, up to here
    checkpoint: Checkpoint  # where reading resumes


def load_position(connection: Connection, host: str, path: str) -> Saved | None:
    """What was saved of following ``path`` on ``host``."""
    row = connection.execute(
        select(SourcePosition).where(SourcePosition.host == host, SourcePosition.path == path)
    ).first()
    if row is None:
        return None
    return Saved(
        Position(row.device, row.inode, row.fingerprint, row.offset),
        Checkpoint(
            Position(row.state_device, row.state_inode, row.state_fingerprint, row.state_offset),
            row.correlator_state,
        ),
    )


def save_position(
    connection: Connection,
    host: str,
    path: str,
    position: Position,
    checkpoint: Checkpoint | None = None,
) -> None:
    """Save the read position, and the checkpoint when one is given (the first save of a
    source must give one)."""
    values: dict[str, object] = {
        "device": position.device, "inode": position.inode,
        "fingerprint": position.fingerprint, "offset": position.offset,
        "updated_at": datetime.now(UTC),
    }  # fmt: skip
    if checkpoint is not None:
        at = checkpoint.position
        values.update(
            state_device=at.device, state_inode=at.inode, state_fingerprint=at.fingerprint,
            state_offset=at.offset, correlator_state=checkpoint.state,
        )  # fmt: skip
    changed = connection.execute(
        update(SourcePosition)
        .where(SourcePosition.host == host, SourcePosition.path == path)
        .values(**values)
    ).rowcount
    if not changed:
        if checkpoint is None:
            raise ValueError(f"the first position saved of {path} on {host} needs a checkpoint")
        connection.execute(insert(SourcePosition).values(host=host, path=path, **values))
