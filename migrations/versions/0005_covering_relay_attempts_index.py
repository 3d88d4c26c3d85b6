"""relay attempts index covers the attempt's kind

Rescoring reads a client's attempts of the last window (time and kind).  Without the kind in
the index, every attempt cost a read of its row of ``recipients``, scattered over a table far
larger than the daemon's page cache: 150-250 ms per rescoring of a heavy abuser at 10,000
lines/s.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 20:25:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_WHERE = {
    "sqlite_where": sa.text("relay_attempt IS NOT NULL"),
    "postgresql_where": sa.text("relay_attempt IS NOT NULL"),
}


def upgrade() -> None:
    op.drop_index("ix_recipients_relay_attempts", table_name="recipients", **_WHERE)
    op.create_index(
        "ix_recipients_relay_attempts",
        "recipients",
        ["client_ip", "time", "relay_attempt"],
        unique=False,
        **_WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_recipients_relay_attempts", table_name="recipients", **_WHERE)
    op.create_index(
        "ix_recipients_relay_attempts",
        "recipients",
        ["client_ip", "time"],
        unique=False,
        **_WHERE,
    )
