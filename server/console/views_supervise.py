"""The supervisor's pages: dashboard, sync log, change log, households, visits to review,
conflicts and the case board. Every handler takes ``me`` and passes it to the scoped queries;
a record outside the user's grids is answered 404, exactly like one that does not exist."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery, QueryParameter

from server.console import actions, charts, queries, stats
from server.console.auth import ConsoleUser
from server.console.exports import FORMATS, export_response
from server.console.i18n import translator
from server.console.thumbs import thumbnail
from server.console.web import (
    PAGE_SIZE,
    fmt_hlc,
    fmt_time,
    language,
    local_today,
    page_number,
    redirect,
    render,
    sessionmaker_of,
    writer_of,
)
from server.db.models import Device, RecordRow, User
from shared_schema.entities import CaseCategory, VisitMethod

Query = FromQuery[str | None]


def _export(fmt: str | None) -> bool:
    return fmt in FORMATS


def _day(raw: str | None) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def _int(raw: Any, default: int = -1) -> int:
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        return default


def _seen_version(form: Any, row: RecordRow) -> int:
    """The record version the page showed (the form sends it back): the console's edit is
    concurrent with what changed since. A value no page could have shown counts as none sent."""
    version = _int(form.get("version"), row.version)
    return version if 1 <= version <= row.version else row.version


async def _grid_names(request: Request, me: NamedDependency[ConsoleUser]) -> dict[str, str]:
    return {g.id: g.name for g in await queries.grids_in_scope(sessionmaker_of(request), me)}


def _scoped_choice(value: str | None, allowed: dict) -> str | None:
    """A filter value only when it names something in scope (else no filter: never a leak)."""
    return value if value in allowed else None


# ---- dashboard ------------------------------------------------------------------------------


@get("/", name="console:dashboard")
async def dashboard(request: Request, me: NamedDependency[ConsoleUser], screen: Query = None) -> Response:
    """The big screen: the closed loop's figures and charts for the user's grids."""
    _ = translator(language(request))
    grids = await _grid_names(request, me)
    d = await stats.dashboard(sessionmaker_of(request), me, grid_names=grids)
    figures = {
        "status": charts.hbars([(_(f"case.status.{s}"), n) for s, n in d.by_status.items()], colour=charts.PALETTE[0]),
        "grid": charts.columns(
            [name for name, _r, _c in d.by_grid[:12]],
            [
                (_("dash.received"), [r for _n, r, _c in d.by_grid[:12]]),
                (_("dash.closed"), [c for *_x, c in d.by_grid[:12]]),
            ],
        ),
        "category": charts.hbars([(_(f"case.category.{c}"), n) for c, n in d.by_category], colour=charts.PALETTE[3]),
        "week": charts.columns(
            d.weeks, [(_("dash.received"), d.received_by_week), (_("dash.closed"), d.closed_by_week)]
        ),
        "method": charts.hbars([(_(f"visit.method.{m}"), n) for m, n in d.visits_by_method], colour=charts.PALETTE[2]),
        "vgrid": charts.hbars(d.visits_by_grid[:15], colour=charts.PALETTE[5]),
        "rate": charts.donut(d.closure_rate, label=_("dash.closure_rate")),
    }
    households = await queries.records_by_id(
        sessionmaker_of(request), me, [(v.fields or {}).get("household_id") for v in d.followups]
    )
    return render(
        request,
        "dashboard.html",
        d=d,
        figures=figures,
        grids=grids,
        households=households,
        screen=screen == "1",
    )


# ---- sync log -------------------------------------------------------------------------------


@get("/sync-log", name="console:sync-log")
async def sync_log(
    request: Request,
    me: NamedDependency[ConsoleUser],
    grid: Query = None,
    user: Query = None,
    day: Query = None,
    page: Query = None,
    format: Query = None,
) -> Response:
    """Every push and pull, by device, user and time, with counts, errors and app version."""
    sm = sessionmaker_of(request)
    grids = await _grid_names(request, me)
    users = {u.id: u.name for u in await queries.users_in_scope(sm, me)}
    grid, user = _scoped_choice(grid, grids), _scoped_choice(user, users)
    result = await queries.sync_log(
        sm,
        me,
        grid_id=grid,
        user_id=user,
        day=_day(day),
        page=page_number(page),
        size=None if _export(format) else PAGE_SIZE,
    )
    if _export(format):
        _ = translator(language(request))
        headers = [
            _(k)
            for k in (
                "col.time",
                "col.kind",
                "col.user",
                "col.device",
                "col.app_version",
                "col.mutations",
                "col.applied",
                "col.merged",
                "col.rejected",
                "col.changes",
                "col.error",
                "col.duration",
            )
        ]
        rows = (
            [
                fmt_time(e.at),
                e.kind,
                n or "",
                d or "",
                e.app_version,
                e.mutations,
                e.applied,
                e.merged,
                e.rejected,
                e.changes,
                e.error or "",
                e.duration_ms,
            ]
            async for chunk in result
            for e, n, d in chunk
        )
        return export_response(format, "sync-log", headers, rows)
    return render(
        request,
        "sync_log.html",
        page=result,
        grids=grids,
        users=users,
        f={"grid": grid, "user": user, "day": day if _day(day) else ""},
    )


# ---- records: change log and households -----------------------------------------------------


@get("/records/{record_id:str}/changes", name="console:changes")
async def change_log(
    request: Request,
    me: NamedDependency[ConsoleUser],
    record_id: FromPath[str],
    page: Query = None,
    format: Query = None,
) -> Response:
    """Every accepted change of one record: who, which device, the device's stamp, the time
    received, and each field before and after."""
    sm = sessionmaker_of(request)
    row = await queries.record(sm, me, record_id)
    if row is None:
        raise NotFoundException()
    result = await queries.change_log(
        sm, me, record_id, page=page_number(page), size=None if _export(format) else PAGE_SIZE
    )
    if _export(format):
        _ = translator(language(request))
        headers = [
            _(k)
            for k in (
                "col.version",
                "col.op",
                "col.user",
                "col.device",
                "col.stamp",
                "col.original_stamp",
                "col.received",
                "col.field",
                "col.before",
                "col.after",
            )
        ]
        rows = (
            [
                e.version,
                e.op,
                n or "",
                d or "",
                fmt_hlc(e.hlc),
                fmt_hlc(e.original_hlc),
                fmt_time(e.received_at),
                field,
                str(ba[0]),
                str(ba[1]),
            ]
            async for chunk in result
            for e, n, d in chunk
            for field, ba in sorted((e.changes or {}).items())
        )
        return export_response(format, "changes", headers, rows)
    return render(request, "changes.html", row=row, page=result, grids=await _grid_names(request, me))


@get("/households", name="console:households")
async def households(
    request: Request,
    me: NamedDependency[ConsoleUser],
    grid: Query = None,
    q: Query = None,
    page: Query = None,
    format: Query = None,
) -> Response:
    sm = sessionmaker_of(request)
    grids = await _grid_names(request, me)
    grid = _scoped_choice(grid, grids)
    q = (q or "").strip()[:50]
    result = await queries.households(
        sm, me, grid_id=grid, q=q, page=page_number(page), size=None if _export(format) else PAGE_SIZE
    )
    if _export(format):
        _ = translator(language(request))
        cols = ("address", "building", "unit", "room", "head_name", "phone", "members", "tags", "notes")
        headers = [_("col.grid")] + [_(f"household.{c}") for c in cols] + [_("col.version")]
        rows = (
            [grids.get(r.grid_id, "")] + [(r.fields or {}).get(c, "") for c in cols] + [r.version]
            async for chunk in result
            for (r,) in chunk
        )
        return export_response(format, "households", headers, rows)
    return render(request, "households.html", page=result, grids=grids, f={"grid": grid, "q": q})


@get("/households/{record_id:str}", name="console:household")
async def household(
    request: Request, me: NamedDependency[ConsoleUser], record_id: FromPath[str], page: Query = None
) -> Response:
    """One household: its details, its visits (paginated) and its cases."""
    sm = sessionmaker_of(request)
    row = await queries.record(sm, me, record_id, "household")
    if row is None:
        raise NotFoundException()
    visits_page = await queries.visits(sm, me, review="all", household_id=row.id, page=page_number(page), size=20)
    visit_rows = [r for (r,) in visits_page.items]
    case_rows = [r for (r,) in (await queries.cases(sm, me, household_id=row.id, size=50)).items]
    authors = await queries.authors(sm, [r.id for r in visit_rows])
    return render(
        request,
        "household.html",
        row=row,
        page=visits_page,
        visits=visit_rows,
        cases=case_rows,
        authors=authors,
        grids=await _grid_names(request, me),
    )


# ---- visits to review -----------------------------------------------------------------------


@get("/visits", name="console:visits")
async def visits(
    request: Request,
    me: NamedDependency[ConsoleUser],
    review: Query = None,
    grid: Query = None,
    method: Query = None,
    page: Query = None,
    due: Query = None,
    format: Query = None,
) -> Response:
    """Visits waiting for review (or approved, flagged, all), newest first; ``due=1``: the
    follow-ups due, soonest first."""
    sm = sessionmaker_of(request)
    grids = await _grid_names(request, me)
    grid = _scoped_choice(grid, grids)
    review = review if review in (*queries.REVIEW_STATES, "all") else "pending"
    method = method if method in {m.value for m in VisitMethod} else None
    window = queries.follow_up_window(local_today()) if due == "1" else None
    result = await queries.visits(
        sm,
        me,
        review=review,
        grid_id=grid,
        method=method,
        due=window,
        page=page_number(page),
        size=None if _export(format) else PAGE_SIZE,
    )
    _ = translator(language(request))
    if _export(format):
        headers = [
            _(k)
            for k in (
                "col.visited_at",
                "col.grid",
                "col.household",
                "col.method",
                "col.topics",
                "col.worker",
                "col.photos",
                "col.follow_up",
                "col.review",
                "col.comment",
                "col.reviewer",
            )
        ]
        return export_response(format, "visits", headers, _visit_rows(sm, me, result, grids, _))
    rows = [r for (r,) in result.items]
    households = await queries.records_by_id(sm, me, [(r.fields or {}).get("household_id") for r in rows])
    authors = await queries.authors(sm, [r.id for r in rows])
    return render(
        request,
        "visits.html",
        page=result,
        rows=rows,
        households=households,
        authors=authors,
        grids=grids,
        methods=[m.value for m in VisitMethod],
        f={"review": review, "grid": grid, "method": method, "due": "1" if window else None},
    )


async def _visit_rows(sm, me: ConsoleUser, chunks, grids: dict[str, str], _) -> AsyncIterator[list]:  # noqa: ANN001
    """The visits export's rows, with each chunk's households and authors read for that chunk."""
    async for chunk in chunks:
        rows = [r for (r,) in chunk]
        addresses = await queries.addresses(sm, me, [(r.fields or {}).get("household_id") for r in rows])
        authors = await queries.authors(sm, [r.id for r in rows])
        for r in rows:
            f, rv = r.fields or {}, (r.fields or {}).get("review") or {}
            yield (
                [
                    fmt_time(f.get("visited_at")),
                    grids.get(r.grid_id, ""),
                    addresses.get(f.get("household_id"), ""),
                    _(f"visit.method.{f.get('method')}"),
                    f.get("topics", []),
                    authors.get(r.id, ""),
                    len(f.get("photos", [])),
                    f.get("follow_up_on") or "",
                    rv.get("verdict", ""),
                    rv.get("comment", ""),
                    rv.get("reviewer", ""),
                ]
            )


@get("/visits/{record_id:str}", name="console:visit")
async def visit(
    request: Request, me: NamedDependency[ConsoleUser], record_id: FromPath[str], error: Query = None
) -> Response:
    sm = sessionmaker_of(request)
    row = await queries.record(sm, me, record_id, "visit")
    if row is None:
        raise NotFoundException()
    household = (await queries.records_by_id(sm, me, [(row.fields or {}).get("household_id")])).get(
        (row.fields or {}).get("household_id")
    )
    authors = await queries.authors(sm, [row.id])
    return render(
        request,
        "visit.html",
        row=row,
        household=household,
        author=authors.get(row.id, ""),
        grids=await _grid_names(request, me),
        error=error,
        status_code=200,
    )


@post("/visits/{record_id:str}/review", name="console:visit-review")
async def review_visit(request: Request, me: NamedDependency[ConsoleUser], record_id: FromPath[str]) -> Response:
    """Approve or flag a visit with a comment: the visit's ``review`` field, synced to the phone."""
    sm = sessionmaker_of(request)
    row = await queries.record(sm, me, record_id, "visit")
    if row is None or row.deleted:
        raise NotFoundException()
    form = await request.form()
    inline = request.headers.get("hx-request") == "true"  # the quick approve on the list, through htmx
    try:
        done = await actions.review_visit(
            writer_of(request),
            me,
            row,
            verdict=str(form.get("verdict", "")),
            comment=str(form.get("comment", "")),
            base_version=_seen_version(form, row),
        )
    except actions.ActionRefused as exc:
        if inline:
            return render(request, "_review_cell.html", status_code=400, review=None, error=exc.code, row=row)
        # The visit as it is now: a refused review may have been decided on an older page.
        current = await queries.record(sm, me, record_id, "visit")
        return await _visit_with_error(request, me, current or row, exc.code)
    if inline:
        return render(request, "_review_cell.html", review=done.result.record.fields.get("review"), error=None, row=row)
    return redirect(f"/visits/{row.id}", saved=1)


async def _visit_with_error(request: Request, me: NamedDependency[ConsoleUser], row, code: str) -> Response:
    sm = sessionmaker_of(request)
    hid = (row.fields or {}).get("household_id")
    household = (await queries.records_by_id(sm, me, [hid])).get(hid)
    return render(
        request,
        "visit.html",
        status_code=400,
        row=row,
        household=household,
        author=(await queries.authors(sm, [row.id])).get(row.id, ""),
        grids=await _grid_names(request, me),
        error=code,
    )


@get("/photos/{record_id:str}/{sha256:str}", name="console:photo")
async def photo(
    request: Request,
    me: NamedDependency[ConsoleUser],
    record_id: FromPath[str],
    sha256: FromPath[str],
    size: Query = None,
) -> Response:
    """A photo's thumbnail (or a larger view), only through a record in scope that refers to it."""
    sm = sessionmaker_of(request)
    row = await queries.record(sm, me, record_id)
    if row is None or sha256 not in ((row.fields or {}).get("photos") or []):
        raise NotFoundException()
    settings = request.app.state.settings
    data = await thumbnail(settings.data_dir, settings.blob_dir, sha256, "l" if size == "l" else "s")
    if data is None:
        raise NotFoundException()
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


# ---- conflicts ------------------------------------------------------------------------------


@get("/conflicts", name="console:conflicts")
async def conflicts(
    request: Request,
    me: NamedDependency[ConsoleUser],
    state_: Annotated[str | None, QueryParameter(name="state")] = None,
    page: Query = None,
    format: Query = None,
) -> Response:
    sm = sessionmaker_of(request)
    state = "resolved" if state_ == "resolved" else "open"
    result = await queries.conflicts(
        sm, me, state=state, page=page_number(page), size=None if _export(format) else PAGE_SIZE
    )
    grids = await _grid_names(request, me)
    if _export(format):
        _ = translator(language(request))
        headers = [
            _(k)
            for k in (
                "col.time",
                "col.grid",
                "col.entity",
                "col.record",
                "col.field",
                "col.kept",
                "col.lost",
                "col.user",
                "col.device",
                "col.status",
            )
        ]
        rows = (
            [
                fmt_time(c.created_at),
                grids.get(c.grid_id, ""),
                c.entity,
                c.record_id,
                c.field,
                str(c.kept),
                str(c.lost),
                n or "",
                d or "",
                c.status,
            ]
            async for chunk in result
            for c, n, d in chunk
        )
        return export_response(format, "conflicts", headers, rows)
    return render(request, "conflicts.html", page=result, grids=grids, f={"state": state})


@get("/conflicts/{conflict_id:int}", name="console:conflict")
async def conflict(
    request: Request, me: NamedDependency[ConsoleUser], conflict_id: FromPath[int], error: Query = None
) -> Response:
    sm = sessionmaker_of(request)
    entry = await queries.conflict(sm, me, conflict_id)
    if entry is None:
        raise NotFoundException()
    row = await queries.record(sm, me, entry.record_id)
    async with sm() as db:
        people = await queries.names(db, User, [entry.user_id, entry.resolved_by])
        devices = await queries.names(db, Device, [entry.device_id])
    return render(
        request,
        "conflict.html",
        c=entry,
        row=row,
        people=people,
        devices=devices,
        grids=await _grid_names(request, me),
        error=error if error else None,
    )


@post("/conflicts/{conflict_id:int}/resolve", name="console:conflict-resolve")
async def resolve_conflict(request: Request, me: NamedDependency[ConsoleUser], conflict_id: FromPath[int]) -> Response:
    """Keep the current value, or take the lost one (a console change that syncs out)."""
    sm = sessionmaker_of(request)
    entry = await queries.conflict(sm, me, conflict_id)
    if entry is None:
        raise NotFoundException()
    form = await request.form()
    choice = str(form.get("choice", ""))
    try:
        if choice == "keep":
            await actions.keep_conflict(writer_of(request), me, entry)
        elif choice == "take":
            row = await queries.record(sm, me, entry.record_id)
            if row is None:
                raise NotFoundException()
            await actions.take_lost(
                writer_of(request), me, entry, row, base_version=_seen_version(form, row)
            )
        else:
            raise actions.ActionRefused("bad_choice")
    except actions.ActionRefused as exc:
        return redirect(f"/conflicts/{conflict_id}", error=exc.code)
    return redirect("/conflicts", resolved=conflict_id)


# ---- cases: the closed loop -----------------------------------------------------------------


@get("/cases", name="console:cases")
async def cases(
    request: Request,
    me: NamedDependency[ConsoleUser],
    status: Query = None,
    grid: Query = None,
    category: Query = None,
    page: Query = None,
    format: Query = None,
) -> Response:
    """The board by status, or (with ``status``) one paginated column as a list."""
    sm = sessionmaker_of(request)
    grids = await _grid_names(request, me)
    grid = _scoped_choice(grid, grids)
    status = status if status in queries.CASE_STATUSES else None
    category = category if category in {c.value for c in CaseCategory} else None
    _ = translator(language(request))
    if _export(format):
        result = await queries.cases(sm, me, status=status, grid_id=grid, category=category, size=None)
        headers = [
            _(k)
            for k in (
                "col.reported_at",
                "col.grid",
                "col.category",
                "col.title",
                "col.status",
                "col.department",
                "col.due",
                "col.feedback",
                "col.rating",
                "col.reporter",
            )
        ]
        return export_response(format, "cases", headers, _case_rows(sm, result, grids, _))
    f = {"status": status, "grid": grid, "category": category}
    categories = [c.value for c in CaseCategory]
    if status:
        result = await queries.cases(
            sm, me, status=status, grid_id=grid, category=category, page=page_number(page), size=PAGE_SIZE
        )
        return render(
            request,
            "cases_list.html",
            page=result,
            rows=[r for (r,) in result.items],
            grids=grids,
            f=f,
            categories=categories,
            statuses=queries.CASE_STATUSES,
        )
    counts = await stats.case_counts(sm, me, grid_id=grid)
    columns = {}
    for s in queries.CASE_STATUSES:
        first = await queries.cases(sm, me, status=s, grid_id=grid, category=category, size=12, counted=False)
        columns[s] = [r for (r,) in first.items]
    return render(
        request,
        "cases_board.html",
        counts=counts,
        columns=columns,
        grids=grids,
        f=f,
        categories=categories,
        statuses=queries.CASE_STATUSES,
    )


async def _case_rows(sm, chunks, grids: dict[str, str], _) -> AsyncIterator[list]:  # noqa: ANN001
    """The cases export's rows, with each chunk's reporters read for that chunk."""
    async for chunk in chunks:
        rows = [r for (r,) in chunk]
        authors = await queries.authors(sm, [r.id for r in rows])
        for r in rows:
            yield [
                fmt_hlc((r.meta or {}).get("grid_id", [0, ""])[1]),
                grids.get(r.grid_id, ""),
                _(f"case.category.{(r.fields or {}).get('category')}"),
                (r.fields or {}).get("title", ""),
                _(f"case.status.{(r.fields or {}).get('status')}"),
                (r.fields or {}).get("department") or "",
                fmt_time((r.fields or {}).get("due_at")),
                (r.fields or {}).get("feedback", ""),
                (r.fields or {}).get("rating") or "",
                authors.get(r.id, ""),
            ]


@get("/cases/{record_id:str}", name="console:case")
async def case(
    request: Request, me: NamedDependency[ConsoleUser], record_id: FromPath[str], error: Query = None
) -> Response:
    row = await queries.record(sessionmaker_of(request), me, record_id, "case")
    if row is None:
        raise NotFoundException()
    return await _case_page(request, me, row, error)


async def _case_page(
    request: Request, me: NamedDependency[ConsoleUser], row: RecordRow, error: str | None, status_code: int = 200
) -> Response:
    sm = sessionmaker_of(request)
    hid = (row.fields or {}).get("household_id")
    household = (await queries.records_by_id(sm, me, [hid])).get(hid) if hid else None
    return render(
        request,
        "case.html",
        status_code=status_code,
        row=row,
        household=household,
        moves=actions.allowed_moves(row),
        reporter=(await queries.authors(sm, [row.id])).get(row.id, ""),
        grids=await _grid_names(request, me),
        error=error,
        # The first day a due date may fall on: the supervisor's today, not the server's (UTC).
        today=local_today().isoformat(),
    )


@post("/cases/{record_id:str}/{step:str}", name="console:case-step")
async def case_step(
    request: Request, me: NamedDependency[ConsoleUser], record_id: FromPath[str], step: FromPath[str]
) -> Response:
    """One step of the closed loop: accept, dispatch, or evaluate (rate, then close or send back)."""
    sm = sessionmaker_of(request)
    row = await queries.record(sm, me, record_id, "case")
    if row is None or row.deleted:
        raise NotFoundException()
    form = await request.form()
    base = _seen_version(form, row)
    try:
        if step == "accept":
            await actions.accept_case(writer_of(request), me, row, base_version=base)
        elif step == "dispatch":
            due = actions.parse_due(str(form.get("due", "")))
            await actions.dispatch_case(
                writer_of(request), me, row, department=str(form.get("department", "")), due=due, base_version=base
            )
        elif step == "evaluate":
            outcome = str(form.get("outcome", ""))
            due = actions.parse_due(str(form.get("due", ""))) if outcome == "reopen" else None
            await actions.evaluate_case(
                writer_of(request),
                me,
                row,
                rating=_int(form.get("rating")),
                outcome=outcome,
                department=str(form.get("department", "")),
                due=due,
                base_version=base,
            )
        else:
            raise NotFoundException()
    except actions.ActionRefused as exc:
        # The case as it is now, which may not be what the refused step was decided on.
        current = await queries.record(sm, me, record_id, "case")
        return await _case_page(request, me, current or row, exc.code, status_code=400)
    return redirect(f"/cases/{row.id}", saved=1)


HANDLERS = [
    dashboard,
    sync_log,
    change_log,
    households,
    household,
    visits,
    visit,
    review_visit,
    photo,
    conflicts,
    conflict,
    resolve_conflict,
    cases,
    case,
    case_step,
]
