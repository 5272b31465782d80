"""The server's own move in the case workflow: a dispatched case past its due time is overdue."""

from __future__ import annotations

import datetime
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.db.models import RecordRow
from server.records.writes import SERVER, apply_in_transaction, server_clock, write_transaction
from shared_schema.messages import REJECTED, Mutation

# A sweep whose read went stale is read again at once; a few tries, then the next sweep's turn.
_TRIES = 3


class _DueTimeMoved(Exception):
    """A case was sent back with a new due time between the sweep's read and its write."""


async def mark_overdue_cases(sessionmaker: async_sessionmaker, now: datetime.datetime | None = None) -> int:
    """Move every dispatched case whose ``due_at`` has passed to ``overdue``; returns how many.

    The workflow lets a dispatched case go overdue whatever changed since the sweep read it, so a
    case sent back meanwhile with a new due time would be marked overdue by its old one. Each
    case's due time is therefore checked again in what the write applied, where it is current in
    every server process (the write path re-reads under the change counter's lock), and a sweep
    that finds one moved is rolled back and runs again on a fresh read.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    for _ in range(_TRIES):
        due = await dispatched_past_due(sessionmaker, now)
        if not due:
            return 0
        clock = server_clock()
        mutations = [
            Mutation(mid=str(uuid.uuid4()), entity="case", id=case_id, op="upsert", base_version=version,
                     hlc=clock.now(), fields={"status": "overdue"})
            for case_id, version in due
        ]
        try:
            async with write_transaction(sessionmaker) as session:
                results = await apply_in_transaction(session, mutations, SERVER)
                applied = [r for r in results if r.status is not REJECTED]
                if any(not _past_due(r.record.fields, now) for r in applied):
                    raise _DueTimeMoved
            return len(applied)
        except _DueTimeMoved:
            continue
    return 0


async def dispatched_past_due(sessionmaker: async_sessionmaker, now: datetime.datetime) -> list[tuple[str, int]]:
    """(id, version) of every dispatched case whose due time has passed, as stored now."""
    async with sessionmaker() as session:
        rows = (
            await session.execute(
                select(RecordRow.id, RecordRow.version, RecordRow.fields).where(
                    RecordRow.entity == "case",
                    RecordRow.deleted.is_(False),
                    RecordRow.fields["status"].as_string() == "dispatched",
                )
            )
        ).all()
    return [(r.id, r.version) for r in rows if _past_due(r.fields, now)]


def _past_due(fields: dict, now: datetime.datetime) -> bool:
    due_at = fields.get("due_at")
    return bool(due_at) and datetime.datetime.fromisoformat(due_at) < now
