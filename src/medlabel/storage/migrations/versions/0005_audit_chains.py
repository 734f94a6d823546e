"""audit log as several hash chains (one head row each) so audited transactions do not queue

Revision ID: 0005_audit_chains
Revises: 0004_merge
Create Date: 2026-11-30 10:00:00

The existing records stay one chain (chain 1, ``prev_seq = seq - 1`` as they were numbered
contiguously); head rows 2..32 start empty. On PostgreSQL ``seq`` is drawn from the sequence
``audit_event_seq`` from now on (starting after the highest number in use).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_audit_chains"
down_revision = "0004_merge"
branch_labels = None
depends_on = None

CHAINS = 32
GENESIS = "0" * 64


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chain", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("prev_seq", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.create_index("ix_audit_events_chain_seq", ["chain", "seq"], unique=False)
    op.execute("UPDATE audit_events SET prev_seq = seq - 1")
    heads = sa.table(
        "audit_head",
        sa.column("id", sa.Integer),
        sa.column("seq", sa.BigInteger),
        sa.column("hash", sa.String),
    )
    op.bulk_insert(heads, [{"id": c, "seq": 0, "hash": GENESIS} for c in range(2, CHAINS + 1)])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE audit_event_seq AS BIGINT")
        op.execute(
            "SELECT setval('audit_event_seq', GREATEST("
            "(SELECT COALESCE(MAX(seq), 0) FROM audit_events), "
            "(SELECT COALESCE(MAX(seq), 0) FROM audit_head)) + 1, false)"
        )


def downgrade() -> None:
    bind = op.get_bind()
    others = bind.execute(sa.text("SELECT COUNT(*) FROM audit_events WHERE chain <> 1")).scalar()
    if others:
        raise RuntimeError(
            f"{others} audit records belong to chains other than 1; they cannot be folded into one "
            "chain without breaking its hashes. Export the log (medlabel audit export) first."
        )
    if bind.dialect.name == "postgresql":
        op.execute("DROP SEQUENCE IF EXISTS audit_event_seq")
    op.execute("DELETE FROM audit_head WHERE id <> 1")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_chain_seq")
        batch_op.drop_column("prev_seq")
        batch_op.drop_column("chain")
