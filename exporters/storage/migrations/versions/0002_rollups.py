"""traces and sessions rollups, backfilled from the spans already stored

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SUMS = ("span_count", "error_count", "turns", "input_tokens", "output_tokens")
TURN = ("CASE WHEN operation IN ('chat', 'text_completion', 'generate_content') "
        "OR (operation IS NULL AND model IS NOT NULL) THEN 1 ELSE 0 END")
AGGREGATES = (f"MIN(start_time_unix_nano), MAX(end_time_unix_nano), COUNT(*), "
              f"SUM(CASE WHEN status_code = 2 THEN 1 ELSE 0 END), SUM({TURN}), "
              f"COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
              f"COALESCE(SUM(cost_usd), 0)")


def _rollup_columns() -> list[sa.Column]:
    return [
        sa.Column("start_time_unix_nano", sa.BigInteger, nullable=False),
        sa.Column("end_time_unix_nano", sa.BigInteger, nullable=False),
        *(sa.Column(c, sa.BigInteger, nullable=False) for c in SUMS),
        sa.Column("cost_usd", sa.Float, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "traces",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("root_name", sa.Text),
        sa.Column("service_name", sa.Text),
        sa.Column("session_id", sa.Text),
        sa.Column("user_id", sa.Text),
        *_rollup_columns(),
    )
    op.create_index("ix_traces_start", "traces", ["start_time_unix_nano"])
    op.create_index("ix_traces_end", "traces", ["end_time_unix_nano"])
    op.create_index("ix_traces_session", "traces", ["session_id"])
    op.create_index("ix_traces_user", "traces", ["user_id"])
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text),
        *_rollup_columns(),
    )
    op.create_index("ix_sessions_start", "sessions", ["start_time_unix_nano"])
    op.create_index("ix_sessions_end", "sessions", ["end_time_unix_nano"])
    op.create_index("ix_sessions_user", "sessions", ["user_id"])
    # Backfill so an upgraded database lists what it already holds.
    root = ("(SELECT {col} FROM spans r WHERE r.trace_id = s.trace_id AND r.parent_span_id IS NULL "
            "ORDER BY r.start_time_unix_nano LIMIT 1)")
    op.execute(
        "INSERT INTO traces (trace_id, root_name, service_name, session_id, user_id, "
        "start_time_unix_nano, end_time_unix_nano, span_count, error_count, turns, input_tokens, "
        f"output_tokens, cost_usd) SELECT s.trace_id, {root.format(col='name')}, "
        f"COALESCE({root.format(col='service_name')}, MIN(s.service_name)), MIN(s.session_id), "
        f"MIN(s.user_id), {AGGREGATES} FROM spans s GROUP BY s.trace_id")
    op.execute(
        "INSERT INTO sessions (session_id, user_id, start_time_unix_nano, end_time_unix_nano, "
        "span_count, error_count, turns, input_tokens, output_tokens, cost_usd) "
        f"SELECT session_id, MIN(user_id), {AGGREGATES} FROM spans WHERE session_id IS NOT NULL "
        "GROUP BY session_id")


def downgrade() -> None:
    op.drop_table("sessions")
    op.drop_table("traces")
