"""The SQLite file a data folder holds: WAL, 8 KB pages when new, and an older file's pages kept."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from server.db.engine import SQLITE_PAGE_SIZE, create_engine, database_url
from server.db.migrate import upgrade


def _migrate(data_dir: Path) -> None:
    async def run() -> None:
        engine = create_engine(database_url(None, data_dir))
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())


def _pragmas(path: Path) -> tuple[int, str, int]:
    with sqlite3.connect(path) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
        tables = connection.execute("SELECT count(*) FROM sqlite_master WHERE name = 'records'").fetchone()[0]
    return page_size, journal, tables


def test_a_new_data_folder_gets_a_wal_database_of_8_kb_pages(tmp_path):
    _migrate(tmp_path)
    assert SQLITE_PAGE_SIZE == 8192
    assert _pragmas(tmp_path / "fieldloop.db") == (8192, "wal", 1)


def test_a_database_made_with_4_kb_pages_keeps_them_and_is_migrated(tmp_path):
    # As earlier versions made it: SQLite's default pages, WAL, some table already there.
    with sqlite3.connect(tmp_path / "fieldloop.db") as connection:
        connection.execute("PRAGMA page_size=4096")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE kept (text TEXT)")
        connection.execute("INSERT INTO kept VALUES ('入户走访')")
    _migrate(tmp_path)
    assert _pragmas(tmp_path / "fieldloop.db") == (4096, "wal", 1)
    with sqlite3.connect(tmp_path / "fieldloop.db") as connection:
        assert connection.execute("SELECT text FROM kept").fetchall() == [("入户走访",)]
