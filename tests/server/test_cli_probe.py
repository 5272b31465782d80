"""The `fieldloop` command probed as an outside operator and test harness call it (sixth session).

What these hold, each found broken by the probe:
- a database URL the driver cannot take (a port past 65535, a query parameter asyncpg does not
  know, an in-memory SQLite database) is a bad argument: one line, exit 2, never a traceback;
  libpq's ``sslmode`` and ``connect_timeout`` in a PostgreSQL URL work as written; a URL that does
  not parse is echoed without its password;
- flags win over FIELDLOOP_DATA and FIELDLOOP_DB, wherever they stand, even when the
  environment's value is bad; an empty ``--data`` or ``--db`` is a bad argument;
- a command group without its command (``fieldloop``, ``fieldloop db``) is one line, not the help
  folded into one;
- a data folder that cannot be written, a SQLite file that is not a database, a database a newer
  FieldLoop migrated, or one whose tables another application made under FieldLoop's names is one
  line that says so, exit 1; so is a PostgreSQL role that cannot log in or create tables (the
  migration lock's release hid why);
- ``serve`` that fails to start ends with status 1, not uvicorn's 3;
- ``serve`` ends with status 0 after SIGTERM as after SIGINT, its WAL checkpointed (SIGINT did
  already; so did two ``serve`` commands started at once on a new PostgreSQL database, kept here);
- ``demo`` loads only into an empty database, and writes nothing when it refuses;
- ``--help`` names the environment variables, and that several workers need PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support.databases import PG_ADMIN_URL, _admin
from tests.support.servers import free_port


def fieldloop(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], check=False, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess, status: int) -> str:
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fieldloop: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("db", "said"),
    [
        ("postgresql://postgres@127.0.0.1:99999/x", "port"),
        ("postgresql://postgres@127.0.0.1/x?foo=bar", "foo"),
        ("postgresql://postgres@127.0.0.1/x?sslmode=sometimes", "sslmode"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_a_database_url_the_driver_cannot_take_is_a_bad_argument(tmp_path, db, said):
    for where in (["--db", db, "device", "list"], ["device", "list", "--db", db]):
        line = one_line_error(fieldloop("--data", str(tmp_path / "data"), *where), 2)
        assert "--db" in line and said in line


def test_serve_refuses_an_in_memory_sqlite_database_before_it_starts(tmp_path):
    # It started, and every worker thread opened a database of its own with no tables: a traceback, status 3.
    line = one_line_error(fieldloop("--data", str(tmp_path / "data"), "--db", "sqlite://", "serve", "--port",
                                    str(free_port())), 2)
    assert "in-memory" in line


def test_libpq_url_parameters_work_as_written(tmp_path, postgres_url):
    url = make_url(postgres_url).update_query_dict({"sslmode": "disable", "connect_timeout": "10"})
    result = fieldloop("--data", str(tmp_path / "data"), "--db", url.render_as_string(hide_password=False),
                       "grid", "add", "g", "--community", "c")
    assert result.returncode == 0, result.stderr


def test_flags_win_over_the_environment_even_when_its_value_is_bad(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    bad = {"FIELDLOOP_DB": "no-such-database-kind://x", "FIELDLOOP_DATA": str(a_file)}
    data = tmp_path / "data"
    after = fieldloop("grid", "add", "g1", "--community", "c", "--data", str(data), "--db",
                      f"sqlite:///{tmp_path / 'flag.db'}", env=bad)
    assert after.returncode == 0, after.stderr
    before = fieldloop("--data", str(data), "--db", f"sqlite:///{tmp_path / 'flag.db'}", "grid", "add", "g2",
                       "--community", "c", env=bad)
    assert before.returncode == 0, before.stderr
    names = {n for (n,) in sqlite3.connect(tmp_path / "flag.db").execute("SELECT name FROM grids")}
    assert names == {"g1", "g2"}
    # Without a flag, the environment's bad value is the operator's argument.
    assert "FIELDLOOP_DB" in one_line_error(fieldloop("device", "list", "--data", str(data), env=bad), 2)


def test_an_empty_data_folder_or_database_argument_is_a_bad_argument(tmp_path):
    # Each fell back to its default (./data, SQLite there) without a word: "--db $DB" with DB unset.
    for flag in ("--data", "--db"):
        for args in ([flag, "", "device", "list"], ["device", "list", flag, ""]):
            assert flag in one_line_error(fieldloop(*args, cwd=tmp_path), 2)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("args", [(), ("db",), ("device",), ("user",)])
def test_a_command_group_without_its_command_is_one_line(tmp_path, args):
    line = one_line_error(fieldloop("--data", str(tmp_path / "data"), *args), 2)
    assert "missing command" in line and "--help" in line and len(line) < 200


def test_a_missing_choice_is_one_line_without_tabs(tmp_path):
    line = one_line_error(fieldloop("--data", str(tmp_path / "data"), "user", "add", "bob"), 2)
    assert "\t" not in line and "grid_worker, red_steward, supervisor, admin" in line


def _read_only_folder(path: Path) -> None:
    """A folder this process cannot write into, as root too (immutable) when it runs as root."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], check=False).returncode != 0:
        pytest.skip("running as root without chattr: no folder is read-only")


def _writable_again(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=False)
    else:
        path.chmod(0o755)


def test_a_data_folder_that_cannot_be_written_is_one_line_and_exit_1(tmp_path):
    # "cannot reach the database: unable to open database file" did not say which folder, nor why.
    locked = tmp_path / "locked"
    _read_only_folder(locked)
    try:
        for data in (locked, locked / "sub"):
            for command in (("device", "list"), ("serve", "--port", str(free_port()))):
                line = one_line_error(fieldloop("--data", str(data), *command), 1)
                assert f"the data folder {data} cannot be written" in line, line
    finally:
        _writable_again(locked)


def test_a_sqlite_file_that_cannot_be_opened_is_named(tmp_path):
    # Once in a few runs aiosqlite's thread answered after the event loop had closed and printed
    # a traceback of its own under the line: each case runs three times.
    not_a_database = tmp_path / "notes.db"
    not_a_database.write_text("hello\n" * 1000)
    nowhere = tmp_path / "no-such-folder" / "x.db"
    for _ in range(3):
        line = one_line_error(fieldloop("--data", str(tmp_path / "data"), "--db", f"sqlite:///{not_a_database}",
                                        "device", "list"), 1)
        assert line == f"fieldloop: error: cannot open the SQLite database {not_a_database}: file is not a database"
        line = one_line_error(fieldloop("--data", str(tmp_path / "data"), "--db", f"sqlite:///{nowhere}",
                                        "device", "list"), 1)
        assert line == f"fieldloop: error: cannot open the SQLite database {nowhere}: unable to open database file"


def test_a_database_a_newer_fieldloop_migrated_is_one_line_and_exit_1(tmp_path, backend):
    data = tmp_path / "data"
    db = ["--db", backend] if backend else []
    assert fieldloop("--data", str(data), *db, "db", "upgrade").returncode == 0
    if backend:
        asyncio.run(_set_revision_on_postgres(backend, "0999"))
    else:
        with sqlite3.connect(data / "fieldloop.db") as connection:
            connection.execute("UPDATE alembic_version SET version_num = '0999'")
    for command in (("db", "upgrade"), ("device", "list"), ("serve", "--port", str(free_port()))):
        line = one_line_error(fieldloop("--data", str(data), *db, *command), 1)
        assert "revision 0999" in line and "newer" in line, line


async def _set_revision_on_postgres(url: str, revision: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute("UPDATE alembic_version SET version_num = $1", revision)
    finally:
        await connection.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_ends_with_status_0_and_a_checkpointed_wal_on_sigterm_and_sigint(tmp_path, sig):
    # SIGINT ended in 0, SIGTERM (systemd's, docker's stop) killed the process by the signal: -15.
    data, port = tmp_path / "data", free_port()
    server = subprocess.Popen([sys.executable, "-m", "server.cli", "--data", str(data), "serve", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert fieldloop("--data", str(data), "grid", "add", "g", "--community", "c").returncode == 0
        server.send_signal(sig)
        _, err = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 0, err
    assert "Traceback" not in err and "ERROR" not in err, err
    assert sorted(p.name for p in data.iterdir()) == ["blobs", "fieldloop.db"]  # no -wal, no -shm left


def test_demo_loads_only_into_an_empty_database_and_writes_nothing_when_it_refuses(tmp_path, backend):
    # A database with a user named like one of the demo's got the demo's twelve grids and its admin,
    # then "a user named 'supervisor' exists already"; every later run, "a grid named ... exists".
    data = tmp_path / "data"
    db = ["--db", backend] if backend else []
    assert fieldloop("--data", str(data), *db, "user", "add", "supervisor", "--role", "supervisor").returncode == 0
    line = one_line_error(fieldloop("--data", str(data), *db, "demo", "--households", "10"), 2)
    assert "empty database" in line and "1 user" in line, line
    users = fieldloop("--data", str(data), *db, "db", "check")
    assert users.stdout.strip() == "0 records read, 0 a phone could not hold"  # not a grid written


def test_two_serve_commands_started_at_once_on_a_new_postgresql_database_migrate_once(tmp_path, postgres_databases):
    name = f"fl_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    ports = [free_port(), free_port()]
    servers = [subprocess.Popen([sys.executable, "-m", "server.cli", "--data", str(tmp_path / f"data{p}"), "--db", url,
                                 "serve", "--port", str(p)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for p in ports]
    try:
        for port in ports:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and all(s.poll() is None for s in servers):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        for server in servers:
            server.send_signal(signal.SIGINT)
        errors = [server.communicate(timeout=30)[1] for server in servers]
        assert [s.returncode for s in servers] == [0, 0], errors
        assert not any("Traceback" in e or "ERROR" in e for e in errors), errors
        checked = fieldloop("--data", str(tmp_path / "data"), "--db", url, "db", "check")
        assert checked.returncode == 0, checked.stderr
    finally:
        for server in servers:
            server.kill()
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_a_database_holding_tables_of_another_application_is_one_line_and_exit_1(tmp_path, postgres_databases):
    # "(sqlalchemy.dialects.postgresql.asyncpg.ProgrammingError) relation "users" already exists".
    name = f"fl_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    sqlite_file = tmp_path / "other.db"
    with sqlite3.connect(sqlite_file) as connection:
        connection.execute("CREATE TABLE users (login TEXT)")
    try:
        asyncio.run(_execute_on_postgres(url, "CREATE TABLE users (login text)"))
        for db in (url, f"sqlite:///{sqlite_file}"):
            line = one_line_error(fieldloop("--data", str(tmp_path / "data"), "--db", db, "db", "upgrade"), 1)
            assert line == ("fieldloop: error: the database has tables FieldLoop would make (users) but was never "
                            "migrated by FieldLoop: give FieldLoop a database of its own"), line
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _execute_on_postgres(url: str, sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def test_the_help_names_the_environment_variables_and_that_workers_need_postgresql(tmp_path):
    top = fieldloop("--help", cwd=tmp_path)
    assert top.returncode == 0 and "FIELDLOOP_DATA" in top.stdout and "FIELDLOOP_DB" in top.stdout, top.stdout
    serve = fieldloop("serve", "--help", cwd=tmp_path)
    assert serve.returncode == 0 and "PostgreSQL" in serve.stdout and "SIGTERM" in serve.stdout, serve.stdout


def test_a_url_that_is_not_one_is_echoed_without_its_password(tmp_path):
    # The error went to the operator's terminal and logs with the password in it.
    line = one_line_error(fieldloop("--data", str(tmp_path / "data"), "--db", "postgresql://li:s3cret@db:5x32/fl",
                                    "device", "list"), 2)
    assert "s3cret" not in line and "postgresql://li:***@db:5x32/fl" in line, line


def test_a_postgresql_user_that_cannot_log_in_or_create_tables_is_told_so(tmp_path, postgres_databases):
    # A role without CREATE on the schema got "current transaction is aborted, commands ignored until
    # end of transaction block" (the advisory unlock, run in the failed transaction, hid the cause);
    # a role that does not exist, SQLAlchemy's "(sqlalchemy.dialects.postgresql.asyncpg.Error)" prefix.
    suffix = uuid.uuid4().hex[:12]
    name, role = f"fl_t_{suffix}", f"fl_role_{suffix}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    asyncio.run(_admin(f'CREATE ROLE "{role}" LOGIN'))
    admin_url = make_url(PG_ADMIN_URL).set(database=name)
    try:
        asyncio.run(_execute_on_postgres(admin_url.render_as_string(hide_password=False),
                                         f'REVOKE CREATE ON SCHEMA public FROM PUBLIC, "{role}"'))
        as_role = admin_url.set(username=role, password=None).render_as_string(hide_password=False)
        line = one_line_error(fieldloop("--data", str(tmp_path / "data"), "--db", as_role, "db", "upgrade"), 1)
        assert line == "fieldloop: error: the database refused: permission denied for schema public", line
        nobody = admin_url.set(username=f"fl_nobody_{suffix}", password=None).render_as_string(hide_password=False)
        line = one_line_error(fieldloop("--data", str(tmp_path / "data"), "--db", nobody, "db", "upgrade"), 1)
        assert line == f'fieldloop: error: cannot log in to the database: role "fl_nobody_{suffix}" does not exist'
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        asyncio.run(_admin(f'DROP ROLE IF EXISTS "{role}"'))


def test_serve_that_fails_to_start_ends_with_status_1_not_uvicorns_3(tmp_path):
    # Any failure in the app's start (here a file where the photo folder goes) was uvicorn's
    # "Application startup failed. Exiting." and status 3, which the README does not know.
    data = tmp_path / "data"
    data.mkdir()
    (data / "blobs").write_text("not a folder")
    result = fieldloop("--data", str(data), "serve", "--port", str(free_port()))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "fieldloop: error: the server did not start (the error is above)"
