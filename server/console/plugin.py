"""``ConsolePlugin``: adds the console's routes, static files and error pages to the app.

The console renders its own Jinja2 templates (``web.render``), so it sets no app-wide template
engine and leaves the sync API's JSON errors alone: its HTML error pages are registered on the
console's router only.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from litestar import Litestar, Router
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.plugins import InitPluginProtocol
from litestar.static_files import create_static_files_router

from server.console import stats, views_admin, views_session, views_supervise
from server.console.auth import ConsoleUser
from server.console.web import PREFIX, STATIC, admin_user, check_csrf, current_user, html_error


def console_routes() -> list:
    """The console's routers: pages under ``/console`` and static files under ``/console/static``."""
    pages = Router(
        path=PREFIX,
        route_handlers=[*views_session.HANDLERS, *views_supervise.HANDLERS, *views_admin.HANDLERS],
        dependencies={"me": Provide(current_user), "admin": Provide(admin_user)},
        before_request=check_csrf,
        exception_handlers={HTTPException: html_error, Exception: html_error},
        signature_namespace={"ConsoleUser": ConsoleUser},
        include_in_schema=False,
    )
    static = create_static_files_router(
        path=f"{PREFIX}/static",
        directories=[STATIC],
        name="console-static",
        include_in_schema=False,
    )
    return [pages, static]


class ConsolePlugin(InitPluginProtocol):
    """Plug the console into the FieldLoop app: ``Litestar(..., plugins=[ConsolePlugin()])``.

    It needs ``app.state.sessionmaker`` and ``app.state.settings`` (set by the app's lifespan).
    """

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.extend(console_routes())
        # After the app's own lifespan: left before it, while the engine is still open.
        app_config.lifespan.append(_background_counts)
        return app_config


@contextlib.asynccontextmanager
async def _background_counts(_app: Litestar) -> AsyncIterator[None]:
    """The dashboard's counts running in the background end with the app."""
    try:
        yield
    finally:
        await stats.stop_recounts()
