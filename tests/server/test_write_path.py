"""The write path on PostgreSQL merges a group before it takes the change counter's lock; a
group whose records another process changed in between is merged again under the lock."""

from __future__ import annotations

import pytest
from sqlalchemy.util import await_only

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


@pytest.mark.postgres
def test_a_record_another_process_changed_during_the_merge_is_merged_again(field, monkeypatch):
    grid = field.grid("所前社区第1网格")
    field.user("wang", ["所前社区第1网格"])
    field.user("li", ["所前社区第1网格"])
    wang, li = field.device("wang"), field.device("li")
    home = wang.mutation("household", fields={"grid_id": grid, "address": "台苑新村3幢", "head_name": "顾"})
    wang.push([home])
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
