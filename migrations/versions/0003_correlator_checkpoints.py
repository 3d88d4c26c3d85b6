"""correlator checkpoints: what a source's correlator held, and where, in a table of its own

The read position is saved with every batch; the correlator's state only every few seconds
(serialising every pending message per batch cost a third of the daemon's time), compressed,
with the position it belongs to.  It has a table of its own: updating the read position in a
row that also holds the state rewrote the whole state (megabytes) with every batch.  A restart
resumes at the checkpoint and reads again up to the read position; the transactions it finds
there are stored already and are not stored twice.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 18:30:00
"""

from __future__ import annotations

import zlib

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_KEY_AND_POSITION = ("host", "path", "device", "inode", "fingerprint", "offset")


def upgrade() -> None:
    checkpoints = op.create_table(
        "source_checkpoints",
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("device", sa.BigInteger(), nullable=False),
        sa.Column("inode", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("correlator_state", sa.LargeBinary(), nullable=False),
        sa.Column("taken_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("host", "path", name=op.f("pk_source_checkpoints")),
    )
    # until now the state was saved with every batch, at the read position, as plain JSON
    positions = sa.table(
        "source_positions",
        *(sa.column(name) for name in _KEY_AND_POSITION),
        sa.column("correlator_state", sa.Text()),
        sa.column("updated_at", sa.DateTime()),
    )
    rows = op.get_bind().execute(sa.select(*positions.columns))
    op.bulk_insert(
        checkpoints,
        [
            {
                "host": host, "path": path, "device": device, "inode": inode,
                "fingerprint": fingerprint, "offset": offset,
                "correlator_state": zlib.compress(state.encode(), 1), "taken_at": taken_at,
            }
            for host, path, device, inode, fingerprint, offset, state, taken_at in rows.all()
        ],
    )  # fmt: skip
    with op.batch_alter_table("source_positions") as batch:
        batch.drop_column("correlator_state")


def downgrade() -> None:
    with op.batch_alter_table("source_positions") as batch:
        batch.add_column(sa.Column("correlator_state", sa.Text(), nullable=True))
    # revision 0002 resumes at the one position it has: the checkpoint's, and reads again after
    connection = op.get_bind()
    rows = connection.execute(
        sa.text(
            'SELECT host, path, device, inode, fingerprint, "offset", correlator_state'
            " FROM source_checkpoints"
        )
    ).all()
    for host, path, device, inode, fingerprint, offset, state in rows:
        connection.execute(
            sa.text(
                "UPDATE source_positions SET device = :device, inode = :inode,"
                ' fingerprint = :fingerprint, "offset" = :offset, correlator_state = :state'
                " WHERE host = :host AND path = :path"
            ),
            {
                "device": device, "inode": inode, "fingerprint": fingerprint, "offset": offset,
                "state": zlib.decompress(state).decode(), "host": host, "path": path,
            },
        )  # fmt: skip
    op.execute("UPDATE source_positions SET correlator_state = '{}' WHERE correlator_state IS NULL")
    with op.batch_alter_table("source_positions") as batch:
        batch.alter_column("correlator_state", existing_type=sa.Text(), nullable=False)
    op.drop_table("source_checkpoints")
