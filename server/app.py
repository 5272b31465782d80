"""The Litestar application: wiring only. Domain code lives in the service modules."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from litestar import Litestar, Response, get
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.types import Message, Scope
from sqlalchemy import Connection

from server.blobs.store import FileBlobStore
from server.db import units
from server.db.engine import create_engine, read_session_factory, session_factory
from server.db.migrate import upgrade
from server.db.outage import RETRY_AFTER_S, database_unreachable
from server.devices.tokens import load_token_secret
from server.errors import exception_handlers
from server.records.feed import cursor_key
from server.records.overdue import mark_overdue_cases
from server.settings import Settings
from server.sync_api.routes import v1_router
from server.sync_api.synclog import SyncLog
from shared_schema.messages import MAX_BLOB_BYTES
from sync.hlc import wall_now_ms

log = logging.getLogger("fieldloop")


async def _stamp_server_time(message: Message, scope: Scope) -> None:
    """Every /v1 reply carries the server's time as a ``Server-Time`` header (milliseconds since
    the epoch), errors and blob replies included: those have no ``server_time`` in a body, or
    no body at all, and a device corrects its clock from whatever reply it gets (section 2)."""
    if message["type"] == "http.response.start" and scope["path"].startswith("/v1/"):
        message["headers"] = [*message.get("headers", ()), (b"server-time", str(wall_now_ms()).encode())]


@get("/healthz", include_in_schema=False)
async def healthz(state: State) -> Response:
    """Whether this process can serve: it answers, and its database does (a load balancer takes
    a process whose database it cannot reach out of rotation: 503)."""
    try:
        await units.read(state.engine, _database_answers)
    except Exception as exc:
        if not database_unreachable(exc):
            raise
        return Response({"ok": False, "database": "unreachable", "server_time": wall_now_ms()}, status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_S)})
    return Response({"ok": True, "server_time": wall_now_ms()})


def _database_answers(connection: Connection) -> None:
    connection.exec_driver_sql("SELECT 1").close()


def create_app(settings: Settings, *, migrate: bool = True) -> Litestar:
    """The FieldLoop server for ``settings``; migrations run at start unless ``migrate`` is off
    (several processes on one PostgreSQL: migrate once before starting them)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.url)
        if migrate:
            await upgrade(engine)
        sessionmaker = session_factory(engine)
        state = app.state
        state.settings = settings
        state.engine = engine
        state.sessionmaker = sessionmaker
        state.read_sessionmaker = read_session_factory(engine)
        state.token_secret = await load_token_secret(sessionmaker)
        state.cursor_key = cursor_key(state.token_secret)
        await units.open_pools(engine)
        state.blob_store = FileBlobStore(settings.blob_dir)
        state.sync_log = SyncLog(engine)
        state.sync_log.start()
        overdue = asyncio.create_task(_mark_overdue_periodically(sessionmaker, settings.overdue_check_s))
        _tune_garbage_collector()
        try:
            yield
        finally:
            overdue.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await overdue
            await state.sync_log.stop()
            await units.dispose(engine)
            await engine.dispose()

    plugins = []
    try:
        from server.console.plugin import ConsolePlugin
    except ImportError:  # the console is optional while it is being built
        ConsolePlugin = None  # noqa: N806
    if ConsolePlugin is not None:
        plugins.append(ConsolePlugin())

    return Litestar(
        route_handlers=[v1_router(), healthz],
        lifespan=[lifespan],
        state=State({"settings": settings}),
        exception_handlers=exception_handlers,
        before_send=[_stamp_server_time],
        plugins=plugins,
        request_max_body_size=MAX_BLOB_BYTES + 1024 * 1024,
        openapi_config=OpenAPIConfig(title="FieldLoop", version="1", path="/schema"),
        debug=settings.debug,
    )


def _tune_garbage_collector() -> None:
    """A push of 500 mutations allocates some 50,000 short-lived objects; with the default
    thresholds the collector runs dozens of times a push and rescans the whole framework's
    heap. Freezing what start-up made and collecting young objects less often halves the
    merge's cost (bench/sync_bench.py)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def _mark_overdue_periodically(sessionmaker, every_s: float) -> None:  # noqa: ANN001
    while True:
        try:
            await mark_overdue_cases(sessionmaker)
        except Exception as exc:  # noqa: BLE001 - a failed sweep is retried at the next one
            if database_unreachable(exc):
                log.warning("overdue sweep skipped, the database is unreachable: %s", exc)
            else:
                log.exception("overdue sweep failed")
        await asyncio.sleep(every_s)
