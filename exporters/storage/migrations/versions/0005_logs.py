"""log records (logs table) and spans.content_from_logs, for GenAI content sent as log events

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON = sa.Text().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WITH_TRACE = sa.text("trace_id IS NOT NULL")


def upgrade() -> None:
    op.add_column("spans", sa.Column("content_from_logs", sa.SmallInteger, nullable=False, server_default="0"))
    op.create_table(
        "logs",
        sa.Column("id", BIGINT_ID, primary_key=True, autoincrement=True),
        sa.Column("record_key", sa.String(32), nullable=False),
        sa.Column("timestamp_unix_nano", sa.BigInteger, nullable=False),
        sa.Column("received_unix_nano", sa.BigInteger, nullable=False),
        sa.Column("time_unix_nano", sa.BigInteger),
        sa.Column("observed_time_unix_nano", sa.BigInteger),
        sa.Column("severity_number", sa.SmallInteger, nullable=False),
        sa.Column("severity_text", sa.Text),
        sa.Column("event_name", sa.Text),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("trace_id", sa.String(32)),
        sa.Column("span_id", sa.String(16)),
        sa.Column("flags", sa.BigInteger),
        sa.Column("service_name", sa.Text),
        sa.Column("scope_name", sa.Text),
        sa.Column("scope_version", sa.Text),
        sa.Column("body", JSON),
        sa.Column("content", JSON),
        sa.Column("content_purged", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("attributes", JSON),
        sa.Column("resource_attributes", JSON),
        sa.Column("dropped_attributes_count", sa.BigInteger),
    )
    op.create_index("ux_logs_key", "logs", ["record_key"], unique=True)
    op.create_index("ix_logs_received", "logs", ["received_unix_nano"])
    op.create_index("ix_logs_span", "logs", ["trace_id", "span_id"], sqlite_where=WITH_TRACE,
                    postgresql_where=WITH_TRACE)


def downgrade() -> None:
    op.drop_table("logs")
    op.drop_column("spans", "content_from_logs")
