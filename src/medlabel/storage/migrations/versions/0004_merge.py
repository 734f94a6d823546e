"""merge the ingest and labeling branches

Revision ID: 0004_merge
Revises: 0003_ingest, 0003_labeling
Create Date: 2026-11-29 12:05:00
"""

from __future__ import annotations

revision = "0004_merge"
down_revision = ("0003_ingest", "0003_labeling")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
