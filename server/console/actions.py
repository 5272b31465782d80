"""What a supervisor does from the console, each a mutation through the one write path.

``commit_mutations`` writes the record, the change log, the conflict log and the pull feed in
one transaction, so a review or a case step reaches the phones on their next pull like any other
change. The mutation carries the version the supervisor saw (``base_version``): an edit made on a
phone since then is concurrent and resolved by the field's rule, never silently overwritten.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.console.auth import ConsoleUser
from server.console.web import LOCAL_TZ, local_now
from server.db.models import ChangeLogEntry, ConflictEntry, RecordRow
from server.records.writes import Sender, apply_in_transaction, server_clock, write_transaction
from shared_schema.messages import Mutation, MutationStatus, Result
from shared_schema.workflow import Actor, next_states
from sync.merge import DELETED_FIELD


class ActionRefused(ValueError):
    """The action cannot be carried out; ``code`` names why (a catalog key suffix)."""

    def __init__(self, code: str, message: str = ""):
        super().__init__(message or code)
        self.code = code


@dataclass(frozen=True)
class Done:
    result: Result

    @property
    def version(self) -> int:
        return self.result.version


def sender_for(me: ConsoleUser) -> Sender:
    return Sender(origin=f"console:{me.id}", actor=Actor.CONSOLE, scope=me.scope, device_id=None, user_id=me.id)


def _utc_iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


async def write(
    sm: async_sessionmaker,
    me: ConsoleUser,
    row: RecordRow,
    fields: dict[str, Any],
    *,
    base_version: int,
    op: str = "upsert",
    resolve_conflict: ConflictEntry | None = None,
    decided_on: str | None = None,
) -> Done:
    """Commit one console edit of ``row``; raises ActionRefused when the write path rejects it.

    With ``resolve_conflict``, the conflict is marked ``taken`` in the same transaction: the edit
    and the resolution land together or not at all. With ``decided_on``, the edit is refused
    (``changed_meanwhile``) when someone else changed that field after ``base_version``: the
    user decided on a page that no longer shows the record (a case step taken by another
    supervisor, a review written meanwhile). The merge alone would take both decisions, the later
    one winning.
    """
    mutation = Mutation(
        mid=str(uuid.uuid4()),
        entity=row.entity,
        id=row.id,
        op=op,
        base_version=base_version,
        hlc=server_clock().now(),
        fields=fields,
    )
    # Queued with the other record writers, so a conflict is marked in the edit's own transaction.
    async with write_transaction(sm) as db:
        [result] = await apply_in_transaction(db, [mutation], sender_for(me))
        if result.status is MutationStatus.REJECTED:
            raise ActionRefused(result.error.code, result.error.message)
        # Checked after the write, under the write lock it holds: every earlier writer has
        # committed, no later one can, and a refusal rolls this edit back.
        if decided_on is not None and await _changed_by_others(db, row.id, decided_on, base_version, me, mutation.mid):
            raise ActionRefused("changed_meanwhile")
        if resolve_conflict is not None:
            marked = await db.execute(
                update(ConflictEntry)
                .where(ConflictEntry.id == resolve_conflict.id, ConflictEntry.status == "open")
                .values(status="taken", resolved_by=me.id, resolved_at=datetime.datetime.now(datetime.UTC))
            )
            if marked.rowcount != 1:
                raise ActionRefused("already_resolved")
    return Done(result)


async def _changed_by_others(
    db: AsyncSession, record_id: str, field: str, since_version: int, me: ConsoleUser, own_mid: str | None = None
) -> bool:
    """Whether a writer other than ``me`` changed ``field`` of the record after ``since_version``.

    The user's own earlier edits (a double click, a second tab) count as seen, as in the merge.
    """
    entries = await db.execute(
        select(ChangeLogEntry.changes, ChangeLogEntry.mid, ChangeLogEntry.user_id, ChangeLogEntry.device_id).where(
            ChangeLogEntry.record_id == record_id, ChangeLogEntry.version > since_version
        )
    )
    return any(
        field in (changes or {}) and mid != own_mid and (user_id != me.id or device_id is not None)
        for changes, mid, user_id, device_id in entries
    )


# ---- visits ---------------------------------------------------------------------------------

VERDICTS = ("approved", "flagged")


async def review_visit(
    sm: async_sessionmaker,
    me: ConsoleUser,
    row: RecordRow,
    *,
    verdict: str,
    comment: str,
    base_version: int,
    now: datetime.datetime | None = None,
) -> Done:
    if verdict not in VERDICTS:
        raise ActionRefused("bad_verdict")
    comment = comment.strip()
    if len(comment) > 2000:
        raise ActionRefused("too_long")
    if verdict == "flagged" and not comment:
        raise ActionRefused("comment_required")
    review = {
        "verdict": verdict,
        "comment": comment,
        "reviewer": me.name,
        "reviewed_at": _utc_iso(now or datetime.datetime.now(datetime.UTC)),
    }
    return await write(sm, me, row, {"review": review}, base_version=base_version, decided_on="review")


# ---- cases: the closed loop ------------------------------------------------------------------


def allowed_moves(row: RecordRow) -> list[str]:
    return next_states("case", "status", (row.fields or {}).get("status", ""), Actor.CONSOLE)


async def _step(
    sm: async_sessionmaker, me: ConsoleUser, row: RecordRow, fields: dict[str, Any], base_version: int
) -> None:
    """One step of the loop, taken from the status the page showed or not at all. The same step
    sent again by the user who took it (a double click, Back and submit) is done once: the case is
    already exactly where it asks, and nobody else moved it."""
    to = fields["status"]
    if to not in allowed_moves(row):
        if row.version <= base_version:
            raise ActionRefused("invalid_transition")
        if all((row.fields or {}).get(name) == value for name, value in fields.items()):
            async with sm() as db:
                if not await _changed_by_others(db, row.id, "status", base_version, me):
                    return
        raise ActionRefused("changed_meanwhile")
    try:
        await write(sm, me, row, fields, base_version=base_version, decided_on="status")
    except ActionRefused as exc:
        if exc.code == "invalid_transition":  # allowed from the status just read: it moved since
            raise ActionRefused("changed_meanwhile") from exc
        raise


async def accept_case(sm: async_sessionmaker, me: ConsoleUser, row: RecordRow, *, base_version: int) -> None:
    await _step(sm, me, row, {"status": "accepted"}, base_version)


def parse_due(raw: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """A due date from the form (``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM``, local time), in the future.

    A bare date means the end of that day.
    """
    raw = (raw or "").strip()
    try:
        if "T" in raw or " " in raw:
            due = datetime.datetime.fromisoformat(raw.replace(" ", "T"))
        else:
            day = datetime.date.fromisoformat(raw)
            due = datetime.datetime.combine(day, datetime.time(23, 59))
    except ValueError:
        raise ActionRefused("bad_date") from None
    if due.tzinfo is None:
        due = due.replace(tzinfo=LOCAL_TZ)
    if due <= (now or local_now()):
        raise ActionRefused("date_past")
    if due.year > 2100:
        raise ActionRefused("bad_date")
    return due


async def dispatch_case(
    sm: async_sessionmaker,
    me: ConsoleUser,
    row: RecordRow,
    *,
    department: str,
    due: datetime.datetime,
    base_version: int,
) -> None:
    """Dispatch an accepted case (or send a resolved one back) to a department with a due time."""
    department = department.strip()
    if not department:
        raise ActionRefused("department_required")
    if len(department) > 200:
        raise ActionRefused("too_long")
    fields = {"status": "dispatched", "department": department, "due_at": _utc_iso(due)}
    await _step(sm, me, row, fields, base_version)


async def evaluate_case(
    sm: async_sessionmaker,
    me: ConsoleUser,
    row: RecordRow,
    *,
    rating: int,
    outcome: str,
    base_version: int,
    department: str = "",
    due: datetime.datetime | None = None,
) -> None:
    """Rate a resolved case, then close it or send it back (to a department, with a new due time)."""
    if not 1 <= rating <= 5:
        raise ActionRefused("bad_rating")
    if outcome == "close":
        await _step(sm, me, row, {"status": "closed", "rating": rating}, base_version)
        return
    if outcome == "reopen":
        fields: dict[str, Any] = {"status": "dispatched", "rating": rating}
        department = department.strip() or (row.fields or {}).get("department") or ""
        if not department:
            raise ActionRefused("department_required")
        if len(department) > 200:
            raise ActionRefused("too_long")
        fields["department"] = department
        if due is None:
            raise ActionRefused("bad_date")
        fields["due_at"] = _utc_iso(due)
        await _step(sm, me, row, fields, base_version)
        return
    raise ActionRefused("bad_outcome")


# ---- conflicts ------------------------------------------------------------------------------


async def _mark(sm: async_sessionmaker, me: ConsoleUser, conflict: ConflictEntry, status: str) -> bool:
    """Mark an open conflict resolved; False when someone resolved it first."""
    async with sm() as db, db.begin():
        done = await db.execute(
            update(ConflictEntry)
            .where(ConflictEntry.id == conflict.id, ConflictEntry.status == "open")
            .values(status=status, resolved_by=me.id, resolved_at=datetime.datetime.now(datetime.UTC))
        )
        return done.rowcount == 1


async def keep_conflict(sm: async_sessionmaker, me: ConsoleUser, conflict: ConflictEntry) -> None:
    if conflict.status != "open" or not await _mark(sm, me, conflict, "kept"):
        raise ActionRefused("already_resolved")


async def take_lost(
    sm: async_sessionmaker, me: ConsoleUser, conflict: ConflictEntry, row: RecordRow, *, base_version: int
) -> Done:
    """Make the value that lost the current one: a console change that syncs out like any other."""
    if conflict.status != "open":
        raise ActionRefused("already_resolved")
    if conflict.field == DELETED_FIELD:
        if conflict.lost is True:  # the delete lost to an edit: delete now
            op, fields = "delete", {}
        elif isinstance(conflict.lost, dict) and conflict.lost:  # an edit lost to a delete: bring it back
            op, fields = "upsert", dict(conflict.lost)
        else:
            raise ActionRefused("cannot_take")
    else:
        op, fields = "upsert", {conflict.field: conflict.lost}
    # Taken over what the page showed as current, not over a value a phone has written since.
    return await write(
        sm, me, row, fields, base_version=base_version, op=op, resolve_conflict=conflict, decided_on=conflict.field
    )
