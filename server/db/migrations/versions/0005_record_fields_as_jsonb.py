"""store a record's fields as jsonb on PostgreSQL

Revision ID: 0005
Revises: 0004

The console's list indexes (0004) read fields of every visit, case and household a push writes:
a visit's three (its time, its follow-up day and its household) parsed the fields' JSON text
three times over, in the push's transaction. jsonb is parsed once, when the row is written, and
read by key after that: about a tenth of PostgreSQL's work in a push of visits. SQLite keeps its
JSON text (its json_extract reads it in place).
"""

from __future__ import annotations

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # The indexes on fields are rebuilt with the column, their expressions unchanged.
        op.execute("ALTER TABLE records ALTER COLUMN fields TYPE jsonb USING fields::jsonb")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE records ALTER COLUMN fields TYPE json USING fields::json")
