"""The server's own move in the case workflow: a dispatched case past its due time is overdue."""

from __future__ import annotations

import datetime
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.db.models import RecordRow
from server.records.writes import SERVER, commit_mutations, server_clock
from shared_schema.messages import Mutation


async def mark_overdue_cases(sessionmaker: async_sessionmaker, now: datetime.datetime | None = None) -> int:
    """Move every dispatched case whose ``due_at`` has passed to ``overdue``; returns how many."""
    now = now or datetime.datetime.now(datetime.UTC)
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
    due = [r for r in rows if r.fields.get("due_at") and datetime.datetime.fromisoformat(r.fields["due_at"]) < now]
    if not due:
        return 0
    clock = server_clock()
    mutations = [
        Mutation(mid=str(uuid.uuid4()), entity="case", id=r.id, op="upsert", base_version=r.version,
                 hlc=clock.now(), fields={"status": "overdue"})
        for r in due
    ]
    results = await commit_mutations(sessionmaker, mutations, SERVER)
    return sum(1 for r in results if r.status.value != "rejected")
