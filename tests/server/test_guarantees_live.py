"""G2 and G4 against real server processes over TCP: a push cut by SIGKILL is applied exactly
once when retried; with several processes on one PostgreSQL, pulls that run while writers
commit never skip a change."""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from server.db.models import ChangeLogEntry
from tests.support.device import WireDevice
from tests.support.servers import LiveServer


def enroll(server: LiveServer, user: str, grid: str, *, role: str = "grid_worker", client: httpx.Client | None = None
           ) -> WireDevice:
    server.cli("user", "add", user, "--role", role, "--grid", grid)
    code = server.cli("enrollment", "create", "--user", user).stdout.strip().splitlines()[-1]
    device = WireDevice(client or httpx.Client(base_url=server.url, timeout=30), msgpack=True)
    device.enroll(code)
    device.sign_in()
    return device


def households(device: WireDevice, grid: str, n: int) -> list[dict]:
    return [device.mutation("household", fields={"grid_id": grid, "address": f"台苑新村{i}幢", "head_name": "顾"})
            for i in range(n)]


def change_log_count(server: LiveServer, mids: list[str]) -> int:
    if server.db:
        import asyncio

        import asyncpg

        async def count() -> int:
            connection = await asyncpg.connect(server.db)
            try:
                return await connection.fetchval("SELECT count(*) FROM change_log WHERE mid = ANY($1::text[])", mids)
            finally:
                await connection.close()

        return asyncio.run(count())
    engine = create_engine(f"sqlite:///{server.data_dir / 'fieldloop.db'}")
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(ChangeLogEntry).where(ChangeLogEntry.mid.in_(mids)))


@pytest.mark.slow
def test_retried_push_after_sigkill_applies_once(live_server: LiveServer):
    grid = live_server.cli("grid", "add", "所前社区第1网格", "--community", "所前社区").stdout.strip()
    phone = enroll(live_server, "wang", "所前社区第1网格")
    rng = random.Random(7)
    for attempt in range(4):
        batch = households(phone, grid, 500)
        mids = [m["mid"] for m in batch]
        cut = threading.Thread(target=lambda: (time.sleep(rng.uniform(0.0, 0.15)), live_server.kill()))
        cut.start()
        try:
            phone.push(batch)
        except (httpx.HTTPError, AssertionError):
            pass  # the reply was lost with the server
        cut.join()
        live_server.start()
        phone.client = httpx.Client(base_url=live_server.url, timeout=30)
        reply = phone.push(batch)
        assert [r["status"] for r in reply["results"]] == ["applied"] * 500, f"attempt {attempt}"
        again = phone.push(batch)
        assert again["results"] == reply["results"]
        assert change_log_count(live_server, mids) == 500


@pytest.mark.slow
@pytest.mark.postgres
def test_pulls_never_skip_a_change_with_two_server_processes_on_postgres(tmp_path, postgres_url):
    first = LiveServer(tmp_path / "a", postgres_url).start()
    second = LiveServer(tmp_path / "b", postgres_url).start()
    try:
        grid = first.cli("grid", "add", "g1", "--community", "c").stdout.strip()
        servers = [first, second]
        writers = [enroll(servers[i % 2], f"writer{i}", "g1") for i in range(4)]
        readers = [enroll(servers[i % 2], f"reader{i}", "g1", role="red_steward") for i in range(3)]
        written: dict[str, int] = {}
        lock = threading.Lock()
        stop = threading.Event()
        failures: list[BaseException] = []

        def write(device: WireDevice) -> None:
            try:
                for _ in range(15):
                    batch = households(device, grid, 40)
                    # Edits of records written before: the same record moves to a new seq.
                    with lock:
                        known = random.sample(sorted(written), min(10, len(written)))
                    batch += [device.mutation("household", rid, {"members": random.randint(1, 9)}, base_version=1)
                              for rid in known]
                    for result in device.push(batch)["results"]:
                        with lock:
                            written[result["record"]["id"]] = max(written.get(result["record"]["id"], 0),
                                                                  result["version"])
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)

        def read(device: WireDevice) -> None:
            try:
                while not stop.is_set():
                    device.pull_all(limit=50)
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)

        threads = [threading.Thread(target=read, args=(r,)) for r in readers]
        threads += [threading.Thread(target=write, args=(w,)) for w in writers]
        for t in threads:
            t.start()
        for t in threads[len(readers):]:
            t.join()
        stop.set()
        for t in threads[: len(readers)]:
            t.join()
        assert not failures, failures
        for reader in readers:
            reader.pull_all()  # one more pass after the writers stopped: it must bring nothing lost
            seen = {rid: r["version"] for rid, r in reader.records.items() if r["entity"] == "household"}
            assert seen == written
    finally:
        first.kill()
        second.kill()
