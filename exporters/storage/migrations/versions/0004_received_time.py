"""receipt time of spans, traces and sessions (retention counts from the collector's clock)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Rows stored before this revision get their end time as receipt time, capped at the time of the
migration: a span stamped in the future by a wrong client clock is then kept for ``ttl`` from
now, not until its stamped time.  One UPDATE of every row, once.
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("spans", "traces", "sessions")


def upgrade() -> None:
    now = time.time_ns()
    for table in TABLES:
        op.add_column(table, sa.Column("received_unix_nano", sa.BigInteger, nullable=False, server_default="0"))
        op.execute(sa.text(f"UPDATE {table} SET received_unix_nano = CASE WHEN end_time_unix_nano < :now "
                           f"THEN end_time_unix_nano ELSE :now END").bindparams(now=now))
        op.create_index(f"ix_{table}_received", table, ["received_unix_nano"])


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_received", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("received_unix_nano")
