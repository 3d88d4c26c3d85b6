"""enforcement: the allowlist, refusals counted per decision, policy service requests

Issue 5 pushes decisions to the mail servers: an allowlist the scorer, the API and the CLI all
respect; the refusals the mail server logs because of a decision (``hits``); and the requests
the Postfix policy service answered, recorded as they come.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("hits", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_hit_at", sa.DateTime(), nullable=True))
        batch.create_index(batch.f("ix_decisions_created_at"), ["created_at"])
    op.create_table(
        "allowlist",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("network", sa.String(length=49), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_allowlist")),
        sa.UniqueConstraint("network", name=op.f("uq_allowlist_network")),
    )
    op.create_table(
        "policy_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("protocol_state", sa.String(length=16), nullable=False),
        sa.Column("client_ip", sa.String(length=45), nullable=False),
        sa.Column("client_name", sa.String(length=255), nullable=True),
        sa.Column("helo", sa.Text(), nullable=True),
        sa.Column("sender", sa.Text(), nullable=True),
        sa.Column("recipient", sa.Text(), nullable=True),
        sa.Column("sasl_user", sa.String(length=255), nullable=True),
        sa.Column("queue_id", sa.String(length=64), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_requests")),
    )
    op.create_index(
        op.f("ix_policy_requests_client_ip_time"), "policy_requests", ["client_ip", "time"]
    )
    op.create_index(op.f("ix_policy_requests_decision_id"), "policy_requests", ["decision_id"])


def downgrade() -> None:
    op.drop_table("policy_requests")
    op.drop_table("allowlist")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_index(batch.f("ix_decisions_created_at"))
        batch.drop_column("last_hit_at")
        batch.drop_column("hits")
