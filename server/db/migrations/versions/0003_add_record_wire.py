"""add the pull's encoding of each record

Revision ID: 0003
Revises: 0002

``records.wire`` holds each record as a pull sends it (msgpack), so that a pull page is its
rows' bytes side by side. Rows written before this revision get theirs here.
"""

from __future__ import annotations

import msgspec
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_BATCH = 2000


def upgrade() -> None:
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('wire', sa.LargeBinary(), nullable=True))
    _fill_wire(op.get_bind())
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.alter_column('wire', existing_type=sa.LargeBinary(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.drop_column('wire')


def _fill_wire(connection: sa.Connection) -> None:
    # The encoding is written out here, not imported: a migration must keep meaning what it
    # meant when it was written, whatever later code does.
    records = sa.table(
        'records', sa.column('id', sa.String), sa.column('entity', sa.String), sa.column('version', sa.Integer),
        sa.column('hlc', sa.String), sa.column('deleted', sa.Boolean), sa.column('fields', sa.JSON),
        sa.column('wire', sa.LargeBinary),
    )
    update = records.update().where(records.c.id == sa.bindparam('key')).values(wire=sa.bindparam('encoded'))
    after = ''
    while True:
        rows = connection.execute(
            sa.select(records.c.id, records.c.entity, records.c.version, records.c.hlc, records.c.deleted,
                      records.c.fields)
            .where(records.c.id > after).order_by(records.c.id).limit(_BATCH)
        ).all()
        if not rows:
            return
        connection.execute(update, [
            {'key': row.id, 'encoded': msgspec.msgpack.encode({
                'entity': row.entity, 'id': row.id, 'version': row.version, 'hlc': row.hlc,
                'deleted': bool(row.deleted), 'fields': {} if row.deleted else row.fields,
            })}
            for row in rows
        ])
        after = rows[-1].id
