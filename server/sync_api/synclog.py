"""The sync log: every push and pull, written in the background in small batches.

A pull only reads; logging it in its own write transaction would make every pull wait for the
database's write lock on SQLite. Entries are queued and flushed every half second instead,
with the devices' last sync time and app version.
"""

from __future__ import annotations

import asyncio
import datetime
import logging

from sqlalchemy import Connection, bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db import units
from server.db.models import Device, SyncLogEntry
from server.db.outage import database_unreachable

log = logging.getLogger("fieldloop")


# Entries held while the database cannot be reached: 400 phones retrying every few seconds
# through an hour's outage would otherwise fill the server's memory with their failed attempts.
MAX_PENDING = 50_000


class SyncLog:
    def __init__(self, engine: AsyncEngine, interval_s: float = 0.5, max_pending: int = MAX_PENDING):
        self._engine = engine
        self._interval = interval_s
        self._max_pending = max_pending
        self._pending: list[dict] = []
        self._dropped = 0
        self._task: asyncio.Task | None = None

    def add(self, *, device_id: str | None, user_id: str | None, kind: str, app_version: str = "",
            error: str | None = None, duration_ms: int = 0, **counts: int) -> None:
        self._pending.append(
            {
                "device_id": device_id,
                "user_id": user_id,
                "kind": kind,
                "at": datetime.datetime.now(datetime.UTC),
                "app_version": app_version,
                "error": error,
                "duration_ms": duration_ms,
                "mutations": counts.get("mutations", 0),
                "applied": counts.get("applied", 0),
                "merged": counts.get("merged", 0),
                "rejected": counts.get("rejected", 0),
                "changes": counts.get("changes", 0),
            }
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - the log must never take the server down
                if database_unreachable(exc):
                    log.warning("sync log kept in memory, the database is unreachable: %s", exc)
                else:
                    log.exception("sync log flush failed; will retry")

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        last_seen: dict[str, datetime.datetime] = {}
        for entry in batch:
            if entry["device_id"] and not entry["error"]:
                last_seen[entry["device_id"]] = entry["at"]
        try:
            # Queued with the record writers (server.db.units): on SQLite a second connection
            # taking the write lock beside them would make one of the two sleep in SQLite's busy
            # handler.
            await units.write(self._engine, _write_entries, batch, last_seen)
        except Exception:
            self._pending[:0] = batch
            excess = len(self._pending) - self._max_pending
            if excess > 0:
                # The oldest go first: what the devices did last is what a supervisor asks about.
                del self._pending[:excess]
                self._dropped += excess
                log.warning("sync log: %d entries dropped in all while the database was unreachable",
                            self._dropped)
            raise


def _write_entries(connection: Connection, batch: list[dict], last_seen: dict[str, datetime.datetime]) -> None:
    connection.execute(insert(SyncLogEntry), batch)
    if last_seen:
        devices = Device.__table__
        connection.execute(
            update(devices).where(devices.c.id == bindparam("device")).values(last_sync_at=bindparam("at")),
            [{"device": device_id, "at": at} for device_id, at in last_seen.items()],
        )
