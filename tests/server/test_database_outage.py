"""The database goes away and comes back (Changes 15): a PostgreSQL restart costs the server no
restart of its own; while the database cannot be reached, devices get ``503 unavailable`` with
``Retry-After``, the console a page that says so, ``/healthz`` a 503, and nothing is half-written."""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from server.db.engine import create_engine, database_url
from server.db.outage import database_unreachable
from server.sync_api.synclog import SyncLog
from tests.server.test_guarantees_live import change_log_count, enroll, households
from tests.support.databases import PG_ADMIN_URL, _admin
from tests.support.servers import LiveServer

PASSWORD = "correct-horse-9"


def _terminate_backends(database: str) -> int:
    async def terminate() -> int:
        connection = await asyncpg.connect(PG_ADMIN_URL)
        try:
            return await connection.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()", database)
        finally:
            await connection.close()

    return asyncio.run(terminate())


def _allow_connections(database: str, allowed: bool) -> None:
    asyncio.run(_admin(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}'))


def _console_login(server: LiveServer, name: str) -> httpx.Client:
    server.cli("user", "add", name, "--role", "supervisor", "--grid", "所前社区第1网格", "--password-stdin",
               stdin=PASSWORD + "\n")
    browser = httpx.Client(base_url=server.url, timeout=30)
    browser.get("/console/login")
    reply = browser.post("/console/login", data={"name": name, "password": PASSWORD, "next": "/console/",
                                                 "_csrf": browser.cookies["fl_csrf"]})
    assert reply.status_code == 303, reply.text
    return browser


def test_a_postgresql_restart_costs_no_request(tmp_path, postgres_url):
    """Every pooled connection dies at once, as when PostgreSQL restarts: the requests after it
    all succeed, on new connections (the read pool has no ping before use)."""
    server = LiveServer(tmp_path / "live", postgres_url).start()
    try:
        grid = server.cli("grid", "add", "所前社区第1网格", "--community", "所前社区").stdout.strip()
        phone = enroll(server, "wang", "所前社区第1网格")
        assert phone.call("POST", "/v1/sync/push", {"mutations": households(phone, grid, 5)}).status_code == 200
        for _ in range(8):  # more than the read pool holds, so every pooled connection is opened
            assert phone.call("GET", "/v1/sync/pull").status_code == 200
        assert _terminate_backends(make_url(postgres_url).database) >= 2
        statuses = [phone.call("GET", "/v1/sync/pull").status_code for _ in range(8)]
        statuses.append(phone.call("POST", "/v1/sync/push", {"mutations": households(phone, grid, 5)}).status_code)
        assert statuses == [200] * 9
    finally:
        server.kill()


def test_while_postgresql_refuses_connections_devices_get_503_and_nothing_is_applied(tmp_path, postgres_url):
    database = make_url(postgres_url).database
    server = LiveServer(tmp_path / "live", postgres_url).start()
    try:
        grid = server.cli("grid", "add", "所前社区第1网格", "--community", "所前社区").stdout.strip()
        phone = enroll(server, "wang", "所前社区第1网格")
        browser = _console_login(server, "boss")
        assert browser.get("/console/").status_code == 200
        batch = households(phone, grid, 20)

        _allow_connections(database, False)
        try:
            _terminate_backends(database)
            push = phone.call("POST", "/v1/sync/push", {"mutations": batch})
            pull = phone.call("GET", "/v1/sync/pull")
            for reply in (push, pull):
                assert reply.status_code == 503
                assert reply.headers["Retry-After"] == "5"
                body = phone.decode(reply)
                assert body["error"]["code"] == "unavailable"
                assert isinstance(body["server_time"], int)
            page = browser.get("/console/", headers={"Accept-Language": "zh-CN"})
            assert page.status_code == 503 and "数据库暂时无法连接" in page.text
            assert httpx.get(f"{server.url}/healthz").status_code == 503
            assert server.process.poll() is None
        finally:
            _allow_connections(database, True)

        # Back without a restart; the push refused during the outage was not applied, and now is, once.
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert change_log_count(server, [m["mid"] for m in batch]) == 0
        reply = phone.call("POST", "/v1/sync/push", {"mutations": batch})
        assert reply.status_code == 200
        assert [r["status"] for r in phone.decode(reply)["results"]] == ["applied"] * 20
        assert change_log_count(server, [m["mid"] for m in batch]) == 20
        assert phone.call("GET", "/v1/sync/pull").status_code == 200
        assert browser.get("/console/").status_code == 200
        assert "Traceback" not in server.log_path.read_text()
    finally:
        server.kill()


def test_what_counts_as_an_unreachable_database(tmp_path):
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.OperationalError) as missing_table:
        holder.execute("SELECT * FROM no_such_table")
    holder.close()
    other.close()

    assert database_unreachable(locked.value)
    assert database_unreachable(DBAPIError("INSERT", (), locked.value))
    assert database_unreachable(ConnectionRefusedError(111, "Connect call failed"))
    assert database_unreachable(asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"))
    assert database_unreachable(asyncpg.exceptions.TooManyConnectionsError("too many clients"))
    # The server's own faults stay faults: a 500, logged with its traceback.
    assert not database_unreachable(missing_table.value)
    assert not database_unreachable(asyncpg.exceptions.UndefinedColumnError("column x does not exist"))
    assert not database_unreachable(ValueError("bug"))


def test_the_sync_log_holds_a_bounded_backlog_while_the_database_is_away():
    async def scenario() -> list[str]:
        engine = create_engine(database_url("postgresql://postgres@127.0.0.1:1/nowhere", None))
        log = SyncLog(engine, max_pending=3)
        for i in range(5):
            log.add(device_id=f"d{i}", user_id=None, kind="pull")
        with pytest.raises(Exception) as refused:
            await log.flush()
        assert database_unreachable(refused.value)
        await engine.dispose()
        return [entry["device_id"] for entry in log._pending]

    assert asyncio.run(scenario()) == ["d2", "d3", "d4"]
