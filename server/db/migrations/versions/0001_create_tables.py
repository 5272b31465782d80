"""create tables

Revision ID: 0001
Revises: 
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('applied_mutations',
    sa.Column('mid', sa.String(length=36), nullable=False),
    sa.Column('device_id', sa.String(length=36), nullable=True),
    sa.Column('record_id', sa.String(length=36), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('result', sa.LargeBinary(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('mid')
    )
    with op.batch_alter_table('applied_mutations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_applied_mutations_device_id'), ['device_id'], unique=False)

    op.create_table('auth_challenges',
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('device_id', sa.String(length=36), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('nonce')
    )
    with op.batch_alter_table('auth_challenges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_auth_challenges_device_id'), ['device_id'], unique=False)

    op.create_table('blob_refs',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('record_id', sa.String(length=36), nullable=False),
    sa.Column('grid_id', sa.String(length=36), nullable=False),
    sa.PrimaryKeyConstraint('sha256', 'record_id')
    )
    with op.batch_alter_table('blob_refs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_blob_refs_grid_id'), ['grid_id'], unique=False)

    op.create_table('blobs',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('length', sa.BigInteger(), nullable=False),
    sa.Column('received', sa.BigInteger(), nullable=False),
    sa.Column('complete', sa.Boolean(), nullable=False),
    sa.Column('content_type', sa.String(length=100), nullable=False),
    sa.Column('device_id', sa.String(length=36), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sha256')
    )
    op.create_table('change_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('record_id', sa.String(length=36), nullable=False),
    sa.Column('entity', sa.String(length=20), nullable=False),
    sa.Column('grid_id', sa.String(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('op', sa.String(length=10), nullable=False),
    sa.Column('hlc', sa.String(length=84), nullable=False),
    sa.Column('original_hlc', sa.String(length=84), nullable=True),
    sa.Column('mid', sa.String(length=36), nullable=True),
    sa.Column('device_id', sa.String(length=36), nullable=True),
    sa.Column('user_id', sa.String(length=36), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('changes', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('change_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_change_log_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_change_log_grid_id'), ['grid_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_change_log_received_at'), ['received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_change_log_record_id'), ['record_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_change_log_seq'), ['seq'], unique=False)
        batch_op.create_index(batch_op.f('ix_change_log_user_id'), ['user_id'], unique=False)

    op.create_table('conflicts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('record_id', sa.String(length=36), nullable=False),
    sa.Column('entity', sa.String(length=20), nullable=False),
    sa.Column('grid_id', sa.String(length=36), nullable=False),
    sa.Column('field', sa.String(length=40), nullable=False),
    sa.Column('kept', sa.JSON(), nullable=True),
    sa.Column('lost', sa.JSON(), nullable=True),
    sa.Column('winner_hlc', sa.String(length=84), nullable=False),
    sa.Column('mid', sa.String(length=36), nullable=True),
    sa.Column('device_id', sa.String(length=36), nullable=True),
    sa.Column('user_id', sa.String(length=36), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('resolved_by', sa.String(length=36), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('conflicts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_conflicts_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_conflicts_grid_id'), ['grid_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_conflicts_record_id'), ['record_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_conflicts_status'), ['status'], unique=False)

    op.create_table('counters',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    # The pull feed's sequence: bumped under this row's lock, so it grows in commit order.
    op.bulk_insert(sa.table("counters", sa.column("name", sa.String), sa.column("value", sa.BigInteger)),
                   [{"name": "change_seq", "value": 0}])
    op.create_table('grids',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('community', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('grids', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_grids_community'), ['community'], unique=False)

    op.create_table('records',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('entity', sa.String(length=20), nullable=False),
    sa.Column('grid_id', sa.String(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('hlc', sa.String(length=84), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('fields', sa.JSON(), nullable=False),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.Column('deleted_meta', sa.JSON(), nullable=True),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.create_index('ix_records_entity_grid', ['entity', 'grid_id'], unique=False)
        batch_op.create_index('ix_records_grid_seq', ['grid_id', 'seq'], unique=False)
        batch_op.create_index('ix_records_seq', ['seq'], unique=True)

    op.create_table('server_secrets',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('value', sa.LargeBinary(length=64), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('sync_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=36), nullable=True),
    sa.Column('user_id', sa.String(length=36), nullable=True),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('app_version', sa.String(length=40), nullable=False),
    sa.Column('mutations', sa.Integer(), nullable=False),
    sa.Column('applied', sa.Integer(), nullable=False),
    sa.Column('merged', sa.Integer(), nullable=False),
    sa.Column('rejected', sa.Integer(), nullable=False),
    sa.Column('changes', sa.Integer(), nullable=False),
    sa.Column('error', sa.String(length=40), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sync_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sync_log_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_sync_log_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sync_log_user_id'), ['user_id'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('devices',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('public_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('label', sa.String(length=100), nullable=False),
    sa.Column('app_version', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('wipe', sa.Boolean(), nullable=False),
    sa.Column('enrolled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_sync_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_devices_user_id'), ['user_id'], unique=False)

    op.create_table('enrollment_codes',
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('device_id', sa.String(length=36), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('code_hash')
    )
    with op.batch_alter_table('enrollment_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_enrollment_codes_user_id'), ['user_id'], unique=False)

    op.create_table('user_grids',
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('grid_id', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['grid_id'], ['grids.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'grid_id')
    )
    with op.batch_alter_table('user_grids', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_grids_grid_id'), ['grid_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('user_grids', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_grids_grid_id'))

    op.drop_table('user_grids')
    with op.batch_alter_table('enrollment_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_enrollment_codes_user_id'))

    op.drop_table('enrollment_codes')
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_devices_user_id'))

    op.drop_table('devices')
    op.drop_table('users')
    with op.batch_alter_table('sync_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sync_log_user_id'))
        batch_op.drop_index(batch_op.f('ix_sync_log_device_id'))
        batch_op.drop_index(batch_op.f('ix_sync_log_at'))

    op.drop_table('sync_log')
    op.drop_table('server_secrets')
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.drop_index('ix_records_seq')
        batch_op.drop_index('ix_records_grid_seq')
        batch_op.drop_index('ix_records_entity_grid')

    op.drop_table('records')
    with op.batch_alter_table('grids', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_grids_community'))

    op.drop_table('grids')
    op.drop_table('counters')
    with op.batch_alter_table('conflicts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_conflicts_status'))
        batch_op.drop_index(batch_op.f('ix_conflicts_record_id'))
        batch_op.drop_index(batch_op.f('ix_conflicts_grid_id'))
        batch_op.drop_index(batch_op.f('ix_conflicts_device_id'))

    op.drop_table('conflicts')
    with op.batch_alter_table('change_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_change_log_user_id'))
        batch_op.drop_index(batch_op.f('ix_change_log_seq'))
        batch_op.drop_index(batch_op.f('ix_change_log_record_id'))
        batch_op.drop_index(batch_op.f('ix_change_log_received_at'))
        batch_op.drop_index(batch_op.f('ix_change_log_grid_id'))
        batch_op.drop_index(batch_op.f('ix_change_log_device_id'))

    op.drop_table('change_log')
    op.drop_table('blobs')
    with op.batch_alter_table('blob_refs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_blob_refs_grid_id'))

    op.drop_table('blob_refs')
    with op.batch_alter_table('auth_challenges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_auth_challenges_device_id'))

    op.drop_table('auth_challenges')
    with op.batch_alter_table('applied_mutations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_applied_mutations_device_id'))

    op.drop_table('applied_mutations')
