"""Every read the console makes, each limited to the signed-in user's grids.

A supervisor's scope is the grids in ``user_grids``; an administrator's is every grid. A record,
log entry or device outside scope is treated as absent (``None``), so a handler answers 404 and a
URL edited to another grid's record reveals nothing.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import Select, and_, func, literal_column, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import load_only

from server.console.auth import ConsoleUser
from server.console.web import LOCAL_TZ, Page
from server.db.expressions import Instant, entity_is, json_text, not_indexed
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


# An export streams (see ``exports``); the bound is what one XLSX sheet holds (1,048,576 rows).
EXPORT_LIMIT = 1_000_000
EXPORT_CHUNK = 1_000


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


# A page counts the rows of its list up to this many past its own start: a year of 930,000 sync
# log rows or 200,000 visits is not counted for every page shown (the pager says "more than").
COUNT_AHEAD = 1_000


# PostgreSQL's planner has no statistics on a JSON condition (a visit not reviewed yet) and guesses
# a few hundred rows: for a count of 1,001 it then sorted every visit of the year (1.4 s) where the
# index walk stops at the 1,001st. A list read along its index says so (``walk``); sorting is
# then off for its transaction (what the sync API's pulls do on their read engine). An export of
# it the more so: asked for up to a million rows, PostgreSQL sorted the year before sending the
# first (the visits CSV began after some 80 s at a sub-district's scale), where the walk streams.
_WALK = text("SET LOCAL enable_sort = off")


async def _walk_along_index(db: AsyncSession, walk: bool) -> None:
    if walk and db.bind.dialect.name == "postgresql":
        await db.execute(_WALK)


async def _paginate(
    db: AsyncSession, stmt: Select, page: int, size: int, counted: bool = True, walk: bool = False
) -> Page:
    offset = (page - 1) * size
    await _walk_along_index(db, walk)
    if not counted:  # a glimpse (the case board's columns): the first rows, their count told elsewhere
        rows = (await db.execute(stmt.limit(size).offset(offset))).all()
        return Page(items=list(rows), number=page, size=size, total=offset + len(rows), more=len(rows) == size)
    bound = offset + COUNT_AHEAD
    # Counted in the list's own order: along its index the first rows that match come first (the
    # visits to review are the newest), where a scan in any order may pass half the table first.
    found = await db.scalar(select(func.count()).select_from(stmt.limit(bound + 1).subquery())) or 0
    rows = (await db.execute(stmt.limit(size).offset(offset))).all()
    return Page(items=list(rows), number=page, size=size, total=min(found, bound), more=found > bound)


async def _streamed(sm: async_sessionmaker, stmt: Select, walk: bool = False) -> AsyncIterator[list]:
    """An export's rows, ``EXPORT_CHUNK`` at a time, as the database's cursor hands them out:
    the server holds one chunk, however long the list. ``walk``: read along an index in the
    list's order, the first chunk out as soon as it is read."""
    async with sm() as db:
        await _walk_along_index(db, walk)
        result = await db.stream(stmt.limit(EXPORT_LIMIT).execution_options(yield_per=EXPORT_CHUNK))
        async for chunk in result.partitions():
            yield chunk


async def _listed(
    sm: async_sessionmaker, stmt: Select, page: int, size: int | None, counted: bool = True, walk: bool = False
) -> Any:
    """One page of ``stmt`` (a ``Page``), or with ``size`` None, for an export, every row as
    an async iterator of chunks (``async for chunk in ...``). ``walk``: the page is read along
    an index in the list's order, never sorted."""
    if size is None:
        return _streamed(sm, stmt, walk)
    async with sm() as db:
        return await _paginate(db, stmt, page, size, counted, walk)


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
        # A whole scope's users, in a form no index serves: SQLite would otherwise read their
        # year of entries through ix_sync_log_user_id and sort it, instead of reading ix_sync_log_at.
        users = SyncLogEntry.user_id if grid_id or user_id else not_indexed(SyncLogEntry.user_id)
        stmt = stmt.where(users.in_(_users_in_scope(me, grid_id)))
    if user_id:
        stmt = stmt.where(SyncLogEntry.user_id == user_id)
    if day:
        start, end = day_bounds(day)
        stmt = stmt.where(SyncLogEntry.at >= start, SyncLogEntry.at < end)
    # A page stops along ix_sync_log_at after its rows whatever the planner's guess; an export of
    # the year (930,000 rows) is read along it too, not sorted first. A grid's or a user's entries,
    # some thousands, are found through their users and sorted.
    return await _listed(sm, stmt, page, size, walk=size is None and not grid_id and not user_id)


# ---- records and their change log -----------------------------------------------------------


async def record(
    sm: async_sessionmaker, me: ConsoleUser, record_id: str, entity: str | None = None
) -> RecordRow | None:
    async with sm() as db:
        row = await db.get(RecordRow, record_id)
    if row is None or (entity and row.entity != entity) or not me.may_see_grid(row.grid_id):
        return None
    return row


async def addresses(sm: async_sessionmaker, me: ConsoleUser, ids) -> dict[str, str]:
    """household id -> its address (an export's column: no record decoded for it); found by id,
    the scope only checked, as in ``records_by_id``."""
    ids = sorted({i for i in ids if i})
    if not ids:
        return {}
    async with sm() as db:
        stmt = _grid_scoped(
            select(RecordRow.id, json_text(RecordRow.fields, "address")).where(RecordRow.id.in_(ids)),
            not_indexed(RecordRow.grid_id),
            me,
        )
        return {i: a or "" for i, a in (await db.execute(stmt)).all()}


async def records_by_id(sm: async_sessionmaker, me: ConsoleUser, ids) -> dict[str, RecordRow]:
    ids = sorted({i for i in ids if i})
    if not ids:
        return {}
    async with sm() as db:
        # Found by their ids; the scope only checked. Given an index to use, SQLite would read
        # every record of the scope's grids through ix_records_grid_seq instead (0.8 s for an
        # export's chunk of 1,000 at a year's scale, against some milliseconds).
        stmt = _grid_scoped(select(RecordRow).where(RecordRow.id.in_(ids)), not_indexed(RecordRow.grid_id), me)
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
    return await _listed(sm, stmt, page, size)


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


def _entity(name: str):
    # With a grid: found through ix_records_entity_grid (a grid's records, some thousands).
    assert name in ("visit", "case", "household"), name
    return RecordRow.entity == literal_column(f"'{name}'")


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
    last day), those whose follow-up falls in it, soonest first.

    A page is read along an index in its order (``ix_records_visit_time``, ``ix_records_follow_up``,
    ``ix_records_household``), not sorted out of every visit of the year; only a grid's visits,
    some 1,500, are found through the grid and sorted."""
    visited_at = json_text(RecordRow.fields, "visited_at")
    if grid_id:
        stmt = _grid_scoped(select(RecordRow).where(_entity("visit")), RecordRow.grid_id, me)
    else:
        # The entity as the partial indexes spell it, the scope in a form no index serves: SQLite
        # would otherwise find every visit of the scope through an index of grids and sort them all.
        stmt = _grid_scoped(
            select(RecordRow).where(entity_is(RecordRow.entity, "visit")), not_indexed(RecordRow.grid_id), me
        )
    stmt = stmt.where(RecordRow.deleted.is_(False))
    if due:
        follow = json_text(RecordRow.fields, "follow_up_on")
        stmt = stmt.where(follow.is_not(None), follow >= due[0].isoformat(), follow <= due[1].isoformat())
        stmt = stmt.order_by(follow, RecordRow.seq)
    else:
        stmt = stmt.order_by(Instant(visited_at).desc(), RecordRow.seq.desc())
    if review == "pending":
        stmt = stmt.where(_verdict() == "")
    elif review in ("approved", "flagged"):
        stmt = stmt.where(_verdict() == review)
    if grid_id:
        stmt = stmt.where(RecordRow.grid_id == grid_id)
    if method:
        stmt = stmt.where(RecordRow.fields["method"].as_string() == method)
    if household_id:  # ix_records_household
        stmt = stmt.where(
            entity_is(RecordRow.entity, "visit", "case"), json_text(RecordRow.fields, "household_id") == household_id
        )
    if size is None:  # an export of the visits' fields: their change stamps are not decoded
        stmt = stmt.options(load_only(RecordRow.id, RecordRow.grid_id, RecordRow.version, RecordRow.fields))
    return await _listed(sm, stmt, page, size, walk=not grid_id and not household_id)


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
    return await _listed(sm, stmt, page, size)


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
    return json_text(RecordRow.fields, "status")  # ix_records_case_status


async def case_counts(sm: async_sessionmaker, me: ConsoleUser, grid_id: str | None = None) -> dict[str, int]:
    status = _status()  # one expression object: PostgreSQL must see the same parameter in GROUP BY
    stmt = _grid_scoped(
        select(status, func.count()).where(_entity("case"), RecordRow.deleted.is_(False)).group_by(status),
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
    counted: bool = True,
) -> Page:
    # Without a grid, the scope in a form no index serves (see ``visits``): a status's cases are
    # read along ix_records_case_status, a household's along ix_records_household, not every
    # record of the scope's grids along ix_records_grid_seq.
    if grid_id:
        stmt = _grid_scoped(select(RecordRow).where(_entity("case")), RecordRow.grid_id, me)
    else:
        stmt = _grid_scoped(
            select(RecordRow).where(entity_is(RecordRow.entity, "case")), not_indexed(RecordRow.grid_id), me
        )
    stmt = stmt.where(RecordRow.deleted.is_(False)).order_by(RecordRow.seq.desc())
    if status:
        stmt = stmt.where(_status() == status)
    if grid_id:
        stmt = stmt.where(RecordRow.grid_id == grid_id)
    if category:
        stmt = stmt.where(RecordRow.fields["category"].as_string() == category)
    if household_id:  # ix_records_household
        stmt = stmt.where(
            entity_is(RecordRow.entity, "visit", "case"), json_text(RecordRow.fields, "household_id") == household_id
        )
    return await _listed(sm, stmt, page, size, counted, walk=bool(status) and not grid_id and not household_id)


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
    address = json_text(RecordRow.fields, "address")
    if grid_id:
        stmt = _grid_scoped(select(RecordRow).where(_entity("household")), RecordRow.grid_id, me)
        stmt = stmt.where(RecordRow.grid_id == grid_id)
    else:
        # Read along ix_records_address a page at a time (see ``visits``), not all sorted.
        stmt = _grid_scoped(
            select(RecordRow).where(entity_is(RecordRow.entity, "household")),
            not_indexed(RecordRow.grid_id),
            me,
        )
    stmt = stmt.where(RecordRow.deleted.is_(False)).order_by(address, RecordRow.id)
    if q:
        like = f"%{q.replace('%', '').replace('_', '')}%"
        stmt = stmt.where(
            or_(address.like(like), json_text(RecordRow.fields, "head_name").like(like))
        )
    return await _listed(sm, stmt, page, size, walk=not grid_id)


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
    return await _listed(sm, stmt, page, size)


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
