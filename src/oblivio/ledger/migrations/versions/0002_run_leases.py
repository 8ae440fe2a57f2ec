"""run leases: which worker holds a scheduled run and until when; at most one scheduled run per input model

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEDULED_ONLY = sa.text("status = 'scheduled'")


def upgrade() -> None:
    with op.batch_alter_table("unlearning_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_unlearning_run_one_scheduled", "unlearning_run", ["input_version_id"], unique=True,
                    sqlite_where=SCHEDULED_ONLY, postgresql_where=SCHEDULED_ONLY)


def downgrade() -> None:
    op.drop_index("ix_unlearning_run_one_scheduled", table_name="unlearning_run")
    with op.batch_alter_table("unlearning_run", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("claimed_by")
