"""Units of work: a synchronous function over one Connection, run whole from async code.

The sync API's hot paths (a push's group commit, a pull, a device's authentication) are written
as plain functions of a SQLAlchemy ``Connection`` and run here. Why: through aiosqlite every
statement costs four thread hops (cursor, execute, fetch, close), so a push of one mutation
took some thirty hops and 6 ms of CPU, and 200 phones syncing at once spent most of their wait
on hops. On SQLite a write runs in one call on the writer thread (SQLite allows one writer, and
the insert's C work then overlaps the event loop's); a read runs at once on the event loop's
own connection: it is a few index lookups in memory-mapped pages, shorter than the hop to a
thread and back (which, with the loop busy, waited for the GIL). On PostgreSQL a unit runs
through ``run_sync`` on the asyncpg connection, where a statement is a round trip and not a hop.

Everything else (console pages, accounts, enrollment) keeps the async sessions: it is not hot.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db.engine import (
    READ_ONLY,
    create_postgres_read_engine,
    create_postgres_write_engine,
    create_sqlite_thread_engine,
)

P = ParamSpec("P")
T = TypeVar("T")

WRITER_CACHE_MIB = 64
CHECKPOINT_DELAY_S = 1.0


class _SqliteThreads:
    """Synchronous engines on the same SQLite file: one writer thread, the event loop's reading
    connection, and a thread that checkpoints the WAL after commits, so that no commit waits for
    a checkpoint."""

    def __init__(self, engine: AsyncEngine):
        # The writer's page cache holds the indexes it inserts into at random (uuid keys); a
        # reader's stays small, as a cold pull would otherwise fill it with pages read once.
        self.writer = create_sqlite_thread_engine(engine.url, pool_size=1, cache_mib=WRITER_CACHE_MIB)
        self._readers = create_sqlite_thread_engine(engine.url, pool_size=2)
        self.reader = self._readers.execution_options(**{READ_ONLY: True})
        self._loop_reader: Connection | None = None
        self.write_thread = ThreadPoolExecutor(1, thread_name_prefix="fieldloop-write")
        self.checkpoint_thread = ThreadPoolExecutor(1, thread_name_prefix="fieldloop-checkpoint")
        self._checkpoint_pending = threading.Event()
        self._closing = threading.Event()

    def checkpoint_soon(self) -> None:
        """Copy the WAL into the database on the checkpoint thread, unless a copy is already
        queued. The copy waits a moment first, so that one copy covers a burst of commits (a
        page written by each of them is copied once). PASSIVE: it never blocks readers or the
        writer."""
        if not self._checkpoint_pending.is_set():
            self._checkpoint_pending.set()
            self.checkpoint_thread.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        self._closing.wait(CHECKPOINT_DELAY_S)
        self._checkpoint_pending.clear()
        with self.reader.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def loop_reader(self) -> Connection:
        """The event loop thread's reading connection, opened on first use and kept."""
        if self._loop_reader is None or self._loop_reader.closed:
            self._loop_reader = self.reader.connect()
        return self._loop_reader

    def close(self) -> None:
        self._closing.set()
        self.write_thread.shutdown(wait=False)
        self.checkpoint_thread.shutdown(wait=True)
        if self._loop_reader is not None:
            self._loop_reader.close()
        self.writer.dispose()
        self._readers.dispose()


_sqlite: weakref.WeakKeyDictionary[AsyncEngine, _SqliteThreads] = weakref.WeakKeyDictionary()
_postgres_readers: weakref.WeakKeyDictionary[AsyncEngine, AsyncEngine] = weakref.WeakKeyDictionary()
_postgres_writers: weakref.WeakKeyDictionary[AsyncEngine, AsyncEngine] = weakref.WeakKeyDictionary()


def _threads(engine: AsyncEngine) -> _SqliteThreads | None:
    if engine.dialect.name != "sqlite":
        return None
    threads = _sqlite.get(engine)
    if threads is None:
        threads = _sqlite[engine] = _SqliteThreads(engine)
        weakref.finalize(engine, threads.close)
    return threads


async def write(engine: AsyncEngine, unit: Callable[Concatenate[Connection, P], T], *args: P.args) -> T:
    """Run ``unit(connection, *args)`` in one transaction: committed if it returns, rolled back
    if it raises. On SQLite the transaction takes the write lock at BEGIN."""
    threads = _threads(engine)
    if threads is None:
        writer = _postgres_pool(_postgres_writers, engine, create_postgres_write_engine)
        # A connection that had died fails the unit before its commit, so nothing of it was
        # written: it runs again. A commit that fails is not run again: it may have been written.
        return await _on_live_connection(writer, writer.begin, unit, *args)

    def in_transaction() -> T:
        with threads.writer.begin() as connection:
            result = unit(connection, *args)
        threads.checkpoint_soon()
        return result

    return await _in_thread(threads.write_thread, in_transaction)


async def read(engine: AsyncEngine, unit: Callable[Concatenate[Connection, P], T], *args: P.args) -> T:
    """Run ``unit(connection, *args)`` on a connection that only reads (on SQLite it never waits
    for a writer: each statement sees the last commit). Keep such units short: on SQLite they
    run on the event loop's thread."""
    threads = _threads(engine)
    if threads is None:
        reader = _postgres_pool(_postgres_readers, engine, create_postgres_read_engine)
        return await _on_live_connection(reader, reader.connect, unit, *args)
    connection = threads.loop_reader()
    try:
        return unit(connection, *args)
    finally:
        connection.rollback()  # ends SQLAlchemy's autobegun transaction; SQLite had none open


class _ConnectionLost(Exception):
    def __init__(self, error: DBAPIError):
        super().__init__(str(error))
        self.error = error


async def _on_live_connection(pool: AsyncEngine, opened: Callable[[], Any],
                              unit: Callable[Concatenate[Connection, P], T], *args: P.args) -> T:
    """Run ``unit`` on a connection of ``pool`` (``opened``: its ``connect`` or ``begin``). A pooled
    connection that had died (PostgreSQL restarted) is dropped and the unit runs again on the
    next one; after a restart every pooled one is dead, and the last try is on a new connection."""
    for _ in range(pool.pool.size()):
        try:
            return await _run_on(opened, unit, *args)
        except _ConnectionLost:
            continue
    try:
        return await _run_on(opened, unit, *args)
    except _ConnectionLost as lost:
        raise lost.error from None


async def _run_on(opened: Callable[[], Any], unit: Callable[Concatenate[Connection, P], T], *args: P.args) -> T:
    async with opened() as connection:
        try:
            return await connection.run_sync(_dropping_dead_connection, unit, *args)
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise _ConnectionLost(exc) from exc
            raise


def _dropping_dead_connection(connection: Connection, unit: Callable[Concatenate[Connection, P], T],
                              *args: P.args) -> T:
    """Run ``unit``; if the database closed the connection under it, drop the connection from
    the pool and raise SQLAlchemy's error for a lost connection.

    The units run their statements on the driver (``server.db.driver_sql``, ``server.db.inserts``),
    past SQLAlchemy's own error handling, which is what drops a dead connection: without this, the
    connections a PostgreSQL restart had closed went back to the read pool, which has no ping
    before use, and failed every request that drew one until the server itself restarted."""
    try:
        return unit(connection, *args)
    except DBAPIError:
        raise  # through SQLAlchemy's execution, which has dealt with a lost connection itself
    except Exception as exc:
        if connection.invalidated or not connection.dialect.is_disconnect(
            exc, connection.connection.dbapi_connection, None
        ):
            raise
        connection.invalidate(exc)
        raise DBAPIError(None, None, exc, connection_invalidated=True) from exc


async def open_pools(engine: AsyncEngine) -> None:
    """Open the PostgreSQL read and write pools' connections now, at start, rather than in the
    first burst of requests, where each new backend's start (10-15 ms of CPU) delayed them.
    Nothing on SQLite."""
    if _threads(engine) is not None:
        return
    async with contextlib.AsyncExitStack() as held:
        for pools, create in ((_postgres_readers, create_postgres_read_engine),
                              (_postgres_writers, create_postgres_write_engine)):
            pool = _postgres_pool(pools, engine, create)
            for _ in range(pool.pool.size()):
                await held.enter_async_context(pool.connect())


def _postgres_pool(pools: weakref.WeakKeyDictionary, engine: AsyncEngine,
                   create: Callable[[Any], AsyncEngine]) -> AsyncEngine:
    pool = pools.get(engine)
    if pool is None:
        pool = pools[engine] = create(engine.url)
    return pool


async def _in_thread(executor: ThreadPoolExecutor, call: Callable[[], T]) -> T:
    # Shielded: a cancelled request must not abandon a unit half-way on its thread; it finishes
    # (a write commits or rolls back whole) and only the waiting stops.
    return await asyncio.shield(asyncio.get_running_loop().run_in_executor(executor, call))


async def dispose(engine: AsyncEngine) -> None:
    """Close the threads and connections made for ``engine`` (at shutdown)."""
    threads = _sqlite.pop(engine, None)
    if threads is not None:
        threads.close()
    for pools in (_postgres_readers, _postgres_writers):
        pool = pools.pop(engine, None)
        if pool is not None:
            await pool.dispose()

