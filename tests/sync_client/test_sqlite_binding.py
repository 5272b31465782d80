"""sync.sqlite_binding: None, bytes and bools skip the driver's adaptation lookup, and still
bind exactly as SQLite's driver binds them without it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.db.engine import create_sqlite_thread_engine, database_url
from sync.client.cipher import AesGcmCipher
from sync.client.store import LocalStore
from sync.sqlite_binding import bind_plain_values_directly

PLAIN = (type(None), bytes, bool)


@pytest.fixture
def no_adapters() -> Iterator[None]:
    """The driver's adapter registry emptied for the test (it is process-wide), then restored."""
    saved = dict(sqlite3.adapters)
    sqlite3.adapters.clear()
    try:
        yield
    finally:
        sqlite3.adapters.clear()
        sqlite3.adapters.update(saved)


def _stored(values: tuple) -> list[tuple]:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (a, b, c, d)")
    db.execute("INSERT INTO t VALUES (?, ?, ?, ?)", values)
    return db.execute("SELECT typeof(a), a, typeof(b), b, typeof(c), c, typeof(d), d FROM t").fetchall()


def _registered() -> bool:
    return all((kind, sqlite3.PrepareProtocol) in sqlite3.adapters for kind in PLAIN)


def test_values_bind_as_the_driver_binds_them_without_adapters(no_adapters):
    values = (None, b"\x00\x81wire", True, False)
    before = _stored(values)
    bind_plain_values_directly()
    assert _registered()
    assert _stored(values) == before == [("null", None, "blob", b"\x00\x81wire", "integer", 1, "integer", 0)]


def test_the_server_engine_registers_them(no_adapters, tmp_path: Path):
    create_sqlite_thread_engine(database_url(None, tmp_path), pool_size=1).dispose()
    assert _registered()


def test_the_device_store_registers_them(no_adapters, tmp_path: Path):
    LocalStore(tmp_path / "device.db", AesGcmCipher(bytes(32))).close()
    assert _registered()
