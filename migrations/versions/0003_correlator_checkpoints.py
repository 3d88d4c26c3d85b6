"""correlator checkpoints: the position a source's correlator state was taken at

The read position is saved with every batch; the correlator's state only every few seconds
(serialising every pending message per batch cost a third of the daemon's time), with the
position it belongs to.  A restart resumes there and reads again up to the read position;
the transactions it finds there are stored already and are not stored twice.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("state_device", sa.BigInteger()),
    ("state_inode", sa.BigInteger()),
    ("state_fingerprint", sa.String(length=64)),
    ("state_offset", sa.BigInteger()),
)


def upgrade() -> None:
    with op.batch_alter_table("source_positions") as batch:
        for name, type_ in _COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    # until now the state was saved with every batch: it belongs to the read position
    op.execute(
        "UPDATE source_positions SET state_device = device, state_inode = inode,"
        ' state_fingerprint = fingerprint, state_offset = "offset"'
    )
    with op.batch_alter_table("source_positions") as batch:
        for name, type_ in _COLUMNS:
            batch.alter_column(name, existing_type=type_, nullable=False)


def downgrade() -> None:
    # revision 0002 resumes at the one position it has: make it the state's, read again after
    op.execute(
        "UPDATE source_positions SET device = state_device, inode = state_inode,"
        ' fingerprint = state_fingerprint, "offset" = state_offset'
    )
    with op.batch_alter_table("source_positions") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
