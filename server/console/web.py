"""What every console page shares: rendering with the user's language, the signed-in user,
the CSRF check, pagination, and the HTML error pages."""

from __future__ import annotations

import datetime
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.console import auth
from server.console.i18n import LANG_COOKIE, catalog, pick_language, translator
from server.db.outage import RETRY_AFTER_S, database_unreachable
from sync.hlc import parse_stamp

log = logging.getLogger("fieldloop.console")
TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
PREFIX = "/console"
# The sub-district's clock: every time a supervisor reads is local time.
LOCAL_TZ = ZoneInfo("Asia/Shanghai")
PAGE_SIZE = 50
# Scripts only from the console's own files: even text that slipped past escaping could not run.
# Inline styles stay allowed for htmx's indicator style and the server-drawn SVG.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


def local_now() -> datetime.datetime:
    """The console's one clock, in the sub-district's time zone (tests set it)."""
    return datetime.datetime.now(LOCAL_TZ)


def local_today() -> datetime.date:
    """The sub-district's calendar day: from 00:00 to 08:00 in Shanghai the server's UTC date is
    still yesterday."""
    return local_now().date()


class LoginRequired(NotAuthorizedException):
    """No valid session: the console answers with a redirect to the login page."""


def _local(value: datetime.datetime | None) -> datetime.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they were stored as UTC
        value = value.replace(tzinfo=datetime.UTC)
    return value.astimezone(LOCAL_TZ)


def fmt_time(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime.datetime):
        return _local(value).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


def fmt_hlc(stamp: str | None) -> str:
    """A stamp's wall time in local time (the device's clock when it made the edit)."""
    if not stamp:
        return ""
    try:
        wall = parse_stamp(stamp).wall_ms
    except ValueError:
        return stamp
    return fmt_time(datetime.datetime.fromtimestamp(wall / 1000, datetime.UTC))


def fmt_value(value: Any) -> str:
    """A field value as plain text (the template escapes it)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "✓" if value else "✗"
    if isinstance(value, list):
        return ", ".join(fmt_value(v) for v in value) if value else "—"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {fmt_value(v)}" for k, v in value.items())
    return str(value)


_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(enabled_extensions=("html", "svg"), default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["t"] = fmt_time
_env.filters["hlc"] = fmt_hlc
_env.filters["v"] = fmt_value


def environment() -> Environment:
    return _env


def sessionmaker_of(request: Request) -> async_sessionmaker:
    """Sessions for the console's reads: on SQLite they never wait for a writer (nor hold one up)."""
    state = request.app.state
    return getattr(state, "read_sessionmaker", None) or state.sessionmaker


def writer_of(request: Request) -> async_sessionmaker:
    """Sessions for the console's writes (through the one write path or the account services)."""
    return request.app.state.sessionmaker


def language(request: Request) -> str:
    return pick_language(request.cookies.get(LANG_COOKIE))


def csrf_token(request: Request) -> str:
    """The CSRF token for this request's forms: the cookie's, or a new one set on the response."""
    token = request.cookies.get(auth.CSRF_COOKIE) or request.scope.get("state", {}).get("fl_new_csrf")
    if not token:
        token = auth.new_csrf_token()
        request.scope.setdefault("state", {})["fl_new_csrf"] = token
    return token


def set_csrf_cookie(request: Request, response: Response) -> None:
    new = request.scope.get("state", {}).get("fl_new_csrf")
    if new:
        response.set_cookie(
            auth.CSRF_COOKIE, new, path=PREFIX, httponly=True, samesite="lax", secure=request.url.scheme == "https"
        )


def url(path: str, **query: Any) -> str:
    """A console URL with the query parameters that are set."""
    clean = {k: v for k, v in query.items() if v not in (None, "")}
    return f"{PREFIX}{path}" + (f"?{urlencode(clean)}" if clean else "")


# Field values that are workflow states or enumerations, shown by their label.
_VALUE_LABELS = {"status": "case.status.", "method": "visit.method.", "category": "case.category."}


def _labels(lang: str) -> tuple[Any, Any]:
    messages = catalog(lang)

    def field_label(name: str) -> str:
        return messages.get(f"field.{name}", name)

    def field_value(name: str, value: Any) -> str:
        prefix = _VALUE_LABELS.get(name)
        if prefix and isinstance(value, str) and f"{prefix}{value}" in messages:
            return messages[f"{prefix}{value}"]
        if name in ("due_at", "visited_at", "started_at", "ended_at", "written_at") and isinstance(value, str):
            return fmt_time(value)
        return fmt_value(value)

    return field_label, field_value


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    lang = language(request)
    user = request.scope.get("state", {}).get("console_user")
    field_label, field_value = _labels(lang)
    body = _env.get_template(template).render(
        _=translator(lang),
        fl=field_label,
        fv=field_value,
        lang=lang,
        me=user,
        csrf=csrf_token(request),
        csrf_field=auth.CSRF_FIELD,
        request_path=request.url.path,
        request_query=request.url.query,
        url=url,
        P=PREFIX,
        **context,
    )
    response = Response(body, status_code=status_code, media_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "same-origin"
    set_csrf_cookie(request, response)
    return response


async def current_user(request: Request) -> auth.ConsoleUser:
    """The dependency every console page takes: the signed-in user, or a redirect to log in."""
    sm = sessionmaker_of(request)
    key = await session_key(request)
    user = await auth.user_from_session(sm, key, request.cookies.get(auth.SESSION_COOKIE))
    if user is None:
        raise LoginRequired()
    request.scope.setdefault("state", {})["console_user"] = user
    return user


async def admin_user(request: Request) -> auth.ConsoleUser:
    user = await current_user(request)
    if not user.is_admin:
        raise PermissionDeniedException("administrators only")
    return user


async def session_key(request: Request) -> bytes:
    state = request.app.state
    key = getattr(state, "console_session_key", None)
    if key is None:
        key = await auth.session_key(writer_of(request))
        state.console_session_key = key
    return key


async def check_csrf(request: Request) -> None:
    """Router-wide before-request hook: every state-changing request carries the form token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    submitted = request.headers.get(auth.CSRF_HEADER)
    if not submitted:
        form = await request.form()
        submitted = form.get(auth.CSRF_FIELD)
    if not auth.csrf_matches(request.cookies.get(auth.CSRF_COOKIE), submitted if isinstance(submitted, str) else None):
        raise PermissionDeniedException("csrf")


def html_error(request: Request, exc: Exception) -> Response:
    """Console errors as pages in the user's language (the sync API keeps its JSON errors)."""
    if isinstance(exc, LoginRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return Redirect(url("/login", next=target), status_code=303)
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = None
    if status == 500 and database_unreachable(exc):
        status, headers = 503, {"Retry-After": str(RETRY_AFTER_S)}
        log.warning("database unreachable on %s %s: %s", request.method, request.url.path, exc)
    elif status >= 500:
        log.exception("console fault on %s %s", request.method, request.url.path, exc_info=exc)
    detail = exc.detail if isinstance(exc, HTTPException) else ""
    response = render(request, "error.html", status_code=status, status=status, detail=detail)
    response.headers.update(headers or {})
    return response


@dataclass
class Page:
    """One page of a list."""

    items: list
    number: int
    size: int
    total: int
    # ``total`` is a lower bound: the list goes on past it (it was not counted to its end).
    more: bool = False

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


def page_number(raw: str | None) -> int:
    try:
        return max(1, min(int(raw or 1), 100_000))
    except ValueError:
        return 1


def redirect(path: str, **query: Any) -> Redirect:
    return Redirect(url(path, **query), status_code=303)
