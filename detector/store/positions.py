"""Where following each source stands.  The caller owns the database transaction: a position
is saved in the one that stores the rows read up to it.

Two positions are kept per source: how far it was read (saved with every batch), and a
checkpoint, the correlator's state (sessions and messages not finished yet) with the position
it was taken at (saved every few seconds: it holds every pending message, and serialising it
with each batch cost a third of the daemon's time; it has a row of its own, so that saving the
read position does not rewrite it).  A restart resumes at the checkpoint and
reads the lines after it again; the transactions finished there are stored already, and
storing skips them (:func:`detector.store.writes.insert_transactions`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update

from detector.follow import Position
from detector.store.models import SourceCheckpoint, SourcePosition

STATE_COMPRESSION = 1
"""zlib level of the stored state: measured on simulated Postfix traffic, its JSON shrank 5.7-fold
at level 1 (1 ms for 283 kB; 7.4-fold in 3 ms at level 6), and every copy of it with it (the
bound parameter, SQLite's record, the WAL)."""


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
    read = connection.execute(
        select(SourcePosition).where(SourcePosition.host == host, SourcePosition.path == path)
    ).first()
    at = connection.execute(
        select(SourceCheckpoint).where(SourceCheckpoint.host == host, SourceCheckpoint.path == path)
    ).first()
    if read is None or at is None:
        return None
    return Saved(
        Position(read.device, read.inode, read.fingerprint, read.offset),
        Checkpoint(
            Position(at.device, at.inode, at.fingerprint, at.offset),
            zlib.decompress(at.correlator_state).decode(),
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
    now = datetime.now(UTC)
    first = _upsert(
        connection, SourcePosition, host, path, {**_columns(position), "updated_at": now}
    )
    if checkpoint is not None:
        state = zlib.compress(checkpoint.state.encode(), STATE_COMPRESSION)
        values = {**_columns(checkpoint.position), "correlator_state": state, "taken_at": now}
        _upsert(connection, SourceCheckpoint, host, path, values)
    elif first:
        raise ValueError(f"the first position saved of {path} on {host} needs a checkpoint")


def _columns(position: Position) -> dict[str, object]:
    return {
        "device": position.device, "inode": position.inode,
        "fingerprint": position.fingerprint, "offset": position.offset,
    }  # fmt: skip


def _upsert(
    connection: Connection,
    table: type[SourcePosition | SourceCheckpoint],
    host: str,
    path: str,
    values: dict[str, object],
) -> bool:
    """Update the row of ``host`` and ``path``, or insert it: whether it was new."""
    changed = connection.execute(
        update(table).where(table.host == host, table.path == path).values(**values)
    ).rowcount
    if not changed:
        connection.execute(insert(table).values(host=host, path=path, **values))
    return not changed
