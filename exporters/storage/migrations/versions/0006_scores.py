"""scores: feedback and evaluation scores attached to a trace, span or session

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scores",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("span_id", sa.String(16)),
        sa.Column("session_id", sa.Text),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("label", sa.Text),
        sa.Column("comment", sa.Text),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("author", sa.Text),
        sa.Column("time_unix_nano", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_scores_trace", "scores", ["trace_id", "span_id"])
    op.create_index("ix_scores_time", "scores", ["time_unix_nano"])


def downgrade() -> None:
    op.drop_table("scores")
