"""A chaos probe of the guarantees (protocol section 1) with the real device engine against real
servers over TCP.

Three to six devices (``SyncEngine`` on encrypted ``LocalStore``s, ``HttpTransport`` over
urllib3) make random offline edits (the same fields, other fields, deletes, edits after deletes,
cases along the workflow, photos as real blobs), and sync in random order through a TCP proxy
(``FaultProxy``) that, request by request, passes, delays, cuts the request, cuts the reply,
drops the reply after the server answered, SIGKILLs the server while it holds the request,
terminates the PostgreSQL backends mid-request (PostgreSQL), sends it to the other server
process (PostgreSQL: two ``fieldloop serve`` on one database), or kills the device's own
process after the server answered (a device sync run in a subprocess, its store reopened
afterwards). A console moves cases along the workflow between syncs, and device clocks jump.

At the end every device syncs, with the world behaving, until nothing moves, and ``check``
holds the guarantees:

- G1: every mutation a device made has a result it kept, the same as the server's; every
  ``lww`` value a device sent that is not the final value was overwritten by a change that had
  seen it (or by its own device), or is ``lost`` in the server's conflict log; no photo added
  is missing from a live record.
- G2: every mutation id is in the change log at most once, and exactly once when applied or
  merged.
- G3: every device holds exactly the server's records of its scope (version, hlc, deleted,
  fields).
- G4: each pulled page, from cursor seq a to b, holds every change the change log has in
  (a, b] at that version or later, unless the record changed again after b.
- G5: no device holds, and no page brought, a record outside its user's grids.

The schedule of a round is a function of its seed (requests are made one at a time, so the
proxy's choices come in order); what a SIGKILL catches mid-commit depends on timing.

Run: ``python -m tests.support.chaos --backend sqlite --seeds 1-20`` (``--backend postgres``
makes its own database on the test server and drops it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import msgspec

from shared_schema.messages import Record
from sync.client import AesGcmCipher, DeviceIdentity, HttpTransport, LocalStore, SyncEngine
from sync.errors import InvalidEdit, SyncError
from sync.hlc import wall_now_ms

ENTITIES = ("household", "visit", "case")
LWW_SKIP = {"status"}  # transition: a concurrent move is rejected, not logged
UNION = {"tags", "photos", "topics", "hazards"}
DAY_MS = 86_400_000


# ---- the proxy -----------------------------------------------------------------------------


@dataclass
class Fault:
    # pass delay cut_request cut_reply cut_headers drop_reply kill_server terminate_backends kill_device
    kind: str
    upstream: int = 0
    amount: float = 0.0


def _recv_request(sock: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body


def _recv_all(sock: socket.socket) -> bytes:
    parts = []
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        parts.append(chunk)
    return b"".join(parts)


class FaultProxy:
    """A TCP proxy in front of one or more servers; ``choose(method, path)`` picks each
    request's fault. Devices send ``Connection: close``, so one connection is one request."""

    def __init__(self, ports: list[int], choose: Callable[[str, str], Fault],
                 on_kill_server: Callable[[int], None], on_terminate: Callable[[], None],
                 on_kill_device: Callable[[], None]):
        self.ports = ports
        self.choose = choose
        self.on_kill_server = on_kill_server
        self.on_terminate = on_terminate
        self.on_kill_device = on_kill_device
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, str]] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(60)
        upstream = None
        try:
            request = _recv_request(client)
            if request is None:
                return
            method, path = request.split(b" ", 2)[:2]
            with self.lock:
                fault = self.choose(method.decode(), path.decode().split("?")[0])
                self.log.append((method.decode(), path.decode().split("?")[0], fault.kind))
            if fault.kind == "delay":
                time.sleep(fault.amount)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.ports[fault.upstream]), timeout=60)
            except OSError:
                return  # the device sees its connection closed
            if fault.kind == "cut_request":
                upstream.sendall(request[: int(len(request) * fault.amount)])
                return
            upstream.sendall(request)
            if fault.kind == "kill_server":
                time.sleep(fault.amount)
                self.on_kill_server(fault.upstream)
                return
            if fault.kind == "terminate_backends":
                timer = threading.Timer(fault.amount, self.on_terminate)
                timer.start()
                reply = _recv_all(upstream)
                timer.join()
            else:
                reply = _recv_all(upstream)
            if fault.kind == "cut_reply":
                client.sendall(reply[: int(len(reply) * fault.amount)])
                return
            if fault.kind == "cut_headers":
                client.sendall(reply[: reply.find(b"\r\n") + 2])  # the status line alone
                return
            if fault.kind == "drop_reply":
                return
            if fault.kind == "kill_device":
                self.on_kill_device()
                return
            client.sendall(reply)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.close()


# ---- devices ---------------------------------------------------------------------------------


def cursor_seq(cursor: str | None) -> int:
    """The seq a cursor stands at (its MAC not checked: the probe reads, the server judges)."""
    if not cursor:
        return 0
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    body = msgspec.msgpack.decode(raw[:-16])
    if body.get("c"):
        return -1  # a catch-up: not a plain feed page
    return int(body.get("s", 0))


class RecordingTransport(HttpTransport):
    """The device's transport, noting every pull page it receives (for the G4 check)."""

    def __init__(self, base_url: str, log_path: Path):
        super().__init__(base_url, timeout=20.0)
        self._headers["Connection"] = "close"
        self.log_path = log_path

    def pull(self, token, cursor, limit):  # noqa: ANN001, ANN201
        reply = super().pull(token, cursor, limit)
        line = {"a": cursor_seq(cursor), "b": cursor_seq(reply.cursor), "more": reply.more,
                "changes": [[r.id, r.version, r.fields.get("grid_id")] for r in reply.changes]}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(line) + "\n")
        return reply


def make_engine(path: Path, key: bytes, url: str, offset: list[int]) -> SyncEngine:
    store = LocalStore(path, AesGcmCipher(key))
    transport = RecordingTransport(url, path.with_name("pulls.jsonl"))
    return SyncEngine(store, transport, DeviceIdentity(store), sleep=lambda _s: None,
                      wall=lambda: wall_now_ms() + offset[0], pull_limit=7)


def _device_main(argv: list[str]) -> None:
    """A device's sync round in a process of its own (killed at will by the probe)."""
    path, key, url, offset = Path(argv[0]), bytes.fromhex(argv[1]), argv[2], int(argv[3])
    engine = make_engine(path, key, url, [offset])
    print("ready", flush=True)
    with contextlib.suppress(SyncError):
        engine.sync()
    engine.store.close()


@dataclass
class Phone:
    name: str
    user: str
    grids: list[str]
    path: Path
    key: bytes
    url: str
    offset: list[int] = field(default_factory=lambda: [0])
    engine: SyncEngine | None = None
    mids: dict[str, dict] = field(default_factory=dict)  # every mutation made here

    def open(self) -> SyncEngine:
        self.engine = make_engine(self.path, self.key, self.url, self.offset)
        return self.engine

    def note_outbox(self) -> None:
        for e in self.engine.store.pending_mutations(100_000):
            self.mids.setdefault(e.mid, {"entity": e.entity, "id": e.id, "op": e.op, "base": e.base_version,
                                         "fields": e.fields, "hlc": e.hlc})


# ---- the servers' side -----------------------------------------------------------------------


class Backend:
    """The servers of a round and direct reads of their database."""

    def __init__(self, folder: Path, db: str | None, processes: int):
        from tests.support.servers import LiveServer

        self.db = db
        self.folder = folder
        # Several processes share one data folder, as they would share the photos' storage.
        self.servers = [LiveServer(folder / "srv", db if db else None) for _ in range(processes)]

    def start(self) -> None:
        for s in self.servers:
            s.start(timeout=60)

    def ensure_up(self) -> None:
        for s in self.servers:
            if s.process is None or s.process.poll() is not None:
                s.start(timeout=60)

    def stop(self) -> None:
        for s in self.servers:
            s.kill()

    def query(self, sql: str, *args: Any) -> list[tuple]:
        if self.db:
            import asyncpg

            async def go() -> list[tuple]:
                conn = await asyncpg.connect(self.db)
                try:
                    return [tuple(r) for r in await conn.fetch(sql.replace("?", "$1") if args else sql, *args)]
                finally:
                    await conn.close()

            return asyncio.run(go())
        conn = sqlite3.connect(self.servers[0].data_dir / "fieldloop.db", timeout=30)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def terminate_backends(self) -> None:
        if not self.db:
            return
        with contextlib.suppress(Exception):  # two at once may end each other's connection
            self.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                       " WHERE datname = current_database() AND pid <> pg_backend_pid()")

    def accounts(self, scopes: list[list[str]]) -> tuple[dict[str, str], list[str]]:
        """Grids 甲 and 乙, a grid worker ``u<i>`` on each scope, and an enrollment code for each
        (through the services, as ``fieldloop`` would, without a process per command)."""
        from server.accounts import service as accounts
        from server.db.engine import create_engine, database_url, session_factory
        from server.devices import service as devices

        async def go() -> tuple[dict[str, str], list[str]]:
            engine = create_engine(database_url(self.db, self.servers[0].data_dir))
            try:
                sessions = session_factory(engine)
                grids = {name: (await accounts.add_grid(sessions, name, "所前社区")).id for name in ("甲网格", "乙网格")}
                codes = []
                for i, names in enumerate(scopes):
                    await accounts.create_user(sessions, f"u{i}", "grid_worker", names)
                    codes.append(await devices.create_enrollment_code(sessions, f"u{i}", 3600))
                return grids, codes
            finally:
                await engine.dispose()

        return asyncio.run(go())

    def console_move(self, rng: random.Random) -> str | None:
        """A supervisor moves one case along the workflow (as the console does)."""
        from server.db.engine import create_engine, database_url, session_factory
        from server.records.writes import Sender, apply_in_transaction, write_transaction
        from shared_schema.messages import Mutation
        from shared_schema.workflow import Actor, CaseStatus, next_states
        from sync.hlc import HybridClock

        rows = self.query("SELECT id, version, wire FROM records WHERE entity = 'case' AND deleted = ? ORDER BY id",
                          False)
        movable = []
        for rid, version, wire in rows:
            status = msgspec.msgpack.decode(bytes(wire), type=Record).fields.get("status")
            moves = [s for s in next_states("case", "status", status, Actor.CONSOLE)
                     if s != CaseStatus.OVERDUE.value]
            if moves:
                movable.append((rid, version, moves))
        if not movable:
            return None
        rid, version, moves = rng.choice(movable)
        mutation = Mutation(mid=str(uuid.uuid4()), entity="case", id=rid, op="upsert", base_version=version,
                            hlc=HybridClock(node="console.probe").now(), fields={"status": rng.choice(moves)})
        sender = Sender(origin="console:probe", actor=Actor.CONSOLE, scope=None)

        async def go() -> None:
            engine = create_engine(database_url(self.db, self.servers[0].data_dir))
            try:
                async with write_transaction(session_factory(engine)) as session:
                    await apply_in_transaction(session, [mutation], sender)
            finally:
                await engine.dispose()

        asyncio.run(go())
        return mutation.mid


# ---- a round ---------------------------------------------------------------------------------


VISITED = "2026-11-25T08:00:00+08:00"
POOL = {
    "address": ["3幢2单元401", "5幢101", "7幢302"],
    "head_name": ["李秀英", "王建国", "张伟"],
    "phone": ["110", "13800000000", ""],
    "members": [1, 2, 3, 4],
    "notes": ["独居", "需回访", "已上报", "孙子在外地"],
    "title": ["下水道堵塞", "楼道堆物", "噪音扰民"],
    "description": ["三楼", "一楼", "地下室"],
    "feedback": ["已疏通", "已清理"],
}


@dataclass
class Round:
    seed: int
    backend: Backend
    phones: list[Phone]
    grids: dict[str, str]
    log: list[str] = field(default_factory=list)
    console_mids: list[str] = field(default_factory=list)
    device_kills: int = 0


class Chaos:
    """The proxy's choices, from a seeded generator; off while the world behaves."""

    def __init__(self, seed: int, processes: int, postgres: bool):
        self.rng = random.Random(seed * 7919 + 1)
        self.on = False
        self.device_process = False
        self.processes = processes
        self.postgres = postgres
        self.rate = 0.35

    def __call__(self, method: str, path: str) -> Fault:
        upstream = self.rng.randrange(self.processes)
        if not self.on or self.rng.random() > self.rate:
            return Fault("pass", upstream)
        kinds = ["delay", "cut_request", "cut_reply", "cut_headers", "drop_reply", "kill_server"]
        if self.postgres:
            kinds.append("terminate_backends")
        if self.device_process:
            kinds += ["kill_device", "kill_device"]
        kind = self.rng.choice(kinds)
        amount = {"delay": self.rng.uniform(0.05, 0.4), "cut_request": self.rng.random(),
                  "cut_reply": self.rng.random(), "kill_server": self.rng.uniform(0.0, 0.08),
                  "terminate_backends": self.rng.uniform(0.0, 0.05)}.get(kind, 0.0)
        return Fault(kind, upstream, amount)


def _setup(folder: Path, db: str | None, seed: int, n_phones: int, processes: int) -> tuple[Round, Chaos, FaultProxy]:
    backend = Backend(folder, db, processes)
    backend.start()
    scopes = [["甲网格"] if i < n_phones - 2 else (["甲网格", "乙网格"] if i == n_phones - 2 else ["乙网格"])
              for i in range(n_phones)]
    grids, codes = backend.accounts(scopes)
    chaos = Chaos(seed, processes, bool(db))
    round_: Round | None = None

    def kill_server(i: int) -> None:
        backend.servers[i].kill()

    def kill_device() -> None:
        proc = current_device.get("proc")
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            round_.device_kills += 1

    current_device: dict[str, subprocess.Popen | None] = {"proc": None}
    proxy = FaultProxy([s.port for s in backend.servers], chaos, kill_server, backend.terminate_backends,
                       kill_device)
    phones = []
    for i, (names, code) in enumerate(zip(scopes, codes)):
        phone = Phone(f"p{i}", f"u{i}", [grids[g] for g in names], folder / f"p{i}" / "store.db",
                      AesGcmCipher.generate_key(), proxy.url)
        phone.open().enroll(code, label=phone.name, app_version="chaos")
        phones.append(phone)
    round_ = Round(seed, backend, phones, grids)
    round_.current_device = current_device  # type: ignore[attr-defined]
    return round_, chaos, proxy


def _photo(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([3_000, 90_000, 300_000, 600_000]))


def _offline_edit(r: Round, phone: Phone, rng: random.Random) -> None:
    engine = phone.engine
    store = engine.store
    grid = rng.choice(phone.grids)
    if rng.random() < 0.03:
        grid = rng.choice(list(r.grids.values()))  # perhaps outside the scope: G5 rejects it
    households = [h for g in phone.grids for h in store.records("household", grid_id=g)]
    cases = [c for g in phone.grids for c in store.records("case", grid_id=g)]
    visits = [v for g in phone.grids for v in store.records("visit", grid_id=g)]
    dead = [x for e in ENTITIES for g in phone.grids for x in store.records(e, grid_id=g, include_deleted=True)
            if x.deleted]
    choice = rng.random()
    try:
        if choice < 0.15 or not households:
            engine.create("household", {"grid_id": grid, "address": rng.choice(POOL["address"]),
                                        "head_name": rng.choice(POOL["head_name"])})
        elif choice < 0.40:
            h = rng.choice(households[:3] if rng.random() < 0.7 else households)  # a few hot records
            names = rng.sample(["address", "head_name", "phone", "members", "notes", "tags"], rng.randint(1, 3))
            fields = {n: rng.choice(POOL[n]) for n in names if n != "tags"}
            if "tags" in names:
                fields["tags"] = sorted(set(h.fields.get("tags") or []) | {rng.choice(["elderly", "veteran"])})
            engine.edit("household", h.id, fields)
        elif choice < 0.55:
            h = rng.choice(households)
            photos = []
            if rng.random() < 0.6:
                photos = [engine.add_photo(_photo(rng))]
            engine.create("visit", {"grid_id": h.grid_id, "household_id": h.id, "method": "inquiry",
                                    "visited_at": VISITED, "notes": rng.choice(POOL["notes"]), "photos": photos})
        elif choice < 0.62 and visits:
            v = rng.choice(visits)
            fields = {"notes": rng.choice(POOL["notes"])}
            if rng.random() < 0.5:
                fields["photos"] = sorted(set(v.fields.get("photos") or []) | {engine.add_photo(_photo(rng))})
            engine.edit("visit", v.id, fields)
        elif choice < 0.72:
            engine.create("case", {"grid_id": grid, "category": "drainage", "title": rng.choice(POOL["title"]),
                                   "status": "reported"})
        elif choice < 0.84 and cases:
            c = rng.choice(cases[:3] if rng.random() < 0.7 else cases)
            if c.fields.get("status") in ("dispatched", "overdue") and rng.random() < 0.7:
                engine.edit("case", c.id, {"status": "resolved", "feedback": rng.choice(POOL["feedback"])})
            else:
                n = rng.choice(["title", "description", "feedback"])
                engine.edit("case", c.id, {n: rng.choice(POOL[n])})
        elif choice < 0.92:
            pool = [x for x in households + cases + visits]
            if pool:
                x = rng.choice(pool)
                engine.delete(x.entity, x.id)
        elif dead:
            x = rng.choice(dead)  # an edit after a delete
            field_name = {"household": "notes", "visit": "notes", "case": "description"}[x.entity]
            engine.edit(x.entity, x.id, {field_name: rng.choice(POOL[field_name if field_name != "description"
                                                                        else "description"])})
    except InvalidEdit as exc:
        r.log.append(f"{phone.name} local edit refused: {exc}")
    phone.note_outbox()


def _sync_in_process(phone: Phone) -> str:
    try:
        phone.engine.sync()
        return "ok"
    except SyncError as exc:
        return type(exc).__name__


def _sync_in_subprocess(r: Round, chaos: Chaos, phone: Phone, rng: random.Random) -> str:
    phone.engine.store.close()
    phone.engine.close()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.chaos", "--device", str(phone.path),
                             phone.key.hex(), phone.url, str(phone.offset[0])],
                            stdout=subprocess.PIPE, stderr=open(phone.path.with_name("device.err"), "ab"), env=env,
                            cwd=Path(__file__).resolve().parents[2])
    proc.stdout.readline()  # "ready": imports done, store open
    r.current_device["proc"] = proc  # type: ignore[attr-defined]
    chaos.device_process = True
    timer = None
    if rng.random() < 0.3:
        timer = threading.Timer(rng.uniform(0.0, 0.6), lambda: proc.poll() is None and proc.send_signal(signal.SIGKILL))
        timer.start()
    try:
        code = proc.wait(timeout=180)
    finally:
        if timer is not None:
            timer.cancel()
        chaos.device_process = False
        r.current_device["proc"] = None  # type: ignore[attr-defined]
    phone.open()
    return f"subprocess rc={code}"


def run_round(seed: int, db: str | None, *, steps: int = 60, phones: int | None = None,
              processes: int | None = None, folder: Path | None = None, stats: dict | None = None,
              concurrent: bool = False, fault_rate: float = 0.35) -> list[str]:
    """One round of the probe; returns the violations found (empty: the guarantees held).

    ``concurrent`` lets several phones sync at once (their order, and so the proxy's choices,
    then depends on timing: the script's rounds, not the suite's).
    """
    rng = random.Random(seed)
    n_phones = phones or rng.randint(3, 6)
    processes = processes or (2 if db else 1)
    own_folder = folder is None
    folder = folder or Path(tempfile.mkdtemp(prefix=f"chaos-{seed}-"))
    r, chaos, proxy = _setup(folder, db, seed, n_phones, processes)
    chaos.rate = fault_rate
    try:
        chaos.on = True
        for step in range(steps):
            phone = rng.choice(r.phones)
            what = rng.random()
            if what < 0.45:
                for _ in range(rng.randint(1, 3)):
                    _offline_edit(r, phone, rng)
                r.log.append(f"{step} {phone.name} edits")
            elif what < 0.85:
                if concurrent and rng.random() < 0.25:
                    # Several phones at once: their pushes meet in one group commit, and a kill
                    # or a dropped reply catches them together.
                    together = rng.sample(r.phones, rng.randint(2, len(r.phones)))
                    threads = [threading.Thread(target=_sync_in_process, args=(p,)) for p in together]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    outcome = f"together with {[p.name for p in together]}"
                elif rng.random() < 0.15:
                    outcome = _sync_in_subprocess(r, chaos, phone, rng)
                else:
                    outcome = _sync_in_process(phone)
                r.log.append(f"{step} {phone.name} sync: {outcome}")
            elif what < 0.95:
                r.backend.ensure_up()
                mid = r.backend.console_move(rng)
                if mid:
                    r.console_mids.append(mid)
                r.log.append(f"{step} console move {mid}")
            else:
                phone.offset[0] = rng.choice([0, 365 * DAY_MS, -2 * DAY_MS, 10 * 60_000, -DAY_MS // 2])
                r.log.append(f"{step} {phone.name} clock offset {phone.offset[0]}")
            r.backend.ensure_up()
        chaos.on = False
        for phone in r.phones:
            phone.offset[0] = rng.choice([0, 0, 365 * DAY_MS])  # some end with a clock still wrong
        quiesce(r)
        problems = check(r)
        if stats is not None:
            kinds: dict[str, int] = {}
            for _, _, kind in proxy.log:
                kinds[kind] = kinds.get(kind, 0) + 1
            stats.update(phones=n_phones, mutations=sum(len(p.mids) for p in r.phones),
                         conflicts=len(r.backend.query("SELECT id FROM conflicts")),
                         rejected=sum(len(p.engine.store.rejections()) for p in r.phones),
                         records=len(r.backend.query("SELECT id FROM records")),
                         blobs=sum(1 for d in (r.backend.servers[0].data_dir / "blobs").glob("??/*")),
                         console=len(r.console_mids), device_kills=r.device_kills, faults=kinds,
                         syncs=sum("sync" in line for line in r.log))
        return problems
    finally:
        proxy.close()
        for phone in r.phones:
            if phone.engine is not None:
                phone.engine.store.close()
                phone.engine.close()
        r.backend.stop()
        if own_folder:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


def quiesce(r: Round, passes: int = 8) -> None:
    """Every device syncs, with the world behaving, until a pass in which nothing moves."""
    for _ in range(passes):
        r.backend.ensure_up()
        moved = False
        for phone in r.phones:
            report = phone.engine.sync()
            moved |= bool(report.pushed or report.pulled or report.blobs_uploaded or report.blobs_downloaded)
        if not moved:
            return
    raise AssertionError("the devices did not settle")


# ---- the checks ------------------------------------------------------------------------------


def _server_records(r: Round) -> dict[str, Record]:
    rows = r.backend.query("SELECT wire, grid_id FROM records")
    out = {}
    for wire, grid in rows:
        record = msgspec.msgpack.decode(bytes(wire), type=Record)
        out[record.id] = (record, grid)
    return out


def check(r: Round) -> list[str]:
    problems: list[str] = []
    server = _server_records(r)
    changes = r.backend.query("SELECT seq, record_id, version, op, mid, device_id, changes FROM change_log ORDER BY seq")
    changes = [(s, rid, v, op, mid, dev, json.loads(ch) if isinstance(ch, str) else ch)
               for s, rid, v, op, mid, dev, ch in changes]
    applied = {row[0]: row[1] for row in r.backend.query("SELECT mid, status FROM applied_mutations")}
    conflicts = r.backend.query("SELECT record_id, field, kept, lost FROM conflicts")
    conflicts = [(rid, f, json.loads(k) if isinstance(k, str) else k, json.loads(lo) if isinstance(lo, str) else lo)
                 for rid, f, k, lo in conflicts]

    # G2: no mutation applied twice, none lost.
    by_mid: dict[str, list] = {}
    for entry in changes:
        if entry[4]:
            by_mid.setdefault(entry[4], []).append(entry)
    for mid, entries in by_mid.items():
        if len(entries) > 1:
            problems.append(f"G2: mid {mid} in the change log {len(entries)} times")
    for phone in r.phones:
        store = phone.engine.store
        if store.pending_count():
            problems.append(f"G1: {phone.name} still has {store.pending_count()} edits queued")
        for mid, m in phone.mids.items():
            result = store.result(mid)
            if result is None:
                problems.append(f"G1: {phone.name} kept no result for {m['op']} {m['entity']} {mid}")
                continue
            status = result.status.value
            if applied.get(mid) not in (status, None) or (applied.get(mid) is None and result.version and
                                                          status != "rejected"):
                problems.append(f"G2: {phone.name} holds {status} for {mid}, the server {applied.get(mid)}")
            n = len(by_mid.get(mid, []))
            if status in ("applied", "merged") and n == 0 and _changed_nothing(m, result):
                pass  # lost every field it sent, or to the same value, or united sets holding its items
            elif status in ("applied", "merged") and n != 1:
                problems.append(f"G2: {mid} {status} on {phone.name} but {n} times in the change log:"
                                f" {m} -> {result}")
            if status == "rejected" and n:
                problems.append(f"G2: {mid} rejected on {phone.name} but in the change log")

    # G3 and G5: each device holds exactly the server's records of its scope.
    for phone in r.phones:
        store = phone.engine.store
        mine = {}
        for entity in ("grid", *ENTITIES):
            with store._read() as db:  # noqa: SLF001 - the server state the device holds, not its view
                rows = db.execute("SELECT id FROM records WHERE entity = ?", (entity,)).fetchall()
            for (rid,) in rows:
                mine[rid] = store.get(entity, rid)
        expected = {rid: rec for rid, (rec, grid) in server.items()
                    if (rec.entity == "grid" and rid in phone.grids) or grid in phone.grids}
        for rid in mine.keys() - expected.keys():
            grid = server.get(rid, (None, None))[1]
            problems.append(f"G5/G3: {phone.name} holds {mine[rid].entity} {rid} of grid {grid}, not in its scope")
        for rid in expected.keys() - mine.keys():
            problems.append(f"G3: {phone.name} lacks {expected[rid].entity} {rid} v{expected[rid].version}")
        for rid in expected.keys() & mine.keys():
            a, b = mine[rid], expected[rid]
            if (a.version, a.hlc, a.deleted, a.fields) != (b.version, b.hlc, b.deleted, dict(b.fields)):
                problems.append(f"G3: {phone.name} holds {b.entity} {rid} as v{a.version} {a.hlc} del={a.deleted}"
                                f" {a.fields}; the server v{b.version} {b.hlc} del={b.deleted} {b.fields}")

    # G3 for photos: every photo a live record of the scope names is on the device.
    for phone in r.phones:
        for rid, (record, grid) in server.items():
            if grid in phone.grids and not record.deleted:
                for sha in record.fields.get("photos") or []:
                    if not phone.engine.store.has_blob(sha):
                        problems.append(f"G3: {phone.name} lacks photo {sha[:12]} of {record.entity} {rid}")

    # G4: every pulled page held every change in (a, b] unless the record changed after b.
    last_seq: dict[str, int] = {}
    for s, rid, *_ in changes:
        last_seq[rid] = max(last_seq.get(rid, 0), s)
    for phone in r.phones:
        log = phone.path.with_name("pulls.jsonl")
        if not log.exists():
            continue
        for n, line in enumerate(log.read_text().splitlines()):
            try:
                page = json.loads(line)
            except ValueError:
                continue  # the device was killed while writing it
            a, b = page["a"], page["b"]
            if a < 0 or b < 0:
                continue
            got = {rid: v for rid, v, _ in page["changes"]}
            for rid, v, g in page["changes"]:
                grid = server.get(rid, (None, None))[1]
                if grid not in phone.grids and rid not in phone.grids:
                    problems.append(f"G5: {phone.name} pulled {rid} of grid {grid}")
            for s, rid, v, *_ in changes:
                if a < s <= b:
                    grid = server[rid][1]
                    if grid in phone.grids and got.get(rid, 0) < v and last_seq[rid] <= b:
                        problems.append(f"G4: {phone.name} page {n} ({a}, {b}] lacks {rid} v{v} (seq {s})")

    # G1: values that lost are in the conflict log.
    problems += _lost_values(r, server, changes, applied, conflicts)
    return problems


def _changed_nothing(mutation: dict, result: Any) -> bool:
    """Whether a result without a change log entry is one that changed nothing: a delete of a
    record deleted already, or an edit each of whose fields lost (a conflict entry), lost to the
    same value, or was a set already holding its items."""
    if result.record is None:
        return False
    if mutation["op"] == "delete":
        # A second delete stamped before the first, or a delete that lost to a later edit.
        return result.record.deleted or any(c.field == "deleted" and c.kept is False
                                            for c in (result.conflicts or []))
    if any(c.field == "deleted" and c.kept is True for c in (result.conflicts or [])):
        return True  # lost to a later delete; the entry holds its fields (hidden ones it matched change nothing)
    logged = {c.field for c in (result.conflicts or [])}
    for name, value in mutation["fields"].items():
        stored = result.record.fields.get(name)
        if name in logged or stored == value or (name in UNION and set(value) <= set(stored or [])):
            continue
        return False
    return True


def _lost_values(r: Round, server, changes, applied, conflicts) -> list[str]:  # noqa: ANN001
    problems = []
    sent: dict[str, dict] = {}
    origin: dict[str, str] = {}
    for phone in r.phones:
        for mid, m in phone.mids.items():
            sent[mid] = m
            origin[mid] = phone.name
    version_of = {mid: v for _, _, v, _, mid, _, _ in changes if mid}
    history: dict[str, list[tuple[int, dict]]] = {}
    for _, rid, v, _, _, _, ch in changes:
        history.setdefault(rid, []).append((v, ch or {}))

    def value_at(rid: str, version: int, name: str) -> Any:
        """A field's stored value at a version of its record (hidden ones of a tombstone too)."""
        value = None
        for v, ch in history.get(rid, []):
            if v > version:
                break
            if name in ch:
                value = ch[name][1]
        return value

    seq_of = {mid: s for s, _, _, _, mid, _, _ in changes if mid}
    by_record: dict[str, list[str]] = {}
    for s, rid, v, op, mid, dev, ch in changes:
        if mid in sent and applied.get(mid) in ("applied", "merged"):
            by_record.setdefault(rid, []).append(mid)
    for rid, mids in by_record.items():
        record, _ = server[rid]
        for m1 in mids:
            mut = sent[m1]
            if mut["op"] != "upsert":
                continue
            for name, value in mut["fields"].items():
                if name in LWW_SKIP:
                    continue
                if name in UNION:
                    if name == "photos" and not record.deleted:
                        missing = set(value) - set(record.fields.get("photos") or [])
                        if missing:
                            problems.append(f"G1: {record.entity} {rid} lost photos {sorted(missing)}")
                    continue
                if not record.deleted and record.fields.get(name) == value:
                    continue
                seen_over = False
                for m2 in mids:
                    if seq_of[m2] <= seq_of[m1]:
                        continue
                    later = sent[m2]
                    if later["op"] == "delete" or name in later["fields"]:
                        # Overwritten by an edit that had seen the value: its own device's, one
                        # based on m1's version or later, or one based on a version that held the
                        # same value already (m1 then changed other fields, not this one).
                        if (origin[m2] == origin[m1] or later["base"] >= version_of[m1]
                                or value_at(rid, later["base"], name) == value):
                            seen_over = True
                            break
                if seen_over:
                    continue
                logged = any(c_rid == rid and ((f == name and lost == value) or
                                               (f == "deleted" and _holds(lost, name, value)))
                             for c_rid, f, kept, lost in conflicts)
                if not logged:
                    trail = [(s, v, op, origin.get(mid, mid), sent.get(mid, {}).get("base"),
                                sent.get(mid, {}).get("hlc"), ch) for s, c_rid, v, op, mid, _, ch in changes
                               if c_rid == rid]
                    problems.append(f"G1: {record.entity} {rid} {name}={value!r} of {origin[m1]} ({m1}) lost"
                                    f" without a conflict entry; final {record.fields.get(name)!r}"
                                    f" deleted={record.deleted}; history {trail};"
                                    f" conflicts {[c for c in conflicts if c[0] == rid]}")
    return problems


def _holds(lost: Any, name: str, value: Any) -> bool:
    if isinstance(lost, dict):
        return lost.get(name) == value
    if isinstance(lost, list):
        return any(_holds(x, name, value) for x in lost)
    return False


# ---- command line ----------------------------------------------------------------------------


def _seeds(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out += range(int(lo), int(hi) + 1)
        else:
            out.append(int(part))
    return out


def main() -> None:
    if sys.argv[1:2] == ["--device"]:
        _device_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seeds", default="1-5")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--keep", action="store_true", help="keep the folder of each round that finds a problem")
    parser.add_argument("--concurrent", action="store_true", help="let several phones sync at once")
    parser.add_argument("--rate", type=float, default=0.35, help="share of requests the proxy disturbs")
    args = parser.parse_args()
    databases = None
    if args.backend == "postgres":
        from tests.support.databases import PostgresDatabases

        databases = PostgresDatabases()
        databases.start()
    failed = 0
    try:
        for seed in _seeds(args.seeds):
            db = databases.new() if databases else None
            started = time.monotonic()
            folder = Path(tempfile.mkdtemp(prefix=f"chaos-{seed}-")) if args.keep else None
            stats: dict = {}
            try:
                problems = run_round(seed, db, steps=args.steps, folder=folder, stats=stats,
                                     concurrent=args.concurrent, fault_rate=args.rate)
            except Exception as exc:  # noqa: BLE001
                problems = [f"round failed: {type(exc).__name__}: {exc}"]
            finally:
                if databases and db:
                    databases.drop(db)
            failed += bool(problems)
            if folder and not problems:
                import shutil

                shutil.rmtree(folder, ignore_errors=True)  # kept only when it has something to show
            print(f"seed {seed} {args.backend}: {len(problems)} problems in {time.monotonic() - started:.0f}s"
                  + (f" ({folder})" if folder else "") + f" {stats}", flush=True)
            for p in problems[:20]:
                print("   ", p, flush=True)
    finally:
        if databases:
            databases.close()
    print(f"{failed} rounds with problems")


if __name__ == "__main__":
    main()
