"""The dashboard's figures (the big screen, 智慧数据大屏): cases received and closed, the closure
rate, overdue, by grid, category and week; visits by method and grid; follow-ups due; devices that
have not synced for three days. All limited to the user's grids."""

from __future__ import annotations

import dataclasses
import datetime
import time
import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.console import queries
from server.console.auth import ConsoleUser
from server.console.web import LOCAL_TZ, local_now
from server.db.expressions import entity_is, json_text, not_indexed
from server.db.models import Counter as CounterRow
from server.db.models import Grid, RecordRow
from server.records.writes import CHANGE_SEQ
from sync.hlc import format_stamp, parse_stamp

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


# Figures counted over a year of records (the dashboard's, the case board's counts), kept for a
# scope while no record changes (``counters.change_seq``): counted again only after a write. The
# big screen, which reloads itself every minute, takes the dashboard's up to a minute old even so.
SCREEN_MAX_AGE_S = 60.0
_CACHE_SIZE = 64
_figures: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def dashboard(
    sm: async_sessionmaker, me: ConsoleUser, now: datetime.datetime | None = None, *, screen: bool = False
) -> Dashboard:
    now = now or local_now()
    today = now.astimezone(LOCAL_TZ).date()
    figures = await _kept(sm, ("dashboard", me.scope, today), lambda: _record_figures(sm, me, today),
                          max_age_s=SCREEN_MAX_AGE_S if screen else 0.0)
    out = dataclasses.replace(figures)
    stale_before = now - datetime.timedelta(days=STALE_DAYS)
    stale = await queries.devices(sm, me, stale_before=stale_before, page=1, size=10)
    out.stale_devices, out.stale = stale.total, stale.items
    return out


async def case_counts(sm: async_sessionmaker, me: ConsoleUser, grid_id: str | None = None) -> dict[str, int]:
    """The case board's count of each status: a grid's counted each time (a few hundred cases), a
    whole scope's (33,000 cases a year) kept until a record changes."""
    if grid_id:
        return await queries.case_counts(sm, me, grid_id=grid_id)
    return dict(await _kept(sm, ("case_counts", me.scope), lambda: queries.case_counts(sm, me)))


async def _kept(sm: async_sessionmaker, key: tuple, compute, max_age_s: float = 0.0):  # noqa: ANN001, ANN202
    """What ``compute()`` returns, computed again only when a record has changed since (the change
    counter moved) and the value kept is older than ``max_age_s``."""
    async with sm() as db:
        seq = await db.scalar(select(CounterRow.value).where(CounterRow.name == CHANGE_SEQ))
    kept = _figures.setdefault(sm, {})
    hit = kept.get(key)
    if hit and (hit[1] == seq or time.monotonic() - hit[0] < max_age_s):
        return hit[2]
    value = await compute()
    if len(kept) >= _CACHE_SIZE:
        kept.clear()
    kept[key] = (time.monotonic(), seq, value)
    return value


async def _record_figures(sm: async_sessionmaker, me: ConsoleUser, today: datetime.date) -> Dashboard:
    """Everything the dashboard counts in the records: grouped in the database (a few hundred
    rows back, not one per case), the weeks' cases alone read one by one."""
    out = Dashboard()
    scoped = queries._grid_scoped
    weeks = [_week_start(today) - datetime.timedelta(weeks=WEEKS - 1 - i) for i in range(WEEKS)]
    first_day = datetime.datetime.combine(weeks[0], datetime.time(), LOCAL_TZ)
    # Stamps sort as text, their wall time first: the weeks' cases are those stamped since this.
    since_stamp = format_stamp(int(first_day.timestamp() * 1000), 0, "")

    async with sm() as db:
        grid_names = dict((await db.execute(scoped(select(Grid.id, Grid.name), Grid.id, me))).all())
        status = json_text(RecordRow.fields, "status")
        category = json_text(RecordRow.fields, "category")
        case_base = scoped(
            select().where(RecordRow.entity == "case", RecordRow.deleted.is_(False)), RecordRow.grid_id, me
        )
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
                case_base.add_columns(status, created, status_changed).where(
                    or_(created >= since_stamp, and_(status == "closed", status_changed >= since_stamp))
                )
            )
        ).all()
        method = json_text(RecordRow.fields, "method")
        visit_base = scoped(
            select().where(RecordRow.entity == "visit", RecordRow.deleted.is_(False)), RecordRow.grid_id, me
        )
        # One pass over the visits, by grid and method; both charts are sums of it.
        by_grid_method = (
            await db.execute(
                visit_base.add_columns(RecordRow.grid_id, method, func.count()).group_by(RecordRow.grid_id, method)
            )
        ).all()
        # The follow-ups due: a range of ix_records_follow_up, not every visit.
        window = queries.follow_up_window(today)
        follow = json_text(RecordRow.fields, "follow_up_on")
        due = scoped(
            select().where(
                entity_is(RecordRow.entity, "visit"),
                RecordRow.deleted.is_(False),
                follow.is_not(None),
                follow >= window[0].isoformat(),
                follow <= window[1].isoformat(),
            ),
            not_indexed(RecordRow.grid_id),
            me,
        )
        out.followups_due = await db.scalar(due.add_columns(func.count())) or 0
        out.followups = list(
            (await db.scalars(due.add_columns(RecordRow).order_by(follow, RecordRow.seq).limit(10))).all()
        )

    week_index = {w: i for i, w in enumerate(weeks)}
    received_w, closed_w = [0] * WEEKS, [0] * WEEKS
    for case_status, created_hlc, status_hlc in week_rows:
        created_day = _stamp_day(created_hlc)
        if created_day and _week_start(created_day) in week_index:
            received_w[week_index[_week_start(created_day)]] += 1
        if case_status == "closed":
            closed_day = _stamp_day(status_hlc)
            if closed_day and _week_start(closed_day) in week_index:
                closed_w[week_index[_week_start(closed_day)]] += 1
    per_grid: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    categories: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for grid_id, case_status, case_category, n in case_groups:
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
    out.weeks = [w.strftime("%m-%d") for w in weeks]
    out.received_by_week, out.closed_by_week = received_w, closed_w
    methods: Counter[str] = Counter()
    visit_grids: Counter[str] = Counter()
    for grid_id, visit_method, n in by_grid_method:
        methods[visit_method or "?"] += n
        visit_grids[grid_id] += n
    out.visits_by_method = methods.most_common()
    out.visits_by_grid = sorted(
        ((grid_names.get(g, g[:8]), n) for g, n in visit_grids.items()), key=lambda t: (-t[1], t[0])
    )
    out.visits_total = sum(methods.values())
    return out
