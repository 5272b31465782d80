"""The dashboard's figures (the big screen, 智慧数据大屏): cases received and closed, the closure
rate, overdue, by grid, category and week; visits by method and grid; follow-ups due; devices that
have not synced for three days. All limited to the user's grids."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.console import queries
from server.console.auth import ConsoleUser
from server.console.web import LOCAL_TZ, local_now
from server.db.expressions import entity_is, json_text, not_indexed
from server.db.models import Counter as CounterRow
from server.db.models import RecordRow
from server.records.writes import CHANGE_SEQ
from sync.hlc import format_stamp, parse_stamp

log = logging.getLogger(__name__)

WEEKS = 12
STALE_DAYS = 3


@dataclass
class Dashboard:
    received: int = 0
    closed: int = 0
    overdue: int = 0
    open: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_grid: list[tuple[str, int, int]] = field(default_factory=list)  # (grid name, received, closed)
    by_category: list[tuple[str, int]] = field(default_factory=list)
    weeks: list[str] = field(default_factory=list)
    received_by_week: list[int] = field(default_factory=list)
    closed_by_week: list[int] = field(default_factory=list)
    visits_total: int = 0
    visits_by_method: list[tuple[str, int]] = field(default_factory=list)
    visits_by_grid: list[tuple[str, int]] = field(default_factory=list)
    followups_due: int = 0
    followups: list = field(default_factory=list)
    stale_devices: int = 0
    stale: list = field(default_factory=list)
    counted_at: datetime.datetime | None = None  # when the year's figures were last known current

    @property
    def closure_rate(self) -> float:
        return self.closed / self.received if self.received else 0.0


def _week_start(day: datetime.date) -> datetime.date:
    return day - datetime.timedelta(days=day.weekday())


def _stamp_day(stamp: str | None) -> datetime.date | None:
    if not stamp:
        return None
    try:
        wall = parse_stamp(stamp).wall_ms
    except ValueError:
        return None
    return datetime.datetime.fromtimestamp(wall / 1000, LOCAL_TZ).date()


# The case board's count of each status over a whole scope, kept while no record changes
# (``counters.change_seq``): counted again only after a write.
_CACHE_SIZE = 64
_figures: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# The dashboard's year of figures: counted again in the background, at most once a minute.
#
# Counting the year (33,000 cases by grid, status and category, the weeks' cases, 200,000 visits by
# grid and method) costs 3-4 s at a sub-district's scale, and in a live sub-district a record
# changes every few seconds: figures kept "until a record changes" were counted again for nearly
# every view, while the supervisor waited. Instead:
# - the figures are counted for every grid at once and kept per process; a scope's (a
#   supervisor's grids) are sums over its grids, so one count serves every supervisor;
# - figures younger than ``RECOUNT_AFTER_S`` are shown as they are; older ones, when a record
#   changed since (or the day turned: the weeks move), are shown at once while a count runs in
#   the background for the next view: a view never waits for the count, the database counts
#   the year at most once a minute however many people look, and the page says when the figures
#   were counted;
# - figures older than ``WAIT_AFTER_S`` (nobody looked for a while) are counted again before
#   the page is shown, so the figures shown are never more than that old.
# Not chosen: keeping the counts up to date with every write. It needs each changed record's
# previous contribution (its status, category, grid, the stamp of its creation and closure): the
# change log keeps fields' values before and after but not their stamps, so the write path would
# have to maintain the tallies itself, in every process's transaction, for a summary screen;
# a wrong increment there would stay wrong until a recount. Nor counting over a bounded window:
# the figures are the year's (cases received, the closure rate), and a window changes them.
# The first follow-ups due and the silent phones are read for each view (cheap, current).
RECOUNT_AFTER_S = 60.0
WAIT_AFTER_S = 600.0
_monotonic = time.monotonic  # the tests' clock


@dataclass(frozen=True)
class _Year:
    """Everything the dashboard counts in a year of records, by grid."""

    today: datetime.date
    seq: int | None  # the change counter when counted
    weeks: list[datetime.date]
    cases: list[tuple[str, str | None, str | None, int]]  # (grid, status, category, count)
    received_by_week: dict[str, list[int]]
    closed_by_week: dict[str, list[int]]
    visits: list[tuple[str, str | None, int]]  # (grid, method, count)
    followups_due: dict[str, int]  # grid -> visits whose follow-up is due


@dataclass
class _Kept:
    year: _Year | None = None
    checked: float = 0.0  # monotonic time when the year's figures were last known current
    shown_at: datetime.datetime | None = None  # the same, as the page says it
    recount: asyncio.Task | None = None


_years: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_recounts: set[asyncio.Task] = set()


async def dashboard(
    sm: async_sessionmaker,
    me: ConsoleUser,
    now: datetime.datetime | None = None,
    grid_names: dict[str, str] | None = None,
) -> Dashboard:
    """The dashboard for ``me`` (``grid_names``: the grids in scope, id -> name, if read already):
    the year's figures as last counted (``counted_at`` says when; see ``RECOUNT_AFTER_S``), the
    first follow-ups due and the silent phones as they are now."""
    now = now or local_now()
    today = now.astimezone(LOCAL_TZ).date()
    year, as_of = await _year(sm, today)
    if grid_names is None:
        grid_names = {g.id: g.name for g in await queries.grids_in_scope(sm, me)}
    out = _scope_figures(year, me, grid_names)
    out.counted_at = as_of
    out.followups = await _first_followups(sm, me, today)
    stale_before = now - datetime.timedelta(days=STALE_DAYS)
    stale = await queries.devices(sm, me, stale_before=stale_before, page=1, size=10)
    out.stale_devices, out.stale = stale.total, stale.items
    return out


async def _year(sm: async_sessionmaker, today: datetime.date) -> tuple[_Year, datetime.datetime]:
    """The year's figures and the time they were last known current (see ``RECOUNT_AFTER_S``)."""
    kept = _years.setdefault(sm, _Kept())
    age = _monotonic() - kept.checked
    if kept.year is not None and age < RECOUNT_AFTER_S and kept.year.today == today:
        return kept.year, kept.shown_at
    async with sm() as db:
        seq = await db.scalar(select(CounterRow.value).where(CounterRow.name == CHANGE_SEQ))
    if kept.year is not None and kept.year.seq == seq and kept.year.today == today:
        kept.checked, kept.shown_at = _monotonic(), local_now()  # nothing changed: current still
        return kept.year, kept.shown_at
    if kept.recount is None:
        kept.recount = asyncio.create_task(_recount(sm, kept, today, seq))
        _recounts.add(kept.recount)
        kept.recount.add_done_callback(_recounted)
    if kept.year is None or age >= WAIT_AFTER_S:
        await asyncio.shield(kept.recount)
    return kept.year, kept.shown_at


async def _recount(sm: async_sessionmaker, kept: _Kept, today: datetime.date, seq: int | None) -> None:
    try:
        started, shown = _monotonic(), local_now()
        kept.year = await _count_year(sm, today, seq)
        kept.checked, kept.shown_at = started, shown
    finally:
        kept.recount = None


def _recounted(task: asyncio.Task) -> None:
    _recounts.discard(task)
    if not task.cancelled() and task.exception() is not None:  # the next view counts again
        log.error("the dashboard's count failed", exc_info=task.exception())


async def stop_recounts() -> None:
    """Cancel the counts running in the background (the app is stopping: its engine goes next)."""
    for task in list(_recounts):
        task.cancel()
    for task in list(_recounts):
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def case_counts(sm: async_sessionmaker, me: ConsoleUser, grid_id: str | None = None) -> dict[str, int]:
    """The case board's count of each status: a grid's counted each time (a few hundred cases), a
    whole scope's (33,000 cases a year) kept until a record changes."""
    if grid_id:
        return await queries.case_counts(sm, me, grid_id=grid_id)
    return dict(await _kept(sm, ("case_counts", me.scope), lambda: queries.case_counts(sm, me)))


async def _kept(sm: async_sessionmaker, key: tuple, compute):
    """What ``compute()`` returns, computed again only when a record has changed since (the change
    counter moved)."""
    async with sm() as db:
        seq = await db.scalar(select(CounterRow.value).where(CounterRow.name == CHANGE_SEQ))
    kept = _figures.setdefault(sm, {})
    hit = kept.get(key)
    if hit and hit[0] == seq:
        return hit[1]
    value = await compute()
    if len(kept) >= _CACHE_SIZE:
        kept.clear()
    kept[key] = (seq, value)
    return value


def _followups(today: datetime.date, me: ConsoleUser | None = None) -> Select:
    """The follow-ups due (in ``me``'s scope): a range of ix_records_follow_up."""
    window = queries.follow_up_window(today)
    follow = json_text(RecordRow.fields, "follow_up_on")
    due = select().where(
        entity_is(RecordRow.entity, "visit"),
        RecordRow.deleted.is_(False),
        follow.is_not(None),
        follow >= window[0].isoformat(),
        follow <= window[1].isoformat(),
    )
    return due if me is None else queries._grid_scoped(due, not_indexed(RecordRow.grid_id), me)


async def _first_followups(sm: async_sessionmaker, me: ConsoleUser, today: datetime.date) -> list[RecordRow]:
    """The first ten follow-ups due, soonest first: the start of the index's range, read for each view."""
    follow = json_text(RecordRow.fields, "follow_up_on")
    async with sm() as db:
        stmt = _followups(today, me).add_columns(RecordRow).order_by(follow, RecordRow.seq).limit(10)
        return list((await db.scalars(stmt)).all())


async def _count_year(sm: async_sessionmaker, today: datetime.date, seq: int | None) -> _Year:
    """Everything the dashboard counts in the year's records, by grid: grouped in the database (a
    few thousand rows back, not one per case), the weeks' cases alone read one by one."""
    weeks = [_week_start(today) - datetime.timedelta(weeks=WEEKS - 1 - i) for i in range(WEEKS)]
    first_day = datetime.datetime.combine(weeks[0], datetime.time(), LOCAL_TZ)
    # Stamps sort as text, their wall time first: the weeks' cases are those stamped since this.
    since_stamp = format_stamp(int(first_day.timestamp() * 1000), 0, "")

    async with sm() as db:
        status = json_text(RecordRow.fields, "status")
        category = json_text(RecordRow.fields, "category")
        case_base = select().where(RecordRow.entity == "case", RecordRow.deleted.is_(False))
        case_groups = (
            await db.execute(
                case_base.add_columns(RecordRow.grid_id, status, category, func.count()).group_by(
                    RecordRow.grid_id, status, category
                )
            )
        ).all()
        created = RecordRow.meta[("grid_id", 1)].as_string()
        status_changed = RecordRow.meta[("status", 1)].as_string()
        week_rows = (
            await db.execute(
                case_base.add_columns(RecordRow.grid_id, status, created, status_changed).where(
                    or_(created >= since_stamp, and_(status == "closed", status_changed >= since_stamp))
                )
            )
        ).all()
        method = json_text(RecordRow.fields, "method")
        visit_base = select().where(RecordRow.entity == "visit", RecordRow.deleted.is_(False))
        # One pass over the visits, by grid and method; both charts are sums of it.
        by_grid_method = (
            await db.execute(
                visit_base.add_columns(RecordRow.grid_id, method, func.count()).group_by(RecordRow.grid_id, method)
            )
        ).all()
        # Some thousands in the window, each checked in its record (70 ms at a year's scale).
        followups = (
            await db.execute(_followups(today).add_columns(RecordRow.grid_id, func.count()).group_by(RecordRow.grid_id))
        ).all()

    week_index = {w: i for i, w in enumerate(weeks)}
    received_w: dict[str, list[int]] = defaultdict(lambda: [0] * WEEKS)
    closed_w: dict[str, list[int]] = defaultdict(lambda: [0] * WEEKS)
    for grid_id, case_status, created_hlc, status_hlc in week_rows:
        created_day = _stamp_day(created_hlc)
        if created_day and _week_start(created_day) in week_index:
            received_w[grid_id][week_index[_week_start(created_day)]] += 1
        if case_status == "closed":
            closed_day = _stamp_day(status_hlc)
            if closed_day and _week_start(closed_day) in week_index:
                closed_w[grid_id][week_index[_week_start(closed_day)]] += 1
    return _Year(
        today=today,
        seq=seq,
        weeks=weeks,
        cases=[tuple(row) for row in case_groups],
        received_by_week=dict(received_w),
        closed_by_week=dict(closed_w),
        visits=[tuple(row) for row in by_grid_method],
        followups_due=dict(followups),
    )


def _scope_figures(year: _Year, me: ConsoleUser, grid_names: dict[str, str]) -> Dashboard:
    """The year's figures of the grids in ``me``'s scope (``grid_names``: those grids)."""
    out = Dashboard()
    scope = me.scope

    def mine(grid_id: str) -> bool:
        return scope is None or grid_id in scope

    received_w, closed_w = [0] * WEEKS, [0] * WEEKS
    for grid_id, counts in year.received_by_week.items():
        if mine(grid_id):
            received_w = [a + b for a, b in zip(received_w, counts, strict=True)]
    for grid_id, counts in year.closed_by_week.items():
        if mine(grid_id):
            closed_w = [a + b for a, b in zip(closed_w, counts, strict=True)]
    per_grid: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    categories: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for grid_id, case_status, case_category, n in year.cases:
        if not mine(grid_id):
            continue
        statuses[case_status] += n
        categories[case_category or "other"] += n
        per_grid[grid_id][0] += n
        if case_status == "closed":
            per_grid[grid_id][1] += n

    out.by_status = {s: statuses.get(s, 0) for s in queries.CASE_STATUSES}
    out.received = sum(statuses.values())
    out.closed = statuses.get("closed", 0)
    out.overdue = statuses.get("overdue", 0)
    out.open = out.received - out.closed
    out.by_grid = sorted(
        ((grid_names.get(g, g[:8]), r, c) for g, (r, c) in per_grid.items()), key=lambda t: (-t[1], t[0])
    )
    out.by_category = sorted(categories.items(), key=lambda t: (-t[1], t[0]))
    out.weeks = [w.strftime("%m-%d") for w in year.weeks]
    out.received_by_week, out.closed_by_week = received_w, closed_w
    methods: Counter[str] = Counter()
    visit_grids: Counter[str] = Counter()
    for grid_id, visit_method, n in year.visits:
        if not mine(grid_id):
            continue
        methods[visit_method or "?"] += n
        visit_grids[grid_id] += n
    out.visits_by_method = methods.most_common()
    out.visits_by_grid = sorted(
        ((grid_names.get(g, g[:8]), n) for g, n in visit_grids.items()), key=lambda t: (-t[1], t[0])
    )
    out.visits_total = sum(methods.values())
    out.followups_due = sum(n for grid_id, n in year.followups_due.items() if mine(grid_id))
    return out
