"""Throwaway databases for tests: a SQLite file in a temp folder, or a fresh PostgreSQL
database cloned from a migrated template (cloning is much faster than migrating each time)."""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg
from sqlalchemy.engine import make_url

from server.db.engine import create_engine, database_url
from server.db.migrate import upgrade

PG_ADMIN_URL = os.environ.get("FIELDLOOP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _dsn(database: str) -> str:
    url = make_url(PG_ADMIN_URL).set(database=database)
    return url.render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(_dsn(make_url(PG_ADMIN_URL).database))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


class PostgresDatabases:
    """Makes and drops databases for one test session."""

    def __init__(self) -> None:
        self.template = f"fl_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.made: list[str] = []

    def start(self) -> None:
        asyncio.run(self._start())

    async def _start(self) -> None:
        await _admin(f'CREATE DATABASE "{self.template}"')
        engine = create_engine(database_url(_dsn(self.template), None))
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    def new(self) -> str:
        """A fresh migrated database; returns its URL as a user would write it."""
        name = f"fl_t_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self.made.append(name)
        return _dsn(name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if name in self.made:
            self.made.remove(name)

    def close(self) -> None:
        for name in [*self.made, self.template]:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
