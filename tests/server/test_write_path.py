"""The write path on PostgreSQL. When another process holds the change counter's lock, a group
merges before it takes the lock, and a group whose records another process changed in between is
merged again under the lock. When the lock is free, a push takes it first and its rows go to the
database in chunks while the rest merges: what it leaves is what one write would leave, and a
chunk that fails leaves nothing."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.util import await_only

from server.db.models import AppliedMutation, ChangeLogEntry, ConflictEntry, RecordRow
from server.records import writes
from server.records.writes import Sender, apply_requests
from shared_schema.messages import Mutation
from shared_schema.workflow import Actor


@pytest.fixture
def backend(postgres_url: str) -> str:
    return postgres_url


class _CommitsFirst:
    """The counter lock, but another writer commits just before it is taken (once)."""

    def __init__(self, lock, other_writer):
        self._lock = lock
        self._other_writer = other_writer

    def rows(self, connection):
        other_writer, self._other_writer = self._other_writer, None
        if other_writer is not None:
            other_writer()
        return self._lock.rows(connection)


class _HeldElsewhere:
    """The counter's lock as another process's write would leave it: not free."""

    def rows(self, connection):
        return []


def _two_phones_and_a_household(field):  # noqa: ANN001, ANN202
    """wang's and li's phones on one grid, and a household wang has pushed."""
    grid = field.grid("所前社区第1网格")
    field.user("wang", ["所前社区第1网格"])
    field.user("li", ["所前社区第1网格"])
    wang, li = field.device("wang"), field.device("li")
    home = wang.mutation("household", fields={"grid_id": grid, "address": "台苑新村3幢", "head_name": "顾"})
    wang.push([home])
    return grid, wang, li, home


@pytest.mark.postgres
def test_a_record_another_process_changed_during_the_merge_is_merged_again(field, monkeypatch):
    _, wang, li, home = _two_phones_and_a_household(field)
    li.pull_all()
    engine = field.client.app.state.engine
    li_edit = Mutation(**li.mutation("household", home["id"], {"phone": "13800000001"}))
    wang_edit = Mutation(**wang.mutation("household", home["id"], {"notes": "独居, 每周探访"}))

    def li_commits_through_another_connection() -> None:
        async def commit() -> None:
            async with engine.begin() as connection:
                await connection.run_sync(
                    apply_requests, [([li_edit], Sender(origin=li.device_id, actor=Actor.DEVICE, scope=None))]
                )

        await_only(commit())

    monkeypatch.setattr(
        writes, "_LOCK_COUNTER", _CommitsFirst(writes._LOCK_COUNTER, li_commits_through_another_connection)
    )
    monkeypatch.setattr(writes, "_LOCK_COUNTER_IF_FREE", _HeldElsewhere())

    async def wang_commits() -> list:
        async with engine.begin() as connection:
            return await connection.run_sync(
                apply_requests, [([wang_edit], Sender(origin=wang.device_id, actor=Actor.DEVICE, scope=None))]
            )

    [[result]] = field.client.blocking_portal.call(wang_commits)
    # Merged against li's committed version, not the one read before: both edits survive.
    assert result.version == 3
    assert result.record.fields["phone"] == "13800000001"
    assert result.record.fields["notes"] == "独居, 每周探访"
    [pulled] = [r for r in li.pull_all() if r["id"] == home["id"]]
    assert pulled["version"] == 3 and pulled["fields"]["phone"] == "13800000001"


def _visit(grid: str, n: int) -> dict:
    return {"grid_id": grid, "household_id": "0e5f6b1c-1d1e-4c55-9a8e-3a1f2b3c4d5e", "method": "inquiry", "notes": f"第{n}次走访",
            "visited_at": "2026-11-25T09:30:00+08:00"}


def _database_counts(engine) -> dict:  # noqa: ANN001
    async def counts() -> dict:
        async with engine.connect() as connection:
            return {
                "records": await connection.scalar(select(func.count()).select_from(RecordRow)),
                "changes": await connection.scalar(select(func.count()).select_from(ChangeLogEntry)),
                "applied": await connection.scalar(select(func.count()).select_from(AppliedMutation)),
                "conflicts": await connection.scalar(select(func.count()).select_from(ConflictEntry)),
                "counter": await connection.scalar(text("SELECT value FROM counters WHERE name = 'change_seq'")),
            }

    return counts


@pytest.mark.postgres
def test_a_push_written_in_chunks_as_it_merges_leaves_what_one_write_would(field, monkeypatch):
    grid, wang, li, stored = _two_phones_and_a_household(field)
    li.push([li.mutation("household", stored["id"], {"phone": "13800000001"}, base_version=1)])
    engine = field.client.app.state.engine
    before = field.client.blocking_portal.call(_database_counts(engine))

    # One push of 250 (three chunks of 100 or fewer): a household made in the first chunk and edited
    # in the second and third, an edit of a stored household that conflicts with li's, and a
    # mutation sent twice.
    home = wang.mutation("household", fields={"grid_id": grid, "address": "台苑新村5幢", "head_name": "周"})
    mutations = [home] + [wang.mutation("visit", fields=_visit(grid, n)) for n in range(2, 251)]
    mutations[119] = wang.mutation("household", stored["id"], {"phone": "13900000002"}, base_version=1)
    mutations[149] = wang.mutation("household", home["id"], {"notes": "独居"}, base_version=1)
    mutations[199] = mutations[9]
    mutations[249] = wang.mutation("household", home["id"], {"members": 3}, base_version=2)
    chunks = []
    send = writes._ChunkPipe.send
    monkeypatch.setattr(writes._ChunkPipe, "send", lambda pipe, chunk: (chunks.append(chunk), send(pipe, chunk)))
    results = wang.push(mutations)["results"]

    assert len(chunks) == 3  # the chunk of places 1-99, then 100-199, then the rest
    assert all(r["status"] in ("applied", "merged") for r in results), results
    assert results[199] == results[9]
    assert results[249]["record"]["version"] == 3
    after = field.client.blocking_portal.call(_database_counts(engine))
    # 246 new records (the household and 245 visits), 249 changes and mutation ids (one was sent
    # twice), one conflict (the phone), every change a seq of its own.
    assert after["records"] - before["records"] == 246
    assert after["changes"] - before["changes"] == 249
    assert after["applied"] - before["applied"] == 249
    assert after["conflicts"] - before["conflicts"] == 1
    assert after["counter"] - before["counter"] == 249

    async def seqs() -> tuple[list, list]:
        async with engine.connect() as connection:
            log = (await connection.execute(
                select(ChangeLogEntry.seq).where(ChangeLogEntry.seq > before["counter"]).order_by(ChangeLogEntry.seq)
            )).scalars().all()
            # Each record's row shows its last change: its seq is that change's.
            stale = (await connection.execute(text(
                "SELECT r.id FROM records r JOIN (SELECT record_id, max(seq) AS seq FROM change_log "
                "GROUP BY record_id) c ON c.record_id = r.id WHERE r.seq <> c.seq"
            ))).all()
            return log, stale

    log, stale = field.client.blocking_portal.call(seqs)
    assert log == list(range(before["counter"] + 1, before["counter"] + 250))
    assert stale == []
    pulled = {r["id"]: r for r in li.pull_all()}
    assert pulled[home["id"]]["version"] == 3
    assert pulled[home["id"]]["fields"]["notes"] == "独居" and pulled[home["id"]]["fields"]["members"] == 3
    assert pulled[stored["id"]]["fields"]["phone"] == "13900000002"
    assert sum(r["entity"] == "visit" for r in pulled.values()) == 245


@pytest.mark.postgres
def test_a_chunk_that_fails_to_write_leaves_nothing_of_the_push(field, monkeypatch):
    grid = field.grid("所前社区第1网格")
    field.user("wang", ["所前社区第1网格"])
    wang = field.device("wang")
    wang.push([wang.mutation("visit", fields=_visit(grid, 1))])
    engine = field.client.app.state.engine
    before = field.client.blocking_portal.call(_database_counts(engine))
    visits = [wang.mutation("visit", fields=_visit(grid, n)) for n in range(300)]
    write = writes._write_chunk_on_driver
    calls = []

    async def second_fails(driver, dialect, chunk):  # noqa: ANN001, ANN202
        calls.append(chunk)
        if len(calls) == 2:
            await asyncio.sleep(0.01)
            raise OSError("no space left on device")
        await write(driver, dialect, chunk)

    monkeypatch.setattr(writes, "_write_chunk_on_driver", second_fails)
    sender = Sender(origin=wang.device_id, actor=Actor.DEVICE, scope=None, device_id=wang.device_id)

    async def push() -> None:
        async with engine.begin() as connection:
            await connection.run_sync(apply_requests, [([Mutation(**m) for m in visits], sender)])

    with pytest.raises(OSError, match="no space left"):
        field.client.blocking_portal.call(push)
    assert len(calls) == 2  # the first chunk was written, the second failed, no third was sent
    assert field.client.blocking_portal.call(_database_counts(engine)) == before
    monkeypatch.setattr(writes, "_write_chunk_on_driver", write)
    # The connection went back to the pool usable, and the same push then goes in whole.
    results = wang.push(visits)["results"]
    assert [r["status"] for r in results] == ["applied"] * 300
    after = field.client.blocking_portal.call(_database_counts(engine))
    assert after["changes"] - before["changes"] == 300 and after["counter"] - before["counter"] == 300
