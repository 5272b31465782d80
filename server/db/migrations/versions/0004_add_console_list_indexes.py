"""add the indexes the console's lists of a year of records read

Revision ID: 0004
Revises: 0003

At a sub-district's year (200,000 visits, 33,000 cases) every visit page sorted all visits by
the moment they name, the follow-ups due read every visit, the households list sorted every
household by address, a household's page read every visit and case to find its own, and a case
board column read every case: seconds a page. Each index is partial on the entity (visits,
cases, households; visits and cases), so a push of other entities writes no entry in it and
computes none of its expressions.

The expressions are spelled as ``server.db.expressions`` spells them in the queries; on
PostgreSQL the visit time goes through an IMMUTABLE function (a cast to timestamptz is STABLE).
"""

from __future__ import annotations

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# SQLite: the entity behind a unary + (SQLite's way to keep its planner off ix_records_entity_grid;
# the queries spell the condition the same way).
_SQLITE = (
    "CREATE INDEX ix_records_visit_time ON records (datetime(json_extract(fields, '$.visited_at')), seq) "
    "WHERE +entity = 'visit'",
    "CREATE INDEX ix_records_follow_up ON records (json_extract(fields, '$.follow_up_on'), seq) "
    "WHERE +entity = 'visit' AND json_extract(fields, '$.follow_up_on') IS NOT NULL",
    "CREATE INDEX ix_records_case_status ON records (json_extract(fields, '$.status'), seq) WHERE +entity = 'case'",
    "CREATE INDEX ix_records_address ON records (json_extract(fields, '$.address'), id) WHERE +entity = 'household'",
    "CREATE INDEX ix_records_household ON records (json_extract(fields, '$.household_id')) "
    "WHERE +entity IN ('visit', 'case')",
)
_POSTGRESQL = (
    # Written out, not imported: a migration keeps meaning what it meant when it was written.
    "CREATE OR REPLACE FUNCTION fieldloop_instant(text) RETURNS timestamptz "
    "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT CAST($1 AS timestamptz) $$",
    "CREATE INDEX ix_records_visit_time ON records (fieldloop_instant(fields ->> 'visited_at'), seq) "
    "WHERE entity = 'visit'",
    "CREATE INDEX ix_records_follow_up ON records ((fields ->> 'follow_up_on'), seq) "
    "WHERE entity = 'visit' AND (fields ->> 'follow_up_on') IS NOT NULL",
    "CREATE INDEX ix_records_case_status ON records ((fields ->> 'status'), seq) WHERE entity = 'case'",
    "CREATE INDEX ix_records_address ON records ((fields ->> 'address'), id) WHERE entity = 'household'",
    "CREATE INDEX ix_records_household ON records ((fields ->> 'household_id')) WHERE entity IN ('visit', 'case')",
)
_INDEXES = (
    "ix_records_visit_time", "ix_records_follow_up", "ix_records_case_status", "ix_records_address",
    "ix_records_household",
)


def upgrade() -> None:
    for statement in _POSTGRESQL if op.get_bind().dialect.name == "postgresql" else _SQLITE:
        op.execute(statement)


def downgrade() -> None:
    for name in _INDEXES:
        op.execute(f"DROP INDEX {name}")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION fieldloop_instant(text)")
