"""Sign in, sign out, and the language switch."""

from __future__ import annotations

from typing import Annotated

from litestar import Request, Response, get, post
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect

from server.accounts.passwords import MAX_PASSWORD_LENGTH
from server.console import auth
from server.console.i18n import LANG_COOKIE, LANGUAGES
from server.console.web import PREFIX, render, session_key, sessionmaker_of, url


def _safe_next(target: str | None) -> str:
    """Only a path inside the console: never an open redirect to another site."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return url("/")


def _throttle(request: Request) -> auth.LoginThrottle:
    state = request.app.state
    throttle = getattr(state, "console_login_throttle", None)
    if throttle is None:
        throttle = state.console_login_throttle = auth.LoginThrottle()
    return throttle


@get("/login", name="console:login")
async def login_page(request: Request, next_: Annotated[str | None, QueryParameter(name="next")] = None) -> Response:
    """The sign-in form."""
    return render(request, "login.html", next=_safe_next(next_), error=None, name="", minutes=0)


@post("/login", name="console:login-post")
async def login(request: Request) -> Response:
    """Check the name and password; on success set the session cookie and go where the user was."""
    form = await request.form()
    name = str(form.get("name", "")).strip()[:100]
    password = str(form.get("password", ""))[:MAX_PASSWORD_LENGTH]
    target = _safe_next(str(form.get("next", "")))
    if not name or not password:
        return render(request, "login.html", status_code=400, next=target, error="login.missing", name=name, minutes=0)
    throttle = _throttle(request)
    address = request.client.host if request.client else ""
    wait = throttle.wait_s(name, address)
    if wait:
        return render(
            request,
            "login.html",
            status_code=429,
            next=target,
            error="login.throttled",
            minutes=max(1, round(wait / 60)),
            name=name,
        )
    sm = sessionmaker_of(request)
    user = await auth.authenticate(sm, name, password)
    if user is None:
        throttle.failed(name, address)
        return render(request, "login.html", status_code=401, next=target, error="login.failed", name=name, minutes=0)
    throttle.succeeded(name, address)
    token = auth.make_session_token(await session_key(request), user)
    response = Redirect(target, status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        token,
        path=PREFIX,
        max_age=auth.SESSION_MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@post("/logout", name="console:logout")
async def logout(request: Request) -> Response:
    """End the session (the CSRF check has already run: a foreign page cannot sign anyone out)."""
    response = Redirect(url("/login"), status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path=PREFIX)
    return response


@get("/lang/{lang:str}", name="console:lang")
async def set_language(
    request: Request, lang: FromPath[str], next_: Annotated[str | None, QueryParameter(name="next")] = None
) -> Response:
    """Switch between Chinese and English; the choice is kept in a cookie for a year."""
    response = Redirect(_safe_next(next_), status_code=303)
    if lang in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, path=PREFIX, max_age=365 * 24 * 3600, httponly=True, samesite="lax")
    return response


HANDLERS = [login_page, login, logout, set_language]
