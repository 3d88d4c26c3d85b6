"""reports: the nightly tracking reports, and what they say of relaywatch itself

Issue 6 builds a report a night: stored as built (JSON, HTML, text) with the state of its
mailing; the lines read of each source per day; the times a sink could not push the blocks.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("day", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("mailed_at", sa.DateTime(), nullable=True),
        sa.Column("mail_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("day", "host", name=op.f("pk_reports")),
    )
    op.create_table(
        "source_days",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("lines", sa.BigInteger(), nullable=False),
        sa.Column("parsed", sa.BigInteger(), nullable=False),
        sa.Column("unparsed", sa.BigInteger(), nullable=False),
        sa.Column("lag_bytes", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("day", "host", "path", name=op.f("pk_source_days")),
    )
    op.create_table(
        "sink_troubles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sink", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sink_troubles")),
    )
    op.create_index(op.f("ix_sink_troubles_started_at"), "sink_troubles", ["started_at"])


def downgrade() -> None:
    op.drop_table("sink_troubles")
    op.drop_table("source_days")
    op.drop_table("reports")
