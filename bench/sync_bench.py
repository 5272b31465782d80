"""Sync benchmark: a real server (one process on SQLite; two on PostgreSQL) and real sync
clients (sync.client.transport over HTTP, msgpack), printing the figures issue 2 asks for.

    .venv/bin/python bench/sync_bench.py [--backend sqlite|postgres|both] [--records 100000]

Floors on a 2-core machine: push >= 10,000 mutations/s; cold pull >= 30,000 records/s;
incremental pull <= 50 ms; 200 devices x 50 edits with zero errors and p99 <= 1 s; server
memory <= 300 MB during the cold pull.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.accounts import service as accounts  # noqa: E402
from server.db.engine import create_engine, session_factory  # noqa: E402
from server.db.migrate import upgrade  # noqa: E402
from server.devices import service as devices  # noqa: E402
from server.settings import Settings  # noqa: E402
from shared_schema.messages import Mutation, token_message  # noqa: E402
from sync.client.ids import new_id  # noqa: E402
from sync.client.transport import HttpTransport  # noqa: E402
from sync.hlc import HybridClock  # noqa: E402
from tests.support.databases import PostgresDatabases  # noqa: E402
from tests.support.servers import LiveServer  # noqa: E402


class BenchDevice:
    def __init__(self, url: str, code: str):
        self.transport = HttpTransport(url)
        self.key = Ed25519PrivateKey.generate()
        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        reply = self.transport.enroll(code, base64.b64encode(raw).decode(), "bench", "bench")
        self.device_id = reply.device_id
        self.grids = [g.id for g in reply.grids]
        self.clock = HybridClock(node=self.device_id)
        nonce = self.transport.challenge(self.device_id).nonce
        signature = base64.b64encode(self.key.sign(token_message(self.device_id, nonce))).decode()
        self.token = self.transport.token(self.device_id, nonce, signature).access_token
        self.cursor: str | None = None
        self.versions: dict[str, int] = {}

    def mutation(self, entity: str, fields: dict, record_id: str | None = None, base_version: int = 0) -> Mutation:
        # Ids as the app makes them: time-ordered UUIDv7 (sync.client.ids), which the protocol recommends.
        return Mutation(mid=new_id(), entity=entity, id=record_id or new_id(), op="upsert",
                        base_version=base_version, hlc=self.clock.now(), fields=fields)

    def push(self, mutations: list[Mutation]):  # noqa: ANN201
        reply = self.transport.push(self.token, mutations)
        for result in reply.results:
            self.versions[result.mid] = result.version
        return reply

    def pull_all(self, limit: int = 1000) -> int:
        count = 0
        while True:
            page = self.transport.pull(self.token, self.cursor, limit)
            count += len(page.changes)
            self.cursor = page.cursor
            if not page.more:
                return count


def visit(grid: str, n: int) -> dict:
    return {"grid_id": grid, "household_id": str(uuid.uuid4()), "method": "inquiry", "topics": ["停车", "噪音"],
            "notes": f"入户走访第{n}户, 居民反映楼道灯不亮", "visited_at": "2026-11-25T09:30:00+08:00"}


def household(grid: str, n: int) -> dict:
    return {"grid_id": grid, "address": f"雉城街道台苑新村{n % 30}幢{n % 4 + 1}单元{n % 600}室",
            "building": f"{n % 30}幢",
            "head_name": "顾建国", "phone": "13800000000", "members": n % 6 + 1, "tags": ["党员户"]}


async def provision(settings: Settings, grids: int, users_per_grid: int) -> dict:
    """Grids, users and enrollment codes, made directly in the database before the servers start."""
    engine = create_engine(settings.url)
    await upgrade(engine)
    sm = session_factory(engine)
    names = []
    for i in range(grids):
        grid = await accounts.add_grid(sm, f"网格{i:03d}", f"社区{i // 10}")
        names.append(grid.name)
    codes: dict[str, list[str]] = {"big": [], "field": [], "pushers": []}
    await accounts.create_user(sm, "bigwriter", "grid_worker", [names[0]])
    await accounts.create_user(sm, "bigreader", "red_steward", [names[0]])
    await accounts.create_user(sm, "rival", "grid_worker", [names[0]])
    for user in ("bigwriter", "bigreader", "rival"):
        codes["big"].append(await devices.create_enrollment_code(sm, user, 3600))
    for _ in range(PUSHERS):
        codes["pushers"].append(await devices.create_enrollment_code(sm, "bigwriter", 3600))
    for i in range(grids * users_per_grid):
        name = f"field{i:03d}"
        await accounts.create_user(sm, name, "grid_worker", [names[i % grids]])
        codes["field"].append(await devices.create_enrollment_code(sm, name, 3600))
    await engine.dispose()
    return codes


def seed_households(writer: BenchDevice, count: int) -> None:
    """Push ``count`` households into the writer's first grid, 500 a push."""
    for n in range(0, count, 500):
        writer.push([writer.mutation("household", household(writer.grids[0], n + j))
                     for j in range(min(500, count - n))])


def timed_push(writer: BenchDevice, batches: int = 20, size: int = 500) -> float:
    """Seconds the writer takes to push ``batches`` batches of ``size`` new visits, one after another."""
    grid = writer.grids[0]
    made = [[writer.mutation("visit", visit(grid, i * size + j)) for j in range(size)] for i in range(batches)]
    # The mutations, all made beforehand, are some 200,000 objects in this process: a full
    # collection of them (80 ms, seen once per run) is the client's time, not the server's.
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    for batch in made:
        writer.push(batch)
    elapsed = time.perf_counter() - started
    gc.unfreeze()
    return elapsed


PUSHERS = 4


def timed_push_at_once(pushers: list[BenchDevice], batches: int = 5, size: int = 500) -> float:
    """Seconds until every pusher has pushed ``batches`` batches of ``size`` new visits, all
    pushing at once (one thread each), each its batches one after another."""
    grid = pushers[0].grids[0]
    made = {device: [[device.mutation("visit", visit(grid, i * size + j)) for j in range(size)]
                     for i in range(batches)] for device in pushers}
    gc.collect()
    gc.freeze()
    barrier = threading.Barrier(len(pushers) + 1)

    def push_all(device: BenchDevice) -> None:
        barrier.wait()
        for batch in made[device]:
            device.push(batch)

    threads = [threading.Thread(target=push_all, args=(device,)) for device in pushers]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    gc.unfreeze()
    return elapsed


def caught_up_field(codes: dict[str, list[str]], urls: list[str]) -> list[BenchDevice]:
    """The field devices of the 200-phone burst, spread over the servers, each with all its grid holds."""
    field = [BenchDevice(urls[i % len(urls)], code) for i, code in enumerate(codes["field"])]
    for device in field:
        device.pull_all()
    return field


class MemoryWatch:
    """Peak resident memory of the server processes (and their children), sampled every 20 ms."""

    def __init__(self, pids: list[int]):
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = 0
        for proc in self.procs:
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    if "python" in p.name() or "fieldloop" in " ".join(p.cmdline()):
                        total = max(total, p.memory_info().rss)
                except psutil.Error:
                    pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.02)

    def __enter__(self) -> "MemoryWatch":
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop.clear()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def server_cpu(server: LiveServer) -> float:
    """CPU seconds used so far by a server and its worker processes."""
    total = 0.0
    process = psutil.Process(server.process.pid)
    for p in [process, *process.children(recursive=True)]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def database_cpu() -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL server process on this machine, by pid."""
    used = {}
    for process in psutil.process_iter(["name", "cpu_times"]):
        if process.info["name"] == "postgres" and process.info["cpu_times"] is not None:
            used[process.pid] = process.info["cpu_times"].user + process.info["cpu_times"].system
    return used


def database_cpu_since(before: dict[int, float]) -> float:
    # A backend that exited in between is not counted; the servers' pooled connections persist.
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in database_cpu().items())


def reference_loop_s() -> float:
    """Seconds a fixed pure-Python loop takes right now. This machine's speed drifts by a factor
    of two or more over a day (blob upload alone: 33 to 114 MB/s on 2026-12-02, the code unchanged),
    which moves every figure here with it; printed beside them, it tells a slow run from a slow
    server."""
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@dataclass
class Burst:
    """What one burst of phones syncing at once measured."""

    latencies: list[float]
    errors: list[str]
    wall: float
    server_cpu: float
    database_cpu: float | None
    client_cpu: float

    def latency_line(self) -> str:
        return (f"p50 {percentile(self.latencies, .5) * 1000:.0f} ms, "
                f"p95 {percentile(self.latencies, .95) * 1000:.0f} ms, "
                f"p99 {percentile(self.latencies, .99) * 1000:.0f} ms, errors {len(self.errors)}, wall {self.wall:.2f} s")

    def cpu_line(self) -> str:
        database = f", PostgreSQL {self.database_cpu:.2f} s" if self.database_cpu is not None else ""
        return (f"server {self.server_cpu:.2f} s{database}, the {len(self.latencies) + len(self.errors)} simulated "
                f"phones {self.client_cpu:.2f} s, on 2 cores")


def run_burst(field: list[BenchDevice], servers: list[LiveServer], with_database: bool, edits: int = 50) -> Burst:
    """Every device makes ``edits`` new visits, then all push and pull at once (one thread each)."""
    # CPU is counted from the moment all are released, when the edits are made.
    at_release: dict[str, object] = {}

    def released() -> None:
        at_release.update(server=sum(server_cpu(s) for s in servers),
                          database=database_cpu() if with_database else None,
                          client=time.process_time(), wall=time.perf_counter())

    barrier = threading.Barrier(len(field), action=released)
    latencies: list[float] = []
    errors: list[str] = []

    def sync_once(device: BenchDevice) -> None:
        made = [device.mutation("visit", visit(device.grids[0], j)) for j in range(edits)]
        barrier.wait()
        started = time.perf_counter()
        try:
            device.push(made)
            device.pull_all()
            latencies.append(time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=sync_once, args=(d,)) for d in field]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Burst(
        latencies=latencies,
        errors=errors,
        wall=time.perf_counter() - at_release["wall"],
        server_cpu=sum(server_cpu(s) for s in servers) - at_release["server"],
        database_cpu=database_cpu_since(at_release["database"]) if with_database else None,
        client_cpu=time.process_time() - at_release["client"],
    )


@contextlib.contextmanager
def bench_servers(backend: str) -> Iterator[tuple[dict[str, list[str]], list[LiveServer], str | None]]:
    """Servers running on a fresh database with the bench's grids, users and enrollment codes: one
    process on SQLite, two on PostgreSQL. Yields (the codes, the servers, the PostgreSQL URL or None)."""
    databases = url = None
    if backend == "postgres":
        databases = PostgresDatabases()
        databases.start()
        url = databases.new()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(data_dir=Path(tmp) / "data", db=url)
            settings.data_dir.mkdir(parents=True)
            codes = asyncio.run(provision(settings, grids=100, users_per_grid=2))
            if url:
                servers = [LiveServer(Path(tmp) / f"server{i}", url) for i in range(2)]
            else:
                servers = [LiveServer(settings.data_dir, None)]
            for server in servers:
                server.start()
            try:
                yield codes, servers, url
            finally:
                for server in servers:
                    server.kill()
    finally:
        if databases:
            databases.close()


def run_backend(backend: str, records: int) -> dict[str, str]:
    figures: dict[str, str] = {}
    loop_before = reference_loop_s()
    with bench_servers(backend) as (codes, servers, db):
        urls = [s.url for s in servers]
        writer = BenchDevice(urls[0], codes["big"][0])
        reader = BenchDevice(urls[-1], codes["big"][1])
        rival = BenchDevice(urls[0], codes["big"][2])
        grid = writer.grids[0]

        # 1. push throughput: 10,000 visit mutations in batches of 500
        elapsed = timed_push(writer)
        figures["push 10,000 visits (batches of 500)"] = f"{10_000 / elapsed:,.0f} mutations/s ({elapsed:.2f} s)"
        # The same 10,000 from 4 devices at once, spread over the server processes: what the
        # server takes in when more than one phone pushes (the line above waits on each reply).
        pushers = [BenchDevice(urls[i % len(urls)], code) for i, code in enumerate(codes["pushers"])]
        elapsed = timed_push_at_once(pushers)
        figures[f"  the same from {PUSHERS} devices at once"] = f"{10_000 / elapsed:,.0f} mutations/s ({elapsed:.2f} s)"

        # seed up to `records` records in the grid (20,000 visits are there), then a cold pull of all of them
        seed_households(writer, records - 20_000)
        with MemoryWatch([s.process.pid for s in servers]) as memory:
            started = time.perf_counter()
            pulled = reader.pull_all(limit=1000)
            elapsed = time.perf_counter() - started
        figures[f"cold pull of {pulled:,} records (pages of 1000)"] = (
            f"{pulled / elapsed:,.0f} records/s ({elapsed:.2f} s)")
        figures["server peak RSS during the cold pull"] = f"{memory.peak / 2**20:.0f} MB (largest process)"

        # 3. incremental pull: 100 changes among `records`
        timings = []
        for round_ in range(5):
            writer.push([writer.mutation("visit", visit(grid, 10**6 + round_ * 100 + j)) for j in range(100)])
            started = time.perf_counter()
            got = reader.pull_all(limit=1000)
            timings.append(time.perf_counter() - started)
            assert got == 100, got
        figures[f"incremental pull of 100 changes among {pulled:,}"] = (
            f"median {statistics.median(timings) * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms")

        # 4. 1,000 conflicting mutations: the rival edits the same 1,000 fields from the same base
        targets = [writer.mutation("household", household(grid, 900_000 + j)) for j in range(1000)]
        writer.push(targets[:500])
        writer.push(targets[500:])
        writer.push([writer.mutation("household", {"notes": "writer"}, t.id, 1) for t in targets[:500]])
        writer.push([writer.mutation("household", {"notes": "writer"}, t.id, 1) for t in targets[500:]])
        conflicting = [rival.mutation("household", {"notes": "rival"}, t.id, 1) for t in targets]
        started = time.perf_counter()
        merged = 0
        for i in range(0, 1000, 500):
            merged += sum(r.status.value == "merged" for r in rival.push(conflicting[i:i + 500]).results)
        elapsed = time.perf_counter() - started
        figures["1,000 conflicting mutations"] = (
            f"{1000 / elapsed:,.0f} mutations/s ({elapsed * 1000:.0f} ms), {merged} merged")

        # 5. 200 devices, each syncing 50 edits at once
        field = caught_up_field(codes, urls)
        # This process still holds what the reader pulled (100,000 records' versions): the
        # simulated phones, which share the server's two cores, should not pay for the
        # collector rescanning it in the middle of the burst (real phones have their own CPU).
        gc.collect()
        gc.freeze()
        burst = run_burst(field, servers, with_database=db is not None)
        figures["200 devices x 50 edits at once (push + pull)"] = burst.latency_line()
        figures["  where the time went (CPU seconds)"] = burst.cpu_line()
        if burst.errors:
            figures["first error"] = burst.errors[0]

        # 6. blob upload: 20 photos of 2 MB in chunks of 256 KiB
        photos = [os.urandom(2 * 2**20) for _ in range(20)]
        started = time.perf_counter()
        for photo in photos:
            digest = hashlib.sha256(photo).hexdigest()
            for offset in range(0, len(photo), 256 * 1024):
                writer.transport.blob_patch(writer.token, digest, offset, len(photo),
                                            photo[offset:offset + 256 * 1024])
        elapsed = time.perf_counter() - started
        figures["blob upload (20 x 2 MB, 256 KiB chunks)"] = f"{40 / elapsed:.1f} MB/s"
    figures["machine speed: a fixed 10M-step Python loop"] = (
        f"{loop_before:.2f} s before the run, {reference_loop_s():.2f} s after")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    titles = {"sqlite": "SQLite (WAL), one server process", "postgres": "PostgreSQL, two server processes"}
    for backend in backends:
        figures = run_backend(backend, args.records)
        print(f"\n== {titles[backend]} ==")
        for key, value in figures.items():
            print(f"  {key:<48} {value}")


if __name__ == "__main__":
    main()
