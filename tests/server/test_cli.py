"""The `fieldloop` command as outside tools call it: exact arguments, one-line errors, exit 2."""

from __future__ import annotations

import asyncio
import base64
import http.client
import socket
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import make_url

from server.db.engine import create_engine, session_factory
from server.devices import service as devices
from server.settings import Settings
from shared_schema.messages import EnrollRequest
from tests.support.databases import PG_ADMIN_URL
from tests.support.servers import LiveServer


def fieldloop(tmp_path, *args: str, stdin: str | None = None, db: str | None = None) -> subprocess.CompletedProcess:
    base = [sys.executable, "-m", "server.cli", "--data", str(tmp_path / "data")]
    if db:
        base += ["--db", db]
    return subprocess.run([*base, *args], input=stdin, capture_output=True, text=True, timeout=120)


def test_the_administration_commands_work_as_documented(tmp_path, backend):
    grid = fieldloop(tmp_path, "grid", "add", "所前社区第1网格", "--community", "所前社区", db=backend)
    assert grid.returncode == 0, grid.stderr
    assert len(grid.stdout.strip()) == 36  # the grid's id
    added = fieldloop(tmp_path, "user", "add", "张大爷", "--role", "red_steward", "--grid", "所前社区第1网格",
                      db=backend)
    assert added.returncode == 0, added.stderr
    boss = fieldloop(tmp_path, "user", "add", "李主任", "--role", "supervisor", "--grid", "所前社区第1网格",
                     "--password-stdin", stdin="a-long-password\n", db=backend)
    assert boss.returncode == 0, boss.stderr
    assert fieldloop(tmp_path, "user", "password", "李主任", stdin="another-password\n", db=backend).returncode == 0
    code = fieldloop(tmp_path, "enrollment", "create", "--user", "张大爷", db=backend)
    assert code.returncode == 0
    last = code.stdout.strip().splitlines()[-1]
    assert len(last.replace("-", "")) == 12
    listed = fieldloop(tmp_path, "device", "list", db=backend)
    assert listed.returncode == 0 and listed.stdout == ""


def test_data_and_db_may_follow_the_command(tmp_path):
    other = tmp_path / "elsewhere"
    result = subprocess.run([sys.executable, "-m", "server.cli", "grid", "add", "g", "--community", "c",
                             "--data", str(other)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (other / "fieldloop.db").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("grid", "add", "X"),  # no --community
        ("user", "add", "bob", "--role", "boss"),
        ("user", "add", "bob", "--role", "grid_worker", "--grid", "no such grid"),
        ("enrollment", "create", "--user", "nobody"),
        ("device", "revoke", "no-such-device"),
        ("serve", "--port", "99999"),
        ("serve", "--workers", "2"),  # several workers need PostgreSQL
        ("serve", "--host", "no such host!"),
        ("--db", "mysql://x/y", "device", "list"),
        ("frobnicate",),
    ],
)
def test_a_bad_argument_gets_one_line_and_exit_2(tmp_path, args):
    result = fieldloop(tmp_path, *args)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("fieldloop: error:")


def test_an_unreachable_database_is_one_line_and_exit_1(tmp_path):
    result = fieldloop(tmp_path, "device", "list", db="postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_missing_postgresql_database_is_named_in_one_line(tmp_path, postgres_databases):
    missing = make_url(PG_ADMIN_URL).set(database="fl_no_such_database").render_as_string(hide_password=False)
    result = fieldloop(tmp_path, "device", "list", db=missing)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == 'fieldloop: error: cannot reach the database: database "fl_no_such_database" does ' \
                                    "not exist"


def test_serve_on_a_port_already_taken_says_so_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = fieldloop(tmp_path, "serve", "--port", str(taken.getsockname()[1]))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("fieldloop: error: cannot listen on 127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_demo_loads_a_sub_district_and_prints_a_login_and_a_code(tmp_path):
    import sqlite3

    result = fieldloop(tmp_path, "demo", "--households", "300")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "admin" in lines[0] and len(lines[-1].replace("-", "")) == 12
    db = sqlite3.connect(tmp_path / "data" / "fieldloop.db")
    counts = dict(db.execute("SELECT entity, count(*) FROM records GROUP BY entity").fetchall())
    assert counts["household"] == 300 and counts["visit"] == 600 and counts["grid"] == 12
    statuses = {s for (s,) in db.execute("SELECT json_extract(fields, '$.status') FROM records WHERE entity='case'")}
    assert {"reported", "accepted", "dispatched", "resolved", "closed"} <= statuses
    again = fieldloop(tmp_path, "demo", "--households", "300")
    assert again.returncode == 0 and "already" in again.stdout


def test_serve_keeps_an_idle_connection_open_between_a_phones_requests(tmp_path):
    # A phone's sync is several requests seconds apart; uvicorn's own default closed the
    # connection after 5 s, and a request sent just as it closed failed with a reset.
    server = LiveServer(tmp_path / "data").start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/healthz")
        assert connection.getresponse().read()
        local_port = connection.sock.getsockname()[1]
        time.sleep(6)
        connection.request("GET", "/healthz")
        assert connection.getresponse().status == 200
        assert connection.sock.getsockname()[1] == local_port  # the same connection, not a new one
    finally:
        server.kill()


def test_a_wipe_order_cannot_be_taken_back_from_the_command_line(tmp_path):
    fieldloop(tmp_path, "grid", "add", "g1", "--community", "c")
    fieldloop(tmp_path, "user", "add", "wang", "--role", "grid_worker", "--grid", "g1")
    code = fieldloop(tmp_path, "enrollment", "create", "--user", "wang").stdout.strip().splitlines()[-1]
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                serialization.PublicFormat.Raw)

    async def enroll() -> str:
        engine = create_engine(Settings(data_dir=tmp_path / "data").url)
        try:
            request = EnrollRequest(code=code, public_key=base64.b64encode(raw).decode())
            return (await devices.enroll(session_factory(engine), request)).device_id
        finally:
            await engine.dispose()

    device_id = asyncio.run(enroll())
    # An id copied from somewhere that shows it in capitals is the same device.
    assert fieldloop(tmp_path, "device", "revoke", device_id.upper(), "--wipe").returncode == 0
    for weaker in (("device", "retire", device_id), ("device", "revoke", device_id)):
        refused = fieldloop(tmp_path, *weaker)
        assert refused.returncode == 2 and "cannot be undone" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert f"{device_id}\twang\trevoked+wipe\t" in fieldloop(tmp_path, "device", "list").stdout


def test_db_check_names_the_stored_records_a_phone_could_not_hold(tmp_path, backend):
    import msgspec
    from sqlalchemy import update

    from server.db.models import RecordRow
    from server.records.writes import SERVER, commit_mutations, server_clock
    from shared_schema.messages import Mutation, Record
    from sync.client.ids import new_id

    grid = fieldloop(tmp_path, "grid", "add", "所前社区第1网格", "--community", "所前社区", db=backend)
    grid_id = grid.stdout.strip()
    households = [new_id(), new_id()]

    async def write(tighten: bool) -> None:
        engine = create_engine(Settings(tmp_path / "data", backend).url)
        try:
            if not tighten:
                mutations = [Mutation(mid=new_id(), entity="household", id=hid, op="upsert", base_version=0,
                                      hlc=server_clock().now(), fields={"grid_id": grid_id, "address": f"{n}号"})
                             for n, hid in enumerate(households)]
                assert {r.status.value for r in await commit_mutations(session_factory(engine), mutations, SERVER)} \
                    == {"applied"}
                return
            # Stored before the schema tightened: a value no phone of this version takes.
            old = Record(entity="household", id=households[1], version=1, hlc=server_clock().now(), deleted=False,
                         fields={"grid_id": grid_id, "address": "1号", "members": "many"})
            async with session_factory(engine)() as session, session.begin():
                await session.execute(update(RecordRow).where(RecordRow.id == households[1])
                                      .values(wire=msgspec.msgpack.encode(old)))
        finally:
            await engine.dispose()

    asyncio.run(write(tighten=False))
    clean = fieldloop(tmp_path, "db", "check", db=backend)
    # The grid is a record too.
    assert clean.returncode == 0 and clean.stdout.strip() == "3 records read, 0 a phone could not hold", clean
    asyncio.run(write(tighten=True))
    found = fieldloop(tmp_path, "db", "check", db=backend)
    assert found.returncode == 1, found
    [line, summary] = found.stdout.strip().splitlines()
    assert line.startswith(f"household {households[1]} version 1: ") and "members" in line
    assert summary == "3 records read, 1 a phone could not hold"
