"""covering index of GenAI calls by time (analytics), replacing the (model, start) index

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Kept here, not imported: a migration must not change when the newest schema does.
CALL_INDEX_COLUMNS = (
    "start_time_unix_nano", "model", "request_model", "provider", "service_name", "user_id", "status_code",
    "input_tokens", "output_tokens", "cost_usd", "duration_ms", "ttft_ms", "output_tokens_per_second",
)
CALLS = sa.text("model IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_spans_calls", "spans", list(CALL_INDEX_COLUMNS), sqlite_where=CALLS,
                    postgresql_where=CALLS)
    op.drop_index("ix_spans_model", table_name="spans")


def downgrade() -> None:
    op.create_index("ix_spans_model", "spans", ["model", "start_time_unix_nano"], sqlite_where=CALLS,
                    postgresql_where=CALLS)
    op.drop_index("ix_spans_calls", table_name="spans")
