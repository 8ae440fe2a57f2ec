"""initial schema: model versions, requests, append-only status history, unlearning runs, audits

Revision ID: 0001
Revises: 
Create Date: 2026-11-26
"""
from alembic import op
import sqlalchemy as sa


revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('model_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('weights_sha256', sa.String(length=64), nullable=False),
    sa.Column('model_hash', sa.String(length=64), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('checkpoint_path', sa.Text(), nullable=False),
    sa.Column('arch', sa.String(length=64), nullable=True),
    sa.Column('dataset', sa.JSON(), nullable=False),
    sa.Column('split_hashes', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['model_version.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('weights_sha256')
    )
    op.create_table('unlearning_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('input_version_id', sa.Integer(), nullable=False),
    sa.Column('output_version_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('method', sa.String(length=64), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('output_path', sa.Text(), nullable=False),
    sa.Column('split', sa.JSON(), nullable=True),
    sa.Column('seconds', sa.Double(), nullable=True),
    sa.Column('info', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['input_version_id'], ['model_version.id'], ),
    sa.ForeignKeyConstraint(['output_version_id'], ['model_version.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('unlearning_run', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_unlearning_run_input_version_id'), ['input_version_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_unlearning_run_status'), ['status'], unique=False)

    op.create_table('audit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('verdict', sa.String(length=8), nullable=False),
    sa.Column('headline', sa.Text(), nullable=False),
    sa.Column('report_path', sa.Text(), nullable=False),
    sa.Column('report_sha256', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['unlearning_run.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id')
    )
    op.create_table('request',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('external_ref', sa.String(length=200), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('scenario', sa.JSON(), nullable=False),
    sa.Column('sample_ids', sa.JSON(), nullable=False),
    sa.Column('sample_hashes', sa.JSON(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_version.id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['unlearning_run.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('external_ref')
    )
    with op.batch_alter_table('request', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_request_model_version_id'), ['model_version_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_request_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_request_status'), ['status'], unique=False)

    op.create_table('status_history',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['request_id'], ['request.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('status_history', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_status_history_request_id'), ['request_id'], unique=False)

    _append_only_history()


APPEND_ONLY = "status_history is append-only"


def _append_only_history() -> None:
    """The database itself refuses to change or delete a status-history row."""
    if op.get_context().dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER status_history_no_{action.lower()} BEFORE {action} ON status_history "
                       f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END")
    elif op.get_context().dialect.name == "postgresql":
        op.execute("CREATE FUNCTION status_history_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                   f"$$ BEGIN RAISE EXCEPTION '{APPEND_ONLY}'; END $$")
        op.execute("CREATE TRIGGER status_history_append_only BEFORE UPDATE OR DELETE ON status_history "
                   "FOR EACH ROW EXECUTE FUNCTION status_history_append_only()")


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS status_history_no_update")
        op.execute("DROP TRIGGER IF EXISTS status_history_no_delete")
    elif op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS status_history_append_only ON status_history")
        op.execute("DROP FUNCTION IF EXISTS status_history_append_only()")
    with op.batch_alter_table('status_history', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_status_history_request_id'))

    op.drop_table('status_history')
    with op.batch_alter_table('request', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_request_status'))
        batch_op.drop_index(batch_op.f('ix_request_run_id'))
        batch_op.drop_index(batch_op.f('ix_request_model_version_id'))

    op.drop_table('request')
    op.drop_table('audit')
    with op.batch_alter_table('unlearning_run', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_unlearning_run_status'))
        batch_op.drop_index(batch_op.f('ix_unlearning_run_input_version_id'))

    op.drop_table('unlearning_run')
    op.drop_table('model_version')
