"""The `fieldloop` command probed as an outside operator and test harness call it (sixth session).

What these hold, each found broken by the probe:
- a database URL the driver cannot take (a port past 65535, a query parameter asyncpg does not
  know, an in-memory SQLite database) is a bad argument: one line, exit 2, never a traceback;
  libpq's ``sslmode`` and ``connect_timeout`` in a PostgreSQL URL work as written;
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

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