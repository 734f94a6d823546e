"""upload sessions (files prepared one by one, committed as one import)

Revision ID: 0006_upload_sessions
Revises: 0005_audit_chains
Create Date: 2026-11-29 14:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_upload_sessions"
down_revision = "0005_audit_chains"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upload_sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"]),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("upload_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_upload_sessions_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_upload_sessions_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("upload_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_upload_sessions_expires_at"))
        batch_op.drop_index(batch_op.f("ix_upload_sessions_project_id"))
    op.drop_table("upload_sessions")
