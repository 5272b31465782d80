"""Every read the console makes, each limited to the signed-in user's grids.

A supervisor's scope is the grids in ``user_grids``; an administrator's is every grid. A record,
log entry or device outside scope is treated as absent (``None``), so a handler answers 404 and a
URL edited to another grid's record reveals nothing.
"""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from server.console.auth import ConsoleUser
from server.console.web import LOCAL_TZ, Page
from server.db.models import (
    ChangeLogEntry,
    ConflictEntry,
    Device,
    Grid,
    RecordRow,
    SyncLogEntry,
    User,
    UserGrid,
)

CASE_STATUSES = ("reported", "accepted", "dispatched", "overdue", "resolved", "closed")
REVIEW_STATES = ("pending", "approved", "flagged")
FOLLOW_UP_AHEAD_DAYS = 7  # "due" means from a month overdue to a week ahead
FOLLOW_UP_BEHIND_DAYS = 30


def follow_up_window(today: datetime.date) -> tuple[datetime.date, datetime.date]:
    return today - datetime.timedelta(days=FOLLOW_UP_BEHIND_DAYS), today + datetime.timedelta(days=FOLLOW_UP_AHEAD_DAYS)


EXPORT_LIMIT = 100_000


def _grid_scoped(stmt: Select, column, me: ConsoleUser) -> Select:
    return stmt if me.scope is None else stmt.where(column.in_(sorted(me.scope)))


def _users_in_scope(me: ConsoleUser, grid_id: str | None = None):
    """A subquery of the user ids assigned to the grids in scope (and to ``grid_id``, if named)."""
    stmt = select(UserGrid.user_id)
    if me.scope is not None:
        stmt = stmt.where(UserGrid.grid_id.in_(sorted(me.scope)))
    if grid_id:
        stmt = stmt.where(UserGrid.grid_id == grid_id)
    return stmt


async def _paginate(db: AsyncSession, stmt: Select, page: int, size: int | None) -> Page:
    if size is None:  # an export: every row, bounded
        rows = (await db.execute(stmt.limit(EXPORT_LIMIT))).all()
        return Page(items=list(rows), number=1, size=max(1, len(rows)), total=len(rows))
    total = await db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    rows = (await db.execute(stmt.limit(size).offset((page - 1) * size))).all()
    return Page(items=list(rows), number=page, size=size, total=total or 0)


def day_bounds(day: datetime.date) -> tuple[datetime.datetime, datetime.datetime]:
    """A local calendar day as a UTC half-open interval."""
    start = datetime.datetime.combine(day, datetime.time(), LOCAL_TZ).astimezone(datetime.UTC)
    return start, start + datetime.timedelta(days=1)


# ---- grids and users a filter may offer ----------------------------------------------------


async def grids_in_scope(sm: async_sessionmaker, me: ConsoleUser) -> list[Grid]:
    async with sm() as db:
        stmt = _grid_scoped(select(Grid).order_by(Grid.community, Grid.name), Grid.id, me)
        return list((await db.scalars(stmt)).all())


async def users_in_scope(sm: async_sessionmaker, me: ConsoleUser) -> list[User]:
    async with sm() as db:
        stmt = select(User).order_by(User.name)
        if me.scope is not None:
            stmt = stmt.where(User.id.in_(_users_in_scope(me)))
        return list((await db.scalars(stmt)).all())


async def names(db: AsyncSession, model, ids) -> dict[str, str]:
    """id -> display name for users (name) or devices (label) or grids (name)."""
    ids = {i for i in ids if i}
    if not ids:
        return {}
    column = model.label if model is Device else model.name
    rows = await db.execute(select(model.id, column).where(model.id.in_(sorted(ids))))
    return {i: n for i, n in rows.all()}


# ---- sync log -------------------------------------------------------------------------------


async def sync_log(
    sm: async_sessionmaker,
    me: ConsoleUser,
    *,
    grid_id: str | None = None,
    user_id: str | None = None,
    day: datetime.date | None = None,
    page: int = 1,
    size: int | None = 50,
) -> Page:
    stmt = (
        select(SyncLogEntry, User.name, Device.label)
        .outerjoin(User, User.id == SyncLogEntry.user_id)
        .outerjoin(Device, Device.id == SyncLogEntry.device_id)
        .order_by(SyncLogEntry.at.desc(), SyncLogEntry.id.desc())
    )
    if me.scope is not None or grid_id:
        stmt = stmt.where(SyncLogEntry.user_id.in_(_users_in_scope(me, grid_id)))
    if user_id:
        stmt = stmt.where(SyncLogEntry.user_id == user_id)
    if day:
        start, end = day_bounds(day)
        stmt = stmt.where(SyncLogEntry.at >= start, SyncLogEntry.at < end)
    async with sm() as db:
        return await _paginate(db, stmt, page, size)


# ---- records and their change log -----------------------------------------------------------


async def record(
    sm: async_sessionmaker, me: ConsoleUser, record_id: str, entity: str | None = None
) -> RecordRow | None:
    async with sm() as db:
        row = await db.get(RecordRow, record_id)
    if row is None or (entity and row.entity != entity) or not me.may_see_grid(row.grid_id):
        return None
    return row


async def records_by_id(sm: async_sessionmaker, me: ConsoleUser, ids) -> dict[str, RecordRow]:
    ids = sorted({i for i in ids if i})
    if not ids:
        return {}
    async with sm() as db:
        stmt = _grid_scoped(select(RecordRow).where(RecordRow.id.in_(ids)), RecordRow.grid_id, me)
        return {r.id: r for r in (await db.scalars(stmt)).all()}


async def change_log(
    sm: async_sessionmaker, me: ConsoleUser, record_id: str, page: int = 1, size: int | None = 50
) -> Page:
    stmt = _grid_scoped(
        select(ChangeLogEntry, User.name, Device.label)
        .outerjoin(User, User.id == ChangeLogEntry.user_id)
        .outerjoin(Device, Device.id == ChangeLogEntry.device_id)
        .where(ChangeLogEntry.record_id == record_id)
        .order_by(ChangeLogEntry.seq.desc()),
        ChangeLogEntry.grid_id,
        me,
    )
    async with sm() as db:
        return await _paginate(db, stmt, page, size)


async def authors(sm: async_sessionmaker, record_ids) -> dict[str, str]:
    """record id -> the name of the user whose change created it."""
    ids = sorted(set(record_ids))
    if not ids:
        return {}
    async with sm() as db:
        rows = await db.execute(
            select(ChangeLogEntry.record_id, User.name)
            .join(User, User.id == ChangeLogEntry.user_id)
            .where(ChangeLogEntry.record_id.in_(ids), ChangeLogEntry.version == 1)
        )
        return {rid: name for rid, name in rows.all()}


# ---- visits -----------------------------------------------------------------------------------


class _Instant(FunctionElement):
    """An ISO 8601 time with a UTC offset, as the moment it names: as text, "09:00+08:00" sorts after
    "02:00+00:00", an hour earlier, and phones send their own zone's offset."""

    inherit_cache = True


@compiles(_Instant, "postgresql")
def _instant_on_postgresql(element, compiler, **kw):  # noqa: ANN001, ANN202
    return f"CAST({compiler.process(element.clauses, **kw)} AS TIMESTAMPTZ)"


@compiles(_Instant, "sqlite")
def _instant_on_sqlite(element, compiler, **kw):  # noqa: ANN001, ANN202
    # SQLite's date functions read the offset and answer in UTC (to the second; seq breaks ties).
    return f"datetime({compiler.process(element.clauses, **kw)})"


def _verdict():
    return func.coalesce(RecordRow.fields[("review", "verdict")].as_string(), "")


async def visits(
    sm: async_sessionmaker,
    me: ConsoleUser,
    *,
    review: str | None = "pending",
    grid_id: str | None = None,
    method: str | None = None,
    due: tuple[datetime.date, datetime.date] | None = None,
    household_id: str | None = None,
    page: int = 1,
    size: int | None = 50,
) -> Page:
    """Visits newest first (of one household, with ``household_id``); with ``due`` (first day,
    last day), those whose follow-up falls in it, soonest first."""
    stmt = _grid_scoped(
        select(RecordRow).where(RecordRow.entity == "visit", RecordRow.deleted.is_(False)), RecordRow.grid_id, me
    )
    if due:
        follow = RecordRow.fields["follow_up_on"].as_string()
        stmt = stmt.where(follow.is_not(None), follow >= due[0].isoformat(), follow <= due[1].isoformat())
        stmt = stmt.order_by(follow, RecordRow.seq)
    else:
        stmt = stmt.order_by(_Instant(RecordRow.fields["visited_at"].as_string()).desc(), RecordRow.seq.desc())
    if review == "pending":
        stmt = stmt.where(_verdict() == "")
    elif review in ("approved", "flagged"):
        stmt = stmt.where(_verdict() == review)
    if grid_id:
        stmt = stmt.where(RecordRow.grid_id == grid_id)
    if method:
        stmt = stmt.where(RecordRow.fields["method"].as_string() == method)
    if household_id:
        stmt = stmt.where(RecordRow.fields["household_id"].as_string() == household_id)
    async with sm() as db:
        return await _paginate(db, stmt, page, size)


# ---- conflicts --------------------------------------------------------------------------------


async def conflicts(
    sm: async_sessionmaker, me: ConsoleUser, *, state: str = "open", page: int = 1, size: int | None = 50
) -> Page:
    stmt = _grid_scoped(
        select(ConflictEntry, User.name, Device.label)
        .outerjoin(User, User.id == ConflictEntry.user_id)
        .outerjoin(Device, Device.id == ConflictEntry.device_id)
        .order_by(ConflictEntry.id.desc()),
        ConflictEntry.grid_id,
        me,
    )
    stmt = stmt.where(ConflictEntry.status == "open") if state == "open" else stmt.where(ConflictEntry.status != "open")
    async with sm() as db:
        return await _paginate(db, stmt, page, size)


async def conflict(sm: async_sessionmaker, me: ConsoleUser, conflict_id: int) -> ConflictEntry | None:
    if not 0 < conflict_id < 2**63:  # the path takes any integer; the databases' keys are 64-bit
        return None
    async with sm() as db:
        row = await db.get(ConflictEntry, conflict_id)
    if row is None or not me.may_see_grid(row.grid_id):
        return None
    return row


# ---- cases ------------------------------------------------------------------------------------


def _status():
    return RecordRow.fields["status"].as_string()


async def case_counts(sm: async_sessionmaker, me: ConsoleUser, grid_id: str | None = None) -> dict[str, int]:
    status = _status()  # one expression object: PostgreSQL must see the same parameter in GROUP BY
    stmt = _grid_scoped(
        select(status, func.count()).where(RecordRow.entity == "case", RecordRow.deleted.is_(False)).group_by(status),
        RecordRow.grid_id,
        me,
    )
    if grid_id:
        stmt = stmt.where(RecordRow.grid_id == grid_id)
    async with sm() as db:
        counts = dict((await db.execute(stmt)).all())
    return {s: counts.get(s, 0) for s in CASE_STATUSES}


async def cases(
    sm: async_sessionmaker,
    me: ConsoleUser,
    *,
    status: str | None = None,
    grid_id: str | None = None,
    category: str | None = None,
    household_id: str | None = None,
    page: int = 1,
    size: int | None = 50,
) -> Page:
    stmt = _grid_scoped(
        select(RecordRow)
        .where(RecordRow.entity == "case", RecordRow.deleted.is_(False))
        .order_by(RecordRow.seq.desc()),
        RecordRow.grid_id,
        me,
    )
    if status:
        stmt = stmt.where(_status() == status)
    if grid_id:
        stmt = stmt.where(RecordRow.grid_id == grid_id)
    if category:
        stmt = stmt.where(RecordRow.fields["category"].as_string() == category)
    if household_id:
        stmt = stmt.where(RecordRow.fields["household_id"].as_string() == household_id)
    async with sm() as db:
        return await _paginate(db, stmt, page, size)


# ---- households -------------------------------------------------------------------------------


async def households(
    sm: async_sessionmaker,
    me: ConsoleUser,
    *,
    grid_id: str | None = None,
    q: str | None = None,
    page: int = 1,
    size: int | None = 50,
) -> Page:
    stmt = _grid_scoped(
        select(RecordRow)
        .where(RecordRow.entity == "household", RecordRow.deleted.is_(False))
        .order_by(RecordRow.fields["address"].as_string(), RecordRow.id),
        RecordRow.grid_id,
        me,
    )
    if grid_id:
        stmt = stmt.where(RecordRow.grid_id == grid_id)
    if q:
        like = f"%{q.replace('%', '').replace('_', '')}%"
        stmt = stmt.where(
            or_(
                RecordRow.fields["address"].as_string().like(like), RecordRow.fields["head_name"].as_string().like(like)
            )
        )
    async with sm() as db:
        return await _paginate(db, stmt, page, size)


# ---- devices ----------------------------------------------------------------------------------


async def devices(
    sm: async_sessionmaker,
    me: ConsoleUser,
    *,
    status: str | None = None,
    stale_before: datetime.datetime | None = None,
    page: int = 1,
    size: int | None = 50,
) -> Page:
    open_conflicts = (
        select(ConflictEntry.device_id, func.count().label("n"))
        .where(ConflictEntry.status == "open")
        .group_by(ConflictEntry.device_id)
        .subquery()
    )
    stmt = (
        select(Device, User.name, func.coalesce(open_conflicts.c.n, 0))
        .join(User, User.id == Device.user_id)
        .outerjoin(open_conflicts, open_conflicts.c.device_id == Device.id)
        .order_by(Device.last_sync_at.desc().nulls_last(), Device.enrolled_at.desc())
    )
    if me.scope is not None:
        stmt = stmt.where(Device.user_id.in_(_users_in_scope(me)))
    if status:
        stmt = stmt.where(Device.status == status)
    if stale_before is not None:
        stmt = stmt.where(
            Device.status == "active",
            or_(
                Device.last_sync_at < stale_before,
                and_(Device.last_sync_at.is_(None), Device.enrolled_at < stale_before),
            ),
        )
    async with sm() as db:
        return await _paginate(db, stmt, page, size)


async def device(sm: async_sessionmaker, me: ConsoleUser, device_id: str) -> Device | None:
    async with sm() as db:
        row = await db.get(Device, device_id)
        if row is None:
            return None
        if me.scope is not None:
            grids = set((await db.scalars(select(UserGrid.grid_id).where(UserGrid.user_id == row.user_id))).all())
            if not grids & me.scope:
                return None
    return row


def json_field(row: RecordRow, name: str, default: Any = None) -> Any:
    return (row.fields or {}).get(name, default)
