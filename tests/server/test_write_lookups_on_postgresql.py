"""On PostgreSQL a push's lookups of its mutation ids and records read the primary keys' indexes
when a group carries 2,000 keys among 100,000 stored rows of the sizes a push writes.

Compared with ``= ANY``, such a group of mutation ids was planned as a parallel scan of every
stored mutation (the machines' autovacuum is off, so the planner works from the table's size
alone): twelve such scans in one burst of 200 phones. As a semi-join on the unnested keys it is
read one index probe a key. (The planner still weighs the two: among a few thousand stored rows
it may scan them, which is then cheaper.)"""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

from server.db.keys import key_list, one_of
from server.db.models import AppliedMutation, RecordRow

STORED = 100_000
GROUP = 2_000
# Rows about as wide as a push of visits leaves them: a stored result carries its record (about
# 400 bytes), a record's meta a stamp and an origin per field.
RESULT = "decode(repeat('ab', 400), 'hex')"
FIELDS = """('{"address": "' || repeat('楼', 60) || '"}')::jsonb"""
META = """('{"address": [1, "' || repeat('0', 84) || '", "' || repeat('d', 36) || '"]}')::json"""


def _plan(url: str, statement, keys: list[str]) -> str:  # noqa: ANN001
    sql = str(statement.compile(dialect=asyncpg_dialect.dialect()))

    async def explain() -> str:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(
                "INSERT INTO applied_mutations (mid, device_id, record_id, status, result, received_at) "
                f"SELECT 'm' || i, 'phone', 'r' || i, 'applied', {RESULT}, now() FROM generate_series(1, {STORED}) i")
            await connection.execute(
                "INSERT INTO records (id, entity, grid_id, version, hlc, deleted, fields, meta, seq, updated_at, wire) "
                f"SELECT 'r' || i, 'household', 'g', 1, 'h', false, {FIELDS}, {META}, i, now(), {RESULT} "
                f"FROM generate_series(1, {STORED}) i")
            rows = await connection.fetch("EXPLAIN " + sql, key_list("postgresql", keys))
            return "\n".join(row[0] for row in rows)
        finally:
            await connection.close()

    return asyncio.run(explain())


def test_a_group_of_mutation_ids_is_read_by_index(postgres_url):
    statement = select(AppliedMutation.mid, AppliedMutation.device_id, AppliedMutation.result).where(
        one_of("postgresql", AppliedMutation.mid, "keys"))
    plan = _plan(postgres_url, statement, [f"m{i}" for i in range(1, 2 * GROUP, 2)])
    assert "Seq Scan" not in plan and "Bitmap" not in plan, plan
    assert "Index Scan using applied_mutations_pkey" in plan, plan


def test_a_group_of_records_is_read_by_index(postgres_url):
    statement = select(RecordRow.id, RecordRow.version).where(one_of("postgresql", RecordRow.id, "keys"))
    plan = _plan(postgres_url, statement, [f"r{i}" for i in range(1, 2 * GROUP, 2)])
    assert "Seq Scan" not in plan and "Bitmap" not in plan, plan
    assert "Index Scan using records_pkey" in plan, plan
