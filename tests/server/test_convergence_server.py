"""The convergence state machine (tests/unit/convergence_model.py) against the real server.

Devices are enrolled through the API and push and pull over HTTP through Litestar's TestClient;
the console and the server's own moves go through ``commit_mutations``, the one write path. The
logs the machine checks (change log, conflicts) are read from the database. Each Hypothesis run
gets its own grid, users and devices in one app per backend (SQLite, PostgreSQL), so runs never
see each other's records. G1, G2 and G3 are checked exactly as against the model server.
"""

from __future__ import annotations

import itertools

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from sqlalchemy import select

from server.db.models import ChangeLogEntry, ConflictEntry, RecordRow
from server.records import writes
from server.records.writes import Sender as WriteSender
from server.records.writes import commit_mutations, server_clock
from shared_schema.messages import Mutation, PullReply, PushReply, Record, Result
from shared_schema.workflow import Actor
from sync.hlc import HybridClock, wall_now_ms
from tests.conftest import FieldSetup, run
from tests.unit.convergence_model import T0, ConvergenceMachine, Device, Sender

RUNS = itertools.count(1)


class RealServer:
    """The backend interface of ``convergence_model.ModelServer``, on the real app."""

    def __init__(self, field: FieldSetup, run_no: int):
        self.field = field
        self.client = field.client
        self.sessionmaker = field.sessionmaker
        self.run_no = run_no
        self.grid_name = f"conv-{run_no}-grid"
        self.grid = field.grid(self.grid_name)
        self.other_grid = field.grid(f"conv-{run_no}-other")
        self.wires = {}

    def enroll(self, n: int):
        name = f"conv-{self.run_no}-worker-{n}"
        self.field.user(name, [self.grid_name])
        wire = self.field.device(name, msgpack=bool(n % 2))
        self.wires[wire.device_id] = wire
        return wire

    def wall(self) -> int:
        return wall_now_ms()

    def push(self, sender: Sender, mutations: list[Mutation]) -> PushReply:
        wire = self.wires[sender.origin]
        response = wire.call("POST", "/v1/sync/push", {"mutations": [msgspec.to_builtins(m) for m in mutations]})
        assert response.status_code == 200, response.text
        return msgspec.convert(wire.decode(response), PushReply)

    def pull(self, sender: Sender, cursor: str | None, limit: int) -> PullReply:
        wire = self.wires[sender.origin]
        params = {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
        response = wire.call("GET", "/v1/sync/pull", params=params)
        assert response.status_code == 200, response.text
        return msgspec.convert(wire.decode(response), PullReply)

    def commit_as(self, sender: Sender, mutations: list[Mutation]) -> list[Result]:
        writer = WriteSender(origin=sender.origin, actor=sender.actor, scope=None)
        return run(self.client, commit_mutations, self.sessionmaker, mutations, writer)

    def server_stamp(self) -> str:
        return server_clock().now()

    def _rows(self, model, order):  # noqa: ANN001, ANN202
        async def query():  # noqa: ANN202
            async with self.sessionmaker() as session:
                return (
                    await session.execute(select(model).where(model.grid_id == self.grid).order_by(order))
                ).scalars().all()

        return run(self.client, query)

    def records(self) -> dict[str, Record]:
        # What a pull sends of each record: its stored encoding.
        async def query():  # noqa: ANN202
            async with self.sessionmaker() as session:
                statement = select(RecordRow.id, RecordRow.wire).where(RecordRow.grid_id == self.grid)
                return (await session.execute(statement)).all()

        return {id_: msgspec.msgpack.decode(wire, type=Record) for id_, wire in run(self.client, query)}

    def change_log(self) -> list[dict]:
        return [
            {
                "seq": e.seq,
                "mid": e.mid,
                "record_id": e.record_id,
                "version": e.version,
                "op": e.op,
                "changes": e.changes,
            }
            for e in self._rows(ChangeLogEntry, ChangeLogEntry.seq)
            if e.mid is not None  # the grid's own record, written by the accounts service
        ]

    def conflicts(self) -> list[dict]:
        return [
            {
                "mid": c.mid,
                "record_id": c.record_id,
                "field": c.field,
                "kept": c.kept,
                "lost": c.lost,
                "winner_hlc": c.winner_hlc,
            }
            for c in self._rows(ConflictEntry, ConflictEntry.id)
        ]

    def close(self) -> None:
        pass


class ServerConvergence(ConvergenceMachine):
    def __init__(self, field: FieldSetup):
        self.field = field
        super().__init__()

    def make_backend(self) -> RealServer:
        self.run = next(RUNS)
        backend = RealServer(self.field, self.run)
        self.grid, self.other_grid = backend.grid, backend.other_grid
        return backend

    def server_wall(self) -> int:
        # The server runs on the real clock; ``time_passes`` moves the devices' clocks ahead of it.
        return wall_now_ms() + (self.sim_ms - T0)

    def add_device(self, n: int, skew: int) -> Device:
        wire = self.backend.enroll(n)
        clock = HybridClock(wire.device_id, wall=lambda: self.server_wall() + skew)
        return Device(
            id=wire.device_id,
            clock=clock,
            sender=Sender(origin=wire.device_id, actor=Actor.DEVICE, scope=frozenset({self.grid})),
        )


@pytest.fixture
def own_server_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's clock is per process: devices running minutes ahead move it ahead (as they
    should), so this test gets its own and leaves the process's clock as it found it."""
    monkeypatch.setattr(writes, "_clock", HybridClock(node="server.convergence"))


@pytest.mark.slow
def test_devices_editing_offline_converge_on_the_real_server(field: FieldSetup, own_server_clock: None):
    run_state_machine_as_test(
        lambda: ServerConvergence(field),
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
