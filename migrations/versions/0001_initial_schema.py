"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-30 09:39:41.986818
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("origin", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("duration_seconds", sa.Integer(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
    )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_decisions_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_decisions_value_expires_at"), ["value", "expires_at"], unique=False
        )

    op.create_table(
        "log_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=32), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_files")),
        sa.UniqueConstraint("host", "fingerprint", name=op.f("uq_log_files_host_fingerprint")),
    )
    op.create_table(
        "offenders",
        sa.Column("ip", sa.String(length=45), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.Column("relay_attempts", sa.Integer(), nullable=False),
        sa.Column("refused_relays", sa.Integer(), nullable=False),
        sa.Column("accepted_relays", sa.Integer(), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("recipient_domains", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("peak_refused", sa.Integer(), nullable=False),
        sa.Column("peak_accepted", sa.Integer(), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("ip", name=op.f("pk_offenders")),
    )
    with op.batch_alter_table("offenders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_offenders_last_seen"), ["last_seen"], unique=False)
        batch_op.create_index(batch_op.f("ix_offenders_score"), ["score"], unique=False)

    op.create_table(
        "transactions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("log_file_id", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("line_offsets", sa.Text(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("queue_id", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=False),
        sa.Column("client_ip", sa.String(length=45), nullable=True),
        sa.Column("client_name", sa.String(length=255), nullable=True),
        sa.Column("helo", sa.Text(), nullable=True),
        sa.Column("sasl_user", sa.String(length=255), nullable=True),
        sa.Column("local_submission", sa.Boolean(), nullable=False),
        sa.Column("sender", sa.Text(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("reject_reason", sa.Text(), nullable=True),
        sa.Column("internal", sa.Boolean(), nullable=False),
        sa.Column("sender_local", sa.Boolean(), nullable=True),
        sa.Column("recipient_count", sa.Integer(), nullable=False),
        sa.Column("refused_relays", sa.Integer(), nullable=False),
        sa.Column("accepted_relays", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["log_file_id"],
            ["log_files.id"],
            name=op.f("fk_transactions_log_file_id_log_files"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transactions")),
        sa.UniqueConstraint(
            "log_file_id", "offset", name=op.f("uq_transactions_log_file_id_offset")
        ),
    )
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_transactions_client_ip_started_at"),
            ["client_ip", "started_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_transactions_started_at"), ["started_at"], unique=False
        )

    op.create_table(
        "evidence_lines",
        sa.Column(
            "transaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name=op.f("fk_evidence_lines_transaction_id_transactions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("transaction_id", "offset", name=op.f("pk_evidence_lines")),
    )
    op.create_table(
        "recipients",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "transaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("client_ip", sa.String(length=45), nullable=True),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("orig_address", sa.Text(), nullable=True),
        sa.Column("domain", sa.String(length=255), nullable=True),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("relay_attempt", sa.String(length=8), nullable=True),
        sa.Column("code", sa.Integer(), nullable=True),
        sa.Column("enhanced", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("next_hop", sa.Text(), nullable=True),
        sa.Column("agent", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name=op.f("fk_recipients_transaction_id_transactions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipients")),
    )
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.create_index(
            "ix_recipients_relay_attempt_times",
            ["time"],
            unique=False,
            sqlite_where=sa.text("relay_attempt IS NOT NULL"),
            postgresql_where=sa.text("relay_attempt IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_recipients_relay_attempts",
            ["client_ip", "time"],
            unique=False,
            sqlite_where=sa.text("relay_attempt IS NOT NULL"),
            postgresql_where=sa.text("relay_attempt IS NOT NULL"),
        )
        batch_op.create_index(
            batch_op.f("ix_recipients_transaction_id"), ["transaction_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recipients_transaction_id"))
        batch_op.drop_index(
            "ix_recipients_relay_attempts",
            sqlite_where=sa.text("relay_attempt IS NOT NULL"),
            postgresql_where=sa.text("relay_attempt IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_recipients_relay_attempt_times",
            sqlite_where=sa.text("relay_attempt IS NOT NULL"),
            postgresql_where=sa.text("relay_attempt IS NOT NULL"),
        )

    op.drop_table("recipients")
    op.drop_table("evidence_lines")
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transactions_started_at"))
        batch_op.drop_index(batch_op.f("ix_transactions_client_ip_started_at"))

    op.drop_table("transactions")
    with op.batch_alter_table("offenders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_offenders_score"))
        batch_op.drop_index(batch_op.f("ix_offenders_last_seen"))

    op.drop_table("offenders")
    op.drop_table("log_files")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_decisions_value_expires_at"))
        batch_op.drop_index(batch_op.f("ix_decisions_expires_at"))

    op.drop_table("decisions")
