"""Units of work: on SQLite, reads on the event loop's own connection and writes on the writer thread;
on PostgreSQL, reads and writes on fixed pools opened at start, with no ping before use."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db import units
from server.db.engine import create_engine, database_url


def _answer(connection: Connection) -> int:
    return connection.exec_driver_sql("SELECT 42").scalar_one()


def _make_table(connection: Connection) -> None:
    connection.exec_driver_sql("CREATE TABLE notes (text TEXT)")
    connection.exec_driver_sql("INSERT INTO notes VALUES ('入户走访')")


def _notes(connection: Connection) -> list[str]:
    return [text for (text,) in connection.exec_driver_sql("SELECT text FROM notes").all()]


def test_a_read_sees_the_last_write_and_survives_a_lost_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        engine = create_engine(database_url(None, tmp_path))
        try:
            assert await units.read(engine, _answer) == 42
            await units.write(engine, _make_table)
            assert await units.read(engine, _notes) == ["入户走访"]
            # A connection SQLAlchemy has given up on (a disk error, say) reconnects on its next use.
            units._threads(engine).loop_reader().invalidate()
            assert await units.read(engine, _notes) == ["入户走访"]
        finally:
            await units.dispose(engine)
            await engine.dispose()

    asyncio.run(scenario())


def _backend_pid(connection: Connection) -> int:
    return connection.exec_driver_sql("SELECT pg_backend_pid() FROM pg_sleep(0.02)").scalar_one()


async def _backend_pids(engine: AsyncEngine, reads: int) -> list[int]:
    """The PostgreSQL backend each of ``reads`` concurrent reads ran on."""
    return await asyncio.gather(*(units.read(engine, _backend_pid) for _ in range(reads)))


@contextlib.asynccontextmanager
async def _started(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine as the app starts it: the read pool opened."""
    engine = create_engine(database_url(postgres_url, None))
    try:
        await units.open_pools(engine)
        yield engine
    finally:
        await units.dispose(engine)
        await engine.dispose()


@pytest.mark.postgres
def test_a_burst_of_reads_on_postgresql_uses_the_connections_opened_at_start(postgres_url: str) -> None:
    # A new backend costs PostgreSQL and the server 10-15 ms of CPU: a burst must not open any.
    async def scenario() -> None:
        async with _started(postgres_url) as engine:
            opened_at_start = set(await _backend_pids(engine, 5))
            assert len(opened_at_start) == 5
            assert set(await _backend_pids(engine, 60)) <= opened_at_start

    asyncio.run(scenario())


@pytest.mark.postgres
def test_a_read_on_postgresql_survives_the_database_dropping_every_connection(postgres_url: str) -> None:
    # What a PostgreSQL restart does to the pooled connections: each dies while idle.
    async def scenario() -> None:
        async with _started(postgres_url) as engine:
            before = set(await _backend_pids(engine, 5))
            async with engine.connect() as admin:
                await admin.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()")
            assert not set(await _backend_pids(engine, 5)) & before

    asyncio.run(scenario())


def _write_note(connection: Connection) -> int:
    connection.exec_driver_sql("INSERT INTO notes VALUES ('入户走访')")
    return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()


@pytest.mark.postgres
def test_a_write_on_postgresql_survives_the_database_dropping_every_connection(postgres_url: str) -> None:
    # The write pool has no ping before use (three round trips a push): a connection that died idle
    # fails the unit's first statement, and the unit runs again, whole and once, on a new one.
    async def scenario() -> None:
        async with _started(postgres_url) as engine:
            await units.write(engine, _make_table)
            writer = units._postgres_writers[engine]
            pings = []
            ping = writer.dialect.do_ping
            writer.dialect.do_ping = lambda connection: pings.append(connection) or ping(connection)
            before = {await units.write(engine, _write_note) for _ in range(3)}
            async with engine.connect() as admin:
                await admin.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()")
            after = await units.write(engine, _write_note)
            assert after not in before
            assert await units.read(engine, _notes) == ["入户走访"] * 5
            assert pings == []

    asyncio.run(scenario())


@pytest.mark.postgres
def test_a_write_that_fails_for_another_reason_runs_once_and_leaves_nothing(postgres_url: str) -> None:
    runs = []

    def half_then_fails(connection: Connection) -> None:
        runs.append(connection)
        connection.exec_driver_sql("INSERT INTO notes VALUES ('巡查')")
        connection.exec_driver_sql("INSERT INTO no_such_table VALUES (1)")

    async def scenario() -> None:
        async with _started(postgres_url) as engine:
            await units.write(engine, _make_table)
            with pytest.raises(Exception, match="no_such_table"):
                await units.write(engine, half_then_fails)
            assert len(runs) == 1
            assert await units.read(engine, _notes) == ["入户走访"]

    asyncio.run(scenario())
