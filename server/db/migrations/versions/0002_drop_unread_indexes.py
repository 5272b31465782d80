"""drop indexes nothing reads

Revision ID: 0002
Revises: 0001

Every push writes a change-log row and an applied-mutation row per mutation; each index on them
is one more B-tree written in the push's transaction. Only the change log's record_id is read
(a record's history in the console); the others were never used by any query.
"""

from __future__ import annotations

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_CHANGE_LOG = ('device_id', 'grid_id', 'received_at', 'seq', 'user_id')


def upgrade() -> None:
    with op.batch_alter_table('change_log', schema=None) as batch_op:
        for column in _CHANGE_LOG:
            batch_op.drop_index(batch_op.f(f'ix_change_log_{column}'))
    with op.batch_alter_table('applied_mutations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_applied_mutations_device_id'))


def downgrade() -> None:
    with op.batch_alter_table('applied_mutations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_applied_mutations_device_id'), ['device_id'], unique=False)
    with op.batch_alter_table('change_log', schema=None) as batch_op:
        for column in _CHANGE_LOG:
            batch_op.create_index(batch_op.f(f'ix_change_log_{column}'), [column], unique=False)
