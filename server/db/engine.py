"""Database URLs, the async engine and sessions, for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
from sqlalchemy import Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from sync.sqlite_binding import bind_plain_values_directly


class BadDatabaseUrl(ValueError):
    pass


def database_url(db: str | None, data_dir: Path) -> URL:
    """The async URL for ``db`` as a user writes it, or the data folder's SQLite file.

    ``postgresql://user@host/db`` works as written: the async driver is picked here.
    """
    if not db:
        return make_url(f"sqlite+aiosqlite:///{(data_dir / 'fieldloop.db').resolve()}")
    try:
        url = make_url(db)
    except Exception as exc:  # noqa: BLE001 - sqlalchemy raises several kinds for a bad URL
        # Echoed to a terminal and its logs: without the password.
        shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", db)
        raise BadDatabaseUrl(f"not a database URL: {shown!r}") from exc
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return _postgres_url(url)
    if backend == "sqlite":
        if url.database in (None, "", ":memory:") or "mode=memory" in (url.database or ""):
            # Each connection (the server has several) would open an empty database of its own.
            raise BadDatabaseUrl("an in-memory SQLite database is empty for every connection and gone at exit: "
                                 "give a file (sqlite:////srv/fieldloop.db), or no --db for the data folder's")
        return url.set(drivername="sqlite+aiosqlite")
    raise BadDatabaseUrl(f"unsupported database {backend!r}: use sqlite or postgresql")


# libpq's URL parameters an operator may copy from a hosting provider, as asyncpg takes them
# (SQLAlchemy hands every query parameter to asyncpg.connect, which takes no ``sslmode``).
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _postgres_url(url: URL) -> URL:
    try:
        port = url.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise BadDatabaseUrl("the port in the database URL must be 1 to 65535")
    query = dict(url.query)
    unknown = sorted(set(query) - {"sslmode", "ssl", "connect_timeout", "host"})
    if unknown:
        raise BadDatabaseUrl(f"the database URL's parameter {unknown[0]!r} is not supported: "
                             "use sslmode, connect_timeout or host")
    sslmode = query.pop("sslmode", None) or query.pop("ssl", None)
    if sslmode is not None:
        if sslmode not in _SSLMODES:
            raise BadDatabaseUrl(f"sslmode={sslmode!r} in the database URL: one of {', '.join(_SSLMODES)}")
        query["ssl"] = sslmode
    timeout = query.pop("connect_timeout", None)
    if timeout is not None:
        if not (isinstance(timeout, str) and timeout.isascii() and timeout.isdigit() and int(timeout) > 0):
            raise BadDatabaseUrl(f"connect_timeout={timeout!r} in the database URL: a whole number of seconds")
        query["timeout"] = timeout
    return url.set(drivername="postgresql+asyncpg", query=query)


def _json_dumps(value: object) -> str:
    return msgspec.json.encode(value).decode()


def create_engine(url: URL, *, pool_size: int = 10) -> AsyncEngine:
    """An engine configured for FieldLoop's write pattern on either database."""
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(
            url,
            json_serializer=_json_dumps,
            json_deserializer=msgspec.json.decode,
            connect_args={"timeout": 30},
        )
        configure_sqlite(engine.sync_engine)
        return engine
    return create_async_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=msgspec.json.decode,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args=_connect_timeout(url),
    )


def _connect_timeout(url: URL) -> dict:
    """``timeout`` from the URL (``connect_timeout`` as written) as the number asyncpg wants:
    SQLAlchemy hands it the URL's text."""
    timeout = url.query.get("timeout")
    return {"timeout": float(timeout)} if isinstance(timeout, str) else {}


def create_postgres_read_engine(url: URL, *, pool_size: int = 5) -> AsyncEngine:
    """An engine on the same PostgreSQL database for the sync API's reads (authentication, pull
    pages), each one statement that needs no transaction around it.

    A fixed set of connections, no overflow: requests beyond ``pool_size`` wait their turn, which
    on a few cores is no slower. Overflow connections are closed as soon as the pool has enough
    idle ones again, so a burst of 200 phones opened and closed some 55 backends, each costing
    PostgreSQL and the server 10-15 ms of CPU: a third of the burst's CPU went to them.

    No ping before each use (a round trip, some 5 % of a burst's CPU): a connection that died
    idle (PostgreSQL restarted) fails its statement and ``server.db.units.read`` runs the read
    again on a new one.

    Autocommit: a transaction would cost a BEGIN and a ROLLBACK round trip for each request.
    ``enable_sort`` off: a pull page is a range of the ``(grid_id, seq)`` index read in order,
    and with statistics that lag a bulk load PostgreSQL otherwise gathered every later change of
    the grid and sorted them, for every page (30 ms a page instead of 1.6 on 100,000 records).
    """
    return create_async_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=msgspec.json.decode,
        isolation_level="AUTOCOMMIT",
        pool_size=pool_size,
        max_overflow=0,
        connect_args={"server_settings": {"enable_sort": "off"}, **_connect_timeout(url)},
    )


def create_postgres_write_engine(url: URL, *, pool_size: int = 2) -> AsyncEngine:
    """An engine on the same PostgreSQL database for the sync API's write units (a push's group
    commit, the sync log), which run one at a time per process: a small fixed pool.

    No ping before each use: SQLAlchemy's ping is three round trips (BEGIN, an empty statement,
    ROLLBACK), 2 % of a push of 500. A connection that died idle fails the unit's first
    statement, before anything could commit, and ``server.db.units.write`` runs the unit again
    on another one.
    """
    return create_async_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=msgspec.json.decode,
        pool_size=pool_size,
        max_overflow=0,
        connect_args=_connect_timeout(url),
    )


def create_sqlite_thread_engine(url: URL, *, pool_size: int, cache_mib: int = 2) -> Engine:
    """A synchronous engine on the same SQLite file as ``url``, for connections used from
    worker threads (see ``server.db.units``), configured as the async one, with a page cache
    of ``cache_mib`` per connection."""
    engine = create_sync_engine(
        url.set(drivername="sqlite+pysqlite"),
        json_serializer=_json_dumps,
        json_deserializer=msgspec.json.decode,
        connect_args={"timeout": 30, "check_same_thread": False},
        pool_size=pool_size,
        max_overflow=0,
    )
    configure_sqlite(engine)

    @event.listens_for(engine, "connect")
    def _no_checkpoint_in_commits(dbapi_connection, _record):  # noqa: ANN001
        # A commit past 1000 WAL pages would copy them into the database before returning;
        # server.db.units checkpoints on a thread of its own instead, off the writers' path.
        dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")
        dbapi_connection.execute(f"PRAGMA cache_size={-1024 * cache_mib}")

    return engine


# 8 KB pages rather than SQLite's 4 KB: a push's commit writes each changed page to the WAL as a
# frame (two writes), and with half as many pages for the same rows the burst of 200 phones had a
# lower p99 in 4 of 5 paired runs (some 8 % at the median); 16 KB was no better than 8.
SQLITE_PAGE_SIZE = 8192


def configure_sqlite(engine: Engine) -> None:
    bind_plain_values_directly()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # noqa: ANN001
        # Take transaction control from the driver so that "begin" below decides the mode.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Read only when the file is new: an existing database keeps the page size it was made with.
        cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # noqa: ANN001
        if connection.get_execution_options().get(READ_ONLY):
            # A reader runs each statement in autocommit: WAL gives every statement a consistent
            # snapshot beside the writer, and it never takes the write lock.
            return
        else:
            # BEGIN IMMEDIATE: a deferred transaction cannot upgrade to a write lock under load,
            # it fails with "database is locked" instead of waiting.
            connection.exec_driver_sql("BEGIN IMMEDIATE")


READ_ONLY = "fieldloop_read_only"


def session_factory(engine: AsyncEngine) -> async_sessionmaker:
    """Sessions for transactions that write (on SQLite they take the write lock at BEGIN)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def read_engine(engine: AsyncEngine) -> AsyncEngine:
    """The engine for connections that only read: on SQLite they never wait for a writer."""
    return engine.execution_options(**{READ_ONLY: True})


def read_session_factory(engine: AsyncEngine) -> async_sessionmaker:
    """Sessions for transactions that only read (the console's pages)."""
    return async_sessionmaker(read_engine(engine), expire_on_commit=False)

