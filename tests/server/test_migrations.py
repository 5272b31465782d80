"""The models and the Alembic migrations agree, on both databases."""

from __future__ import annotations

import asyncio
import datetime
import json

import msgspec
from alembic import command
from sqlalchemy import select, text

from server.db.engine import create_engine
from server.db.expressions import Instant, json_text
from server.db.migrate import alembic_config, check, upgrade
from server.db.models import RecordRow
from shared_schema.messages import Record


def test_migrations_match_the_models(settings):
    async def migrate_and_check() -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.url)
        try:
            await upgrade(engine)
            await upgrade(engine)  # a second run is a no-op
            await check(engine)  # raises when a model changed without a migration
        finally:
            await engine.dispose()

    asyncio.run(migrate_and_check())


def test_records_written_before_0003_get_the_encoding_a_pull_sends(settings):
    # 0003 adds records.wire and fills it for the rows already there: a live record as it is, a
    # deleted one with empty fields (a tombstone keeps its fields for the logs, not for pulls).
    live = {"grid_id": GRID, "address": "雉城街道台苑新村3幢2单元301室", "tags": ["党员户"], "members": 3}

    def to_0002_with_records(connection) -> None:
        at_revision(connection, "0002")
        for record_id, deleted in ((LIVE, False), (GONE, True)):
            connection.execute(
                text("INSERT INTO records (id, entity, grid_id, version, hlc, deleted, fields, meta, seq, updated_at) "
                     "VALUES (:id, 'household', :grid, 4, :hlc, :deleted, :fields, '{}', :seq, :now)"),
                {"id": record_id, "grid": GRID, "hlc": HLC, "deleted": deleted, "fields": json.dumps(live),
                 "seq": 1 if deleted else 2, "now": datetime.datetime.now(datetime.UTC)},
            )

    async def read(connection) -> dict[str, Record]:  # noqa: ANN001
        rows = (await connection.execute(text("SELECT id, wire FROM records"))).all()
        return {row.id: msgspec.msgpack.decode(row.wire, type=Record) for row in rows}

    records = upgraded_from(settings, to_0002_with_records, read)
    assert records[LIVE] == Record(entity="household", id=LIVE, version=4, hlc=HLC, deleted=False, fields=live)
    assert records[GONE] == Record(entity="household", id=GONE, version=4, hlc=HLC, deleted=True, fields={})


GRID = "0190a000-0000-7000-8000-000000000001"
LIVE = "0190a000-0000-7000-8000-00000000000a"
GONE = "0190a000-0000-7000-8000-00000000000b"
HLC = "1764000000000-0000-phone"


def at_revision(connection, revision: str) -> None:  # noqa: ANN001
    """Bring the database to ``revision``: up on a new SQLite file, down on a PostgreSQL database
    cloned from a migrated template."""
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
    command.downgrade(config, revision)


def upgraded_from(settings, prepare, read):  # noqa: ANN001, ANN201
    """Run ``prepare(connection)`` in a transaction (it brings the database to an old revision and
    writes rows there), upgrade to the head as the server does at start, and return what
    ``read(connection)`` (async) reads after."""

    async def run():  # noqa: ANN202
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(prepare)
            await upgrade(engine)
            async with engine.connect() as connection:
                return await read(connection)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_records_written_before_0005_keep_their_fields_and_are_found_by_them(settings):
    # 0005 turns records.fields into jsonb on PostgreSQL (SQLite keeps JSON text): every value
    # comes back as it was written, and the console's index expressions read the converted rows.
    fields = {"grid_id": GRID, "household_id": LIVE, "method": "door_to_door", "topics": ["停车", "噪音"],
              "notes": "居民反映楼道灯不亮\n\"三楼\"", "visited_at": "2026-11-25T09:30:00+08:00", "score": 4.5}

    def to_0004_with_a_visit(connection) -> None:
        at_revision(connection, "0004")
        connection.execute(
            text("INSERT INTO records (id, entity, grid_id, version, hlc, deleted, fields, meta, seq, updated_at, wire) "
                 "VALUES (:id, 'visit', :grid, 1, :hlc, false, :fields, '{}', 1, :now, :wire)"),
            {"id": GONE, "grid": GRID, "hlc": HLC, "fields": json.dumps(fields, ensure_ascii=False),
             "now": datetime.datetime.now(datetime.UTC), "wire": b"\x80"},
        )

    async def read(connection) -> tuple[str | None, object, list]:  # noqa: ANN001
        column_type = None
        if connection.dialect.name == "postgresql":
            column_type = (await connection.execute(text(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'records' AND column_name = 'fields'"))).scalar_one()
        stored = (await connection.execute(select(RecordRow.fields))).scalar_one()
        found = (await connection.execute(
            select(RecordRow.id).where(json_text(RecordRow.fields, "household_id") == LIVE)
            .order_by(Instant(json_text(RecordRow.fields, "visited_at"))))).scalars().all()
        return column_type, stored, found

    column_type, stored, found = upgraded_from(settings, to_0004_with_a_visit, read)
    assert column_type in (None, "jsonb")
    assert stored == fields
    assert found == [GONE]
