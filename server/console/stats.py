"""The dashboard's figures (the big screen, 智慧数据大屏): cases received and closed, the closure
rate, overdue, by grid, category and week; visits by method and grid; follow-ups due; devices that
have not synced for three days. All limited to the user's grids."""

from __future__ import annotations

import datetime
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.console import queries
from server.console.auth import ConsoleUser
from server.console.web import LOCAL_TZ, local_now
from server.db.models import Grid, RecordRow
from sync.hlc import parse_stamp

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


async def dashboard(sm: async_sessionmaker, me: ConsoleUser, now: datetime.datetime | None = None) -> Dashboard:
    now = now or local_now()
    today = now.astimezone(LOCAL_TZ).date()
    out = Dashboard()
    scoped = queries._grid_scoped

    async with sm() as db:
        grid_names = dict((await db.execute(scoped(select(Grid.id, Grid.name), Grid.id, me))).all())
        # One narrow row per case: a few thousand tuples, cheaper than several JSON group-bys.
        case_rows = (
            await db.execute(
                scoped(
                    select(
                        RecordRow.grid_id,
                        RecordRow.fields["status"].as_string(),
                        RecordRow.fields["category"].as_string(),
                        RecordRow.meta[("grid_id", 1)].as_string(),
                        RecordRow.meta[("status", 1)].as_string(),
                    ).where(RecordRow.entity == "case", RecordRow.deleted.is_(False)),
                    RecordRow.grid_id,
                    me,
                )
            )
        ).all()
        method = RecordRow.fields["method"].as_string()
        visit_base = scoped(
            select().where(RecordRow.entity == "visit", RecordRow.deleted.is_(False)), RecordRow.grid_id, me
        )
        # One pass over the visits, by grid and method; both charts are sums of it.
        by_grid_method = (
            await db.execute(
                visit_base.add_columns(RecordRow.grid_id, method, func.count()).group_by(RecordRow.grid_id, method)
            )
        ).all()
        follow = RecordRow.fields["follow_up_on"].as_string()
        since, horizon = (d.isoformat() for d in queries.follow_up_window(today))
        due_stmt = visit_base.where(follow.is_not(None), follow <= horizon, follow >= since)
        out.followups_due = await db.scalar(due_stmt.add_columns(func.count())) or 0
        out.followups = list(
            (await db.scalars(due_stmt.add_columns(RecordRow).order_by(follow, RecordRow.id).limit(10))).all()
        )

    weeks = [_week_start(today) - datetime.timedelta(weeks=WEEKS - 1 - i) for i in range(WEEKS)]
    week_index = {w: i for i, w in enumerate(weeks)}
    received_w, closed_w = [0] * WEEKS, [0] * WEEKS
    per_grid: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    categories: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for grid_id, status, category, created_hlc, status_hlc in case_rows:
        statuses[status] += 1
        categories[category or "other"] += 1
        per_grid[grid_id][0] += 1
        created = _stamp_day(created_hlc)
        if created and _week_start(created) in week_index:
            received_w[week_index[_week_start(created)]] += 1
        if status == "closed":
            per_grid[grid_id][1] += 1
            closed_day = _stamp_day(status_hlc)
            if closed_day and _week_start(closed_day) in week_index:
                closed_w[week_index[_week_start(closed_day)]] += 1

    out.by_status = {s: statuses.get(s, 0) for s in queries.CASE_STATUSES}
    out.received = len(case_rows)
    out.closed = statuses.get("closed", 0)
    out.overdue = statuses.get("overdue", 0)
    out.open = out.received - out.closed
    out.by_grid = sorted(
        ((grid_names.get(g, g[:8]), r, c) for g, (r, c) in per_grid.items()), key=lambda t: (-t[1], t[0])
    )
    out.by_category = categories.most_common()
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

    stale_before = now - datetime.timedelta(days=STALE_DAYS)
    stale = await queries.devices(sm, me, stale_before=stale_before, page=1, size=10)
    out.stale_devices, out.stale = stale.total, stale.items
    return out
