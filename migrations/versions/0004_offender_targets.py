"""offender targets: the distinct recipients and domains of each offender, by digest

Offender counters were recomputed from all of a client's stored attempts at each rescoring
(``count(DISTINCT …)`` over its whole history: its time and memory grew with the history of
busy abusers); they are now updated as attempts are stored, and the distinct counts need to
know which recipients and domains an offender has tried before.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 19:00:00
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BATCH = 5000


def _digest(value: str) -> str:  # as detector.score.target_digest
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def upgrade() -> None:
    targets = op.create_table(
        "offender_targets",
        sa.Column("ip", sa.String(length=45), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("digest", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("ip", "kind", "digest", name=op.f("pk_offender_targets")),
    )
    connection = op.get_bind()
    for kind, column in (("address", "address"), ("domain", "domain")):
        rows = connection.execute(
            sa.text(
                f"SELECT DISTINCT client_ip, {column} FROM recipients WHERE relay_attempt IS NOT"
                f" NULL AND client_ip IS NOT NULL AND {column} IS NOT NULL"
            )
        )
        while batch := rows.fetchmany(_BATCH):
            op.bulk_insert(
                targets, [{"ip": ip, "kind": kind, "digest": _digest(v)} for ip, v in batch]
            )


def downgrade() -> None:
    op.drop_table("offender_targets")
