"""spans table with its indexes

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.Text().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "spans",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("span_id", sa.String(16), nullable=False),
        sa.Column("parent_span_id", sa.String(16)),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("start_time_unix_nano", sa.BigInteger, nullable=False),
        sa.Column("end_time_unix_nano", sa.BigInteger, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("status_code", sa.SmallInteger, nullable=False),
        sa.Column("status_message", sa.Text),
        sa.Column("service_name", sa.Text),
        sa.Column("scope_name", sa.Text),
        sa.Column("scope_version", sa.Text),
        sa.Column("trace_state", sa.Text),
        sa.Column("flags", sa.BigInteger),
        *(sa.Column(c, sa.Text) for c in ("provider", "operation", "request_model", "response_model", "model")),
        *(sa.Column(c, sa.BigInteger) for c in ("input_tokens", "output_tokens", "cache_read_tokens",
                                                 "cache_write_tokens", "reasoning_tokens")),
        *(sa.Column(c, sa.Float) for c in ("cost_usd", "ttft_ms", "output_tokens_per_second")),
        *(sa.Column(c, sa.Text) for c in ("session_id", "user_id", "error_type")),
        *(sa.Column(c, JSON) for c in ("input_messages", "output_messages", "system_instructions",
                                       "content_attributes", "events")),
        sa.Column("content_purged", sa.SmallInteger, nullable=False, server_default="0"),
        *(sa.Column(c, JSON) for c in ("attributes", "resource_attributes", "links", "dropped_counts")),
    )
    op.create_index("ix_spans_key", "spans", ["trace_id", "span_id"], unique=True)
    op.create_index("ix_spans_start", "spans", ["start_time_unix_nano"])
    for column in ("session_id", "user_id", "model"):
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(f"ix_spans_{column}", "spans", [column, "start_time_unix_nano"],
                        sqlite_where=where, postgresql_where=where)
    error = sa.text("status_code = 2")
    op.create_index("ix_spans_error", "spans", ["start_time_unix_nano"], sqlite_where=error,
                    postgresql_where=error)


def downgrade() -> None:
    op.drop_table("spans")
