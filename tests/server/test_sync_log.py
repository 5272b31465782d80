"""Protocol section 8: every push and pull lands in the sync log, with counts, errors and the app
version; the device's last sync time follows."""

from __future__ import annotations

from sqlalchemy import select

from server.db.models import Device, SyncLogEntry
from tests.conftest import run


def test_pushes_pulls_and_refusals_are_logged_and_last_sync_moves(field):
    grid = field.grid("g1")
    field.user("wang", ["g1"])
    phone = field.device("wang")
    phone.push([phone.mutation("household", fields={"grid_id": grid, "address": "台苑新村1幢"}),
                phone.mutation("spaceship", fields={"x": 1})])
    phone.pull_all()
    phone.call("GET", "/v1/sync/pull", params={"limit": "0"})
    run(field.client, field.client.app.state.sync_log.flush)

    async def read():  # noqa: ANN202
        async with field.sessionmaker() as session:
            entries = (await session.execute(select(SyncLogEntry).order_by(SyncLogEntry.id))).scalars().all()
            device = await session.get(Device, phone.device_id)
            return entries, device

    entries, device = run(field.client, read)
    kinds = [(e.kind, e.mutations, e.applied, e.rejected, e.error) for e in entries]
    assert kinds[0] == ("push", 2, 1, 1, None)
    assert ("pull", 0, 0, 0, None) in kinds and kinds[-1] == ("pull", 0, 0, 0, "invalid")
    assert all(e.device_id == phone.device_id and e.app_version == "test-1" for e in entries)
    assert device.last_sync_at is not None
