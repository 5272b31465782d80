"""A real FieldLoop server in a subprocess (uvicorn over TCP), to stop, kill and restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``fieldloop serve`` on a free port of 127.0.0.1.

    Args:
        data_dir: the server's data folder.
        db: a database URL, or None for SQLite in ``data_dir``.
        workers: uvicorn worker processes (PostgreSQL only when > 1).
    """

    def __init__(self, data_dir: Path, db: str | None = None, *, workers: int = 1, port: int | None = None):
        self.data_dir = data_dir
        self.db = db
        self.workers = workers
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, *args: str) -> list[str]:
        base = [sys.executable, "-m", "server.cli", "--data", str(self.data_dir)]
        if self.db:
            base += ["--db", self.db]
        return base + list(args)

    def cli(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run a ``fieldloop`` command against this server's data."""
        result = subprocess.run(self.command(*args), input=stdin, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"fieldloop {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def start(self, timeout: float = 30.0) -> "LiveServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            self.command("serve", "--port", str(self.port), "--workers", str(self.workers)),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop gracefully (SIGTERM to the whole process group)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill at once (SIGKILL): no cleanup, like a power cut."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
