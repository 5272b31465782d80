"""Administrator pages: users, communities and grids, imports, enrollment codes, devices.

Every handler takes ``admin`` (the ``admin_user`` dependency): a supervisor gets 403 on each.
"""

from __future__ import annotations

import base64
import datetime
import urllib.parse

import segno
from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery
from markupsafe import Markup

from server.accounts import service as accounts
from server.console import accounts_admin, actions, importer, queries
from server.console.auth import ConsoleUser
from server.console.exports import FORMATS, export_response, to_csv
from server.console.i18n import translator
from server.console.web import (
    PAGE_SIZE,
    Page,
    fmt_time,
    language,
    page_number,
    redirect,
    render,
    sessionmaker_of,
    writer_of,
)
from server.db.models import Grid, User
from server.devices import service as devices_service

Query = FromQuery[str | None]


def _form_text(form, name: str, limit: int = 200) -> str:
    # Cut at ``limit``. Names are read past the service's own limit, so that it refuses an over-long
    # name instead of storing a cut one.
    value = form.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


# ---- users ------------------------------------------------------------------------------------


async def _users_page(request: Request, page: str | None, status_code: int = 200, **extra) -> Response:
    sm = sessionmaker_of(request)
    number = page_number(page)
    rows, total = await accounts_admin.user_overview(sm, number, PAGE_SIZE)
    grids = await queries.grids_in_scope(sm, _admin_scope(request))
    return render(
        request,
        "admin_users.html",
        status_code=status_code,
        rows=rows,
        page=Page(items=rows, number=number, size=PAGE_SIZE, total=total),
        grids=grids,
        roles=[r.value for r in accounts.Role],
        **extra,
    )


def _admin_scope(request: Request) -> ConsoleUser:
    return request.scope["state"]["console_user"]


@get("/admin/users", name="console:users")
async def users(
    request: Request, admin: NamedDependency[ConsoleUser], page: Query = None, format: Query = None
) -> Response:
    if format in FORMATS:
        rows, _total = await accounts_admin.user_overview(sessionmaker_of(request), 1, None)
        _ = translator(language(request))
        headers = [_(k) for k in ("col.name", "col.role", "col.grids", "col.devices", "col.active", "col.created")]
        out = [
            [u.name, _(f"role.{u.role}"), ", ".join(g), n, "✓" if u.active else "✗", fmt_time(u.created_at)]
            for u, g, n in rows
        ]
        return export_response(format, "users", headers, out)
    return await _users_page(request, page, form={}, error=None)


@post("/admin/users", name="console:users-create")
async def create_user(request: Request, admin: NamedDependency[ConsoleUser]) -> Response:
    sm = sessionmaker_of(request)
    form = await request.form()
    name, role = _form_text(form, "name", 1000), _form_text(form, "role", 20)
    password = form.get("password", "") if isinstance(form.get("password", ""), str) else ""
    async with sm() as db:
        grid_names = await _grid_names_from_ids(db, form.getall("grids", []))
    try:
        await accounts.create_user(writer_of(request), name, role, grid_names, password or None)
    except accounts.AccountError as exc:
        return await _users_page(request, None, 400, form={"name": name, "role": role},
                                 error=_account_error(request, exc))
    return redirect("/admin/users", created=name)


async def _grid_names_from_ids(db, ids: list) -> list[str]:
    from sqlalchemy import select

    ids = [i for i in ids if isinstance(i, str)]
    if not ids:
        return []
    return list((await db.scalars(select(Grid.name).where(Grid.id.in_(ids)))).all())


@get("/admin/users/{user_id:str}", name="console:user")
async def user_page(
    request: Request, admin: NamedDependency[ConsoleUser], user_id: FromPath[str], saved: Query = None
) -> Response:
    return await _user_page(request, user_id, saved=saved)


async def _user_page(
    request: Request, user_id: str, status_code: int = 200, error: str | None = None, saved=None
) -> Response:
    sm = sessionmaker_of(request)
    async with sm() as db:
        user = await db.get(User, user_id)
        if user is None:
            raise NotFoundException()
        assigned = await accounts.user_grid_ids(db, user.id)
    grids = await queries.grids_in_scope(sm, _admin_scope(request))
    return render(
        request,
        "admin_user.html",
        status_code=status_code,
        user=user,
        assigned=assigned,
        seen=accounts_admin.account_state(user, assigned),
        grids=grids,
        roles=[r.value for r in accounts.Role],
        error=error,
        saved=saved,
    )


@post("/admin/users/{user_id:str}", name="console:user-save")
async def save_user(request: Request, admin: NamedDependency[ConsoleUser], user_id: FromPath[str]) -> Response:
    """Role and active flag, grids, and (if given) a new password. A save from a page that no
    longer shows the user as stored is refused, not applied over another administrator's change."""
    sm = sessionmaker_of(request)
    form = await request.form()
    async with sm() as db:
        user = await db.get(User, user_id)
        if user is None:
            raise NotFoundException()
        grid_names = await _grid_names_from_ids(db, form.getall("grids", []))
        current = accounts_admin.account_state(user, await accounts.user_grid_ids(db, user.id))
    action = _form_text(form, "action", 20)
    try:
        seen = _form_text(form, "seen", 64)
        if action == "save" and seen and seen != current:
            raise actions.ActionRefused("changed_meanwhile")
        if action == "password":
            password = form.get("password", "")
            if not isinstance(password, str) or password != form.get("password2", ""):
                raise accounts.AccountError("passwords_differ", "the two passwords differ")
            await accounts.set_password(writer_of(request), user.name, password)
        elif action == "save":
            await accounts_admin.set_role_and_active(
                writer_of(request), user.id, _form_text(form, "role", 20), form.get("active") == "1", admin.id
            )
            await accounts.set_grids(writer_of(request), user.name, grid_names)
        else:
            raise accounts.AccountError("unknown_action", "unknown action")
    except accounts.AccountError as exc:
        return await _user_page(request, user_id, 400, error=_account_error(request, exc))
    except actions.ActionRefused as exc:
        _ = translator(language(request))
        return await _user_page(request, user_id, 400, error=_(f"error.action.{exc.code}"))
    return redirect(f"/admin/users/{user_id}", saved=action)


# ---- communities and grids --------------------------------------------------------------------


@get("/admin/grids", name="console:grids")
async def grids(
    request: Request, admin: NamedDependency[ConsoleUser], page: Query = None, format: Query = None
) -> Response:
    sm = sessionmaker_of(request)
    if format in FORMATS:
        rows, _total = await accounts_admin.grid_overview(sm, 1, None)
        _ = translator(language(request))
        headers = [_(k) for k in ("col.community", "col.grid", "col.workers", "col.households")]
        return export_response(format, "grids", headers, [[g.community, g.name, w, h] for g, w, h in rows])
    return await _grids_page(request, page)


async def _grids_page(
    request: Request, page: str | None, status_code: int = 200, error: str | None = None, form: dict | None = None
) -> Response:
    sm = sessionmaker_of(request)
    number = page_number(page)
    rows, total = await accounts_admin.grid_overview(sm, number, PAGE_SIZE)
    return render(
        request,
        "admin_grids.html",
        status_code=status_code,
        rows=rows,
        page=Page(items=rows, number=number, size=PAGE_SIZE, total=total),
        communities=await accounts_admin.communities(sm),
        error=error,
        form=form or {},
    )


@post("/admin/grids", name="console:grids-create")
async def create_grid(request: Request, admin: NamedDependency[ConsoleUser]) -> Response:
    form = await request.form()
    name, community = _form_text(form, "name", 1000), _form_text(form, "community", 1000)
    try:
        await accounts.add_grid(writer_of(request), name, community)
    except accounts.AccountError as exc:
        return await _grids_page(request, None, 400, error=_account_error(request, exc),
                                 form={"name": name, "community": community})
    return redirect("/admin/grids", created=name)


# ---- import -----------------------------------------------------------------------------------


@get("/admin/import", name="console:import")
async def import_page(request: Request, admin: NamedDependency[ConsoleUser]) -> Response:
    return render(request, "admin_import.html", report=None, error=None)


@post("/admin/import", name="console:import-post", request_max_body_size=importer.MAX_BYTES + 64 * 1024)
async def import_file(request: Request, admin: NamedDependency[ConsoleUser]) -> Response:
    """Import grids or households; the answer lists every rejected row with its reason."""
    form = await request.form()
    kind = form.get("kind")
    upload = form.get("file")
    if kind not in ("grids", "households") or not isinstance(upload, UploadFile):
        return render(request, "admin_import.html", status_code=400, report=None, error="import.error.form")
    data = await upload.read()
    try:
        rows = importer.read_table(upload.filename or "", data)
    except importer.ImportFileError as exc:
        return render(request, "admin_import.html", status_code=400, report=None, error=f"import.error.{exc.code}")
    sm = writer_of(request)
    if kind == "grids":
        report = await importer.import_grids(sm, rows)
    else:
        report = await importer.import_households(sm, admin, rows)
    return render(
        request, "admin_import.html", report=report, error=None, rejected_csv=_rejections_csv(request, report)
    )


def _rejections_csv(request: Request, report: importer.ImportReport) -> str | None:
    """The rejected rows as a CSV download (a data: link), to fix and import again."""
    if not report.rejected:
        return None
    _ = translator(language(request))
    columns = sorted({key for r in report.rejected for key in r.values})
    rows = [[r.line, _(r.reason, **r.params), *(r.values.get(c, "") for c in columns)] for r in report.rejected]
    data = to_csv([_("import.line"), _("import.reason"), *columns], rows)
    return "data:text/csv;base64," + base64.b64encode(data).decode()


# ---- enrollment codes -------------------------------------------------------------------------


async def _field_users(request: Request) -> list[User]:
    from sqlalchemy import select

    async with sessionmaker_of(request)() as db:
        return list(
            (
                await db.scalars(
                    select(User)
                    .where(User.role.in_(sorted(accounts.FIELD_ROLES)), User.active.is_(True))
                    .order_by(User.name)
                )
            ).all()
        )


def _default_server(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@get("/admin/enrollment", name="console:enrollment")
async def enrollment_page(request: Request, admin: NamedDependency[ConsoleUser]) -> Response:
    return render(
        request,
        "admin_enrollment.html",
        users=await _field_users(request),
        code=None,
        qr=None,
        error=None,
        server=_default_server(request),
        recent=await accounts_admin.recent_enrollment_codes(sessionmaker_of(request)),
    )


def _account_error(request: Request, exc: accounts.AccountError) -> str:
    """Why an account request was refused, in the user's language."""
    return translator(language(request))(f"error.account.{exc.code}", **exc.params)


async def _enrollment_refused(request: Request, error: str, server: str) -> Response:
    return render(
        request,
        "admin_enrollment.html",
        status_code=400,
        users=await _field_users(request),
        code=None,
        qr=None,
        error=error,
        server=server,
    )


@post("/admin/enrollment", name="console:enrollment-create")
async def create_enrollment(request: Request, admin: NamedDependency[ConsoleUser]) -> Response:
    """A one-time code for a field user's phone, shown once, with a QR image the app scans."""
    form = await request.form()
    user_name = _form_text(form, "user", 100)
    server = _form_text(form, "server", 300) or _default_server(request)
    if not server.startswith(("http://", "https://")):
        return await _enrollment_refused(request, translator(language(request))("enroll.error.server"), server)
    settings = request.app.state.settings
    try:
        code = await devices_service.create_enrollment_code(writer_of(request), user_name, settings.enrollment_ttl_s)
    except accounts.AccountError as exc:
        return await _enrollment_refused(request, _account_error(request, exc), server)
    text = "fieldloop://enroll?" + urllib.parse.urlencode({"server": server, "code": code})
    qr = Markup(segno.make(text, error="m").svg_inline(scale=6, border=2))
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=settings.enrollment_ttl_s)
    return render(
        request,
        "admin_enrollment.html",
        users=await _field_users(request),
        code=code,
        qr=qr,
        qr_text=text,
        for_user=user_name,
        expires=expires,
        error=None,
        server=server,
        recent=await accounts_admin.recent_enrollment_codes(sessionmaker_of(request)),
    )


# ---- devices ----------------------------------------------------------------------------------


@get("/admin/devices", name="console:devices")
async def device_list(
    request: Request,
    admin: NamedDependency[ConsoleUser],
    status: Query = None,
    page: Query = None,
    format: Query = None,
    error: Query = None,
) -> Response:
    """Devices with last sync, app version and open conflicts; retire or revoke from here."""
    sm = sessionmaker_of(request)
    status = status if status in ("active", "retired", "revoked") else None
    export = format in FORMATS
    result = await queries.devices(sm, admin, status=status, page=page_number(page), size=None if export else PAGE_SIZE)
    if export:
        _ = translator(language(request))
        headers = [
            _(k)
            for k in (
                "col.device",
                "col.user",
                "col.status",
                "col.app_version",
                "col.last_sync",
                "col.enrolled",
                "col.open_conflicts",
            )
        ]
        rows = (
            [
                d.label,
                n,
                _(f"device.status.{d.status}"),
                d.app_version,
                fmt_time(d.last_sync_at),
                fmt_time(d.enrolled_at),
                c,
            ]
            async for chunk in result
            for d, n, c in chunk
        )
        return export_response(format, "devices", headers, rows)
    stale = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3)
    error = error if error in ("bad_action", "device_shut_out") else None
    return render(request, "admin_devices.html", page=result, f={"status": status}, stale=stale, error=error)


@post("/admin/devices/{device_id:str}", name="console:device-action")
async def device_action(request: Request, admin: NamedDependency[ConsoleUser], device_id: FromPath[str]) -> Response:
    """Retire (the phone keeps its data until its user has seen it) or revoke with wipe (lost or stolen)."""
    sm = sessionmaker_of(request)
    if await queries.device(sm, admin, device_id) is None:
        raise NotFoundException()
    form = await request.form()
    action = _form_text(form, "action", 20)
    try:
        if action == "retire":
            await devices_service.retire(writer_of(request), device_id)
        elif action == "revoke":
            await devices_service.revoke(writer_of(request), device_id, wipe=form.get("wipe") == "1")
        else:
            return redirect("/admin/devices", error="bad_action")
    except devices_service.DeviceStateRefused:
        return redirect("/admin/devices", error="device_shut_out")
    return redirect("/admin/devices", done=action)


HANDLERS = [
    users,
    create_user,
    user_page,
    save_user,
    grids,
    create_grid,
    import_page,
    import_file,
    enrollment_page,
    create_enrollment,
    device_list,
    device_action,
]
