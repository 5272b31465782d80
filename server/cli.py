"""The ``fieldloop`` command. Outside tools call it exactly so:

    fieldloop [--data DIR] [--db URL] serve [--host H] [--port P] [--workers N]
    fieldloop db upgrade
    fieldloop db check                       (stored records a phone could not hold; exit 1 if any)
    fieldloop grid add NAME --community C
    fieldloop user add NAME --role ROLE [--grid GRID_NAME]... [--password-stdin]
    fieldloop user password NAME            (new password from stdin)
    fieldloop enrollment create --user NAME (the code alone on the last line)
    fieldloop device list | revoke DEVICE_ID [--wipe] | retire DEVICE_ID
    fieldloop demo

``--data`` and ``--db`` may come from FIELDLOOP_DATA and FIELDLOOP_DB; a flag wins, before or after
the command. A bad argument gets a one-line error and exit status 2; a failure of the database or
the machine, exit status 1. ``serve`` ends with status 0 after SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket
import sqlite3
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from server.accounts import service as accounts
from server.accounts.service import AccountError, Role
from server.db.engine import BadDatabaseUrl, create_engine, session_factory
from server.db.migrate import MigrationRefused, upgrade
from server.db.outage import database_unreachable
from server.demo import DemoRefused
from server.devices import service as devices
from server.settings import DEFAULT_DATA_DIR, Settings

T = TypeVar("T")


class CliFailure(Exception):
    """A failure that is not the caller's argument (exit status 1)."""


def _run(settings: Settings, job: Callable[..., Awaitable[T]]) -> T:
    """Run ``job(sessionmaker)`` on a migrated database."""

    async def main() -> T:
        engine = create_engine(settings.url)
        try:
            await upgrade(engine)
            return await job(session_factory(engine))
        finally:
            await engine.dispose()

    _prepare_data_folder(settings.data_dir)
    if settings.url.get_backend_name() == "sqlite":
        _check_sqlite_opens(settings.url.database)
    try:
        return asyncio.run(main())
    except MigrationRefused as exc:
        raise CliFailure(str(exc)) from exc
    except (OSError, SQLAlchemyError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        if settings.url.get_backend_name() == "sqlite" and reason in _SQLITE_CANNOT_OPEN:
            raise CliFailure(f"cannot open the SQLite database {settings.url.database}: {reason}") from exc
        # The driver's own words, without SQLAlchemy's "(module.Error)" prefix and link.
        if isinstance(exc, OSError) or database_unreachable(exc):
            raise CliFailure(f"cannot reach the database: {reason}") from exc
        orig = getattr(exc, "orig", None)
        if orig is None:
            raise
        if str(getattr(orig, "sqlstate", None) or "").startswith("28"):  # invalid authorization
            raise CliFailure(f"cannot log in to the database: {reason}") from exc
        raise CliFailure(f"the database refused: {reason}") from exc


# sqlite3's words for a file it cannot open as a database (not for a statement that failed).
_SQLITE_CANNOT_OPEN = frozenset({"unable to open database file", "file is not a database",
                                 "database disk image is malformed", "attempt to write a readonly database"})


def _prepare_data_folder(data_dir: Path) -> None:
    """Make the data folder and check that this process can write into it (the SQLite database,
    its WAL and the photos live there), before any database is opened."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        raise CliFailure(f"the data folder {data_dir} cannot be written ({exc.strerror}): give --data a folder "
                         "this user can write") from None


def _check_sqlite_opens(path: str) -> None:
    """Open the SQLite file once with the plain driver: when aiosqlite fails to open it, its
    thread may answer after ``asyncio.run`` has closed the loop and print a traceback of its own."""
    try:
        connection = sqlite3.connect(path, timeout=30)
    except sqlite3.Error as exc:
        raise CliFailure(f"cannot open the SQLite database {path}: {exc}") from None
    try:
        connection.execute("PRAGMA schema_version").close()
    except sqlite3.Error as exc:
        raise CliFailure(f"cannot open the SQLite database {path}: {exc}") from None
    finally:
        connection.close()


def _check_can_listen(host: str, port: int) -> None:
    """Fail with one line before anything starts if ``host:port`` cannot be listened on: a host
    name that does not resolve is a bad argument (exit 2); an address taken or not this
    machine's, a failure (exit 1). uvicorn would print its own error and exit 3."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise click.BadParameter(f"{host!r} is not a host name or address of this machine ({exc.strerror})",
                                 param_hint="--host") from None
    family, kind, proto, _, address = addresses[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise CliFailure(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@dataclass(frozen=True)
class _Given:
    """``--data`` and ``--db`` as given before the command, and where each came from (a flag, the
    environment, the default). Checked only once the command's own flags are known: a flag after
    the command wins over a bad value in the environment."""

    data: str
    data_from: str
    db: str | None
    db_from: str


def _settings(given: _Given, data_here: str | None, db_here: str | None) -> Settings:
    data, data_from = (data_here, "--data") if data_here is not None else (given.data, given.data_from)
    db, db_from = (db_here, "--db") if db_here is not None else (given.db, given.db_from)
    if data == "":
        raise click.BadParameter("empty: give a folder, or leave it out for ./data", param_hint=data_from)
    if Path(data).exists() and not Path(data).is_dir():
        raise click.BadParameter(f"{data} is a file, not a folder", param_hint=data_from)
    if db == "":
        # An empty variable in a script ("--db $DB") must not quietly mean SQLite in the data folder.
        raise click.BadParameter("empty: give a database URL, or leave it out for SQLite in the data folder",
                                 param_hint=db_from)
    settings = Settings(data_dir=Path(data), db=db)
    try:
        settings.url  # noqa: B018 - validates the URL before any command runs
    except BadDatabaseUrl as exc:
        raise click.BadParameter(str(exc), param_hint=db_from) from None
    return settings


def _source(ctx: click.Context, name: str, flag: str, variable: str) -> str:
    return variable if ctx.get_parameter_source(name) == click.core.ParameterSource.ENVIRONMENT else flag


def pass_settings(command: Callable) -> Callable:
    """Hand a command the settings; ``--data`` and ``--db`` may also follow the command itself."""

    @click.option("--data", "data_here", default=None, metavar="DIR", help="data folder (as before the command)")
    @click.option("--db", "db_here", default=None, metavar="URL", help="database URL (as before the command)")
    @click.pass_context
    @functools.wraps(command)
    def with_settings(ctx: click.Context, data_here: str | None, db_here: str | None, **kwargs):  # noqa: ANN202
        return command(_settings(ctx.obj, data_here, db_here), **kwargs)

    return with_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", "data_dir", envvar="FIELDLOOP_DATA", show_envvar=True, default=str(DEFAULT_DATA_DIR),
              show_default=True, metavar="DIR", help="data folder (SQLite file, photos)")
@click.option("--db", envvar="FIELDLOOP_DB", show_envvar=True, default=None, metavar="URL",
              show_default="SQLite in the data folder", help="database URL, e.g. postgresql://user@host/db")
@click.pass_context
def cli(ctx: click.Context, data_dir: str, db: str | None) -> None:
    """FieldLoop server: sync API, web console, administration."""
    ctx.obj = _Given(data_dir, _source(ctx, "data_dir", "--data", "FIELDLOOP_DATA"),
                     db, _source(ctx, "db", "--db", "FIELDLOOP_DB"))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (0.0.0.0: all)")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="server processes; more than 1 needs PostgreSQL")
@pass_settings
def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Run the server (migrations are applied first).

    SIGTERM or SIGINT (Ctrl-C) shuts it down gracefully, exit status 0."""
    import uvicorn

    if workers > 1 and settings.url.get_backend_name() == "sqlite":
        raise click.BadParameter("several workers need PostgreSQL (--db postgresql://...)", param_hint="--workers")
    _check_can_listen(host, port)
    _run(settings, lambda _sm: asyncio.sleep(0))  # migrate once, before any worker starts
    _end_sigterm_like_sigint()
    os.environ["FIELDLOOP_DATA"] = str(settings.data_dir)
    if settings.db:
        os.environ["FIELDLOOP_DB"] = settings.db
    os.environ["FIELDLOOP_MIGRATED"] = "1"
    origin = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"  # an IPv6 address in brackets
    click.echo(f"FieldLoop on {origin}/  (console: {origin}/console/)", err=True)
    # Keep-alive of 75 s (uvicorn's default is 5): a phone's sync is several requests some seconds
    # apart (push, pull pages, photos), and a request sent on a connection just as the server
    # closes it fails with a reset (the engine retries it, but it costs a round of backoff).
    try:
        uvicorn.run("server.asgi:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level="warning", timeout_graceful_shutdown=5, timeout_keep_alive=75,
                    http="server.http_protocol:CoalescingHttpToolsProtocol")
    except SystemExit as exc:
        if exc.code != 3:  # uvicorn's "Application startup failed", after logging the error
            raise
        raise CliFailure("the server did not start (the error is above)") from None


def _end_sigterm_like_sigint() -> None:
    """uvicorn shuts down gracefully on SIGTERM or SIGINT, then raises the signal again with the
    handler it found: SIGINT's ends in a KeyboardInterrupt that ``uvicorn.run`` takes as a normal
    end (status 0), while SIGTERM's default killed the process after its clean shutdown (status
    -15, 143 in a shell; what systemd and docker send to stop a service)."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@cli.group()
def db() -> None:
    """The database."""


@db.command("upgrade")
@pass_settings
def db_upgrade(settings: Settings) -> None:
    """Apply every migration."""
    _run(settings, lambda _sm: asyncio.sleep(0))
    click.echo("database is up to date")


@db.command("check")
@pass_settings
def db_check(settings: Settings) -> None:
    """List stored records a phone could not hold (after a schema change); exit 1 if any."""
    from server.records.check import check_stored_records

    found = _run(settings, check_stored_records)
    for unfit in found.unfit:
        click.echo(f"{unfit.entity} {unfit.id} version {unfit.version}: {unfit.reason}")
    click.echo(f"{found.read} records read, {len(found.unfit)} a phone could not hold")
    if found.unfit:
        raise click.exceptions.Exit(1)


@cli.group()
def grid() -> None:
    """Grids (网格)."""


@grid.command("add")
@click.argument("name")
@click.option("--community", required=True, help="the community (社区) the grid belongs to")
@pass_settings
def grid_add(settings: Settings, name: str, community: str) -> None:
    """Add a grid; prints its id."""
    created = _run(settings, lambda sm: accounts.add_grid(sm, name, community))
    click.echo(created.id)


@cli.group()
def user() -> None:
    """Users: grid workers, red stewards, supervisors, administrators."""


@user.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
@click.option("--grid", "grids", multiple=True, help="a grid name; repeat for several")
@click.option("--password-stdin", is_flag=True, help="read a console password from stdin")
@pass_settings
def user_add(settings: Settings, name: str, role: str, grids: tuple[str, ...], password_stdin: bool) -> None:
    """Add a user."""
    password = _password_from_stdin() if password_stdin else None
    created = _run(settings, lambda sm: accounts.create_user(sm, name, role, list(grids), password))
    click.echo(created.id)


@user.command("password")
@click.argument("name")
@pass_settings
def user_password(settings: Settings, name: str) -> None:
    """Set a user's console password from stdin."""
    password = _password_from_stdin()
    _run(settings, lambda sm: accounts.set_password(sm, name, password))
    click.echo(f"password set for {name}")


@user.command("grids")
@click.argument("name")
@click.option("--grid", "grids", multiple=True, help="a grid name; repeat for several")
@pass_settings
def user_grids(settings: Settings, name: str, grids: tuple[str, ...]) -> None:
    """Replace the grids a user works in."""
    _run(settings, lambda sm: accounts.set_grids(sm, name, list(grids)))
    click.echo(f"{name}: {', '.join(grids) or 'no grids'}")


def _password_from_stdin() -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise click.BadParameter("no password on stdin", param_hint="stdin")
    return line


@cli.group()
def enrollment() -> None:
    """Enrollment codes for new devices."""


@enrollment.command("create")
@click.option("--user", "user_name", required=True)
@click.option("--hours", default=24, show_default=True, type=click.IntRange(1, 24 * 30), help="valid for")
@pass_settings
def enrollment_create(settings: Settings, user_name: str, hours: int) -> None:
    """Make a one-time enrollment code; the code is the last line printed."""
    code = _run(settings, lambda sm: devices.create_enrollment_code(sm, user_name, hours * 3600))
    click.echo(f"enrollment code for {user_name}, valid {hours} h:")
    click.echo(code)


@cli.group()
def device() -> None:
    """Enrolled devices."""


@device.command("list")
@pass_settings
def device_list(settings: Settings) -> None:
    """List devices: id, user, status, last sync, app version, label."""
    rows = _run(settings, devices.list_devices)
    for d, user_name in rows:
        last = d.last_sync_at.isoformat(timespec="seconds") if d.last_sync_at else "never"
        status = f"{d.status}{'+wipe' if d.wipe else ''}"
        click.echo(f"{d.id}\t{user_name}\t{status}\t{last}\t{d.app_version or '-'}\t{d.label}")


@device.command("revoke")
@click.argument("device_id")
@click.option("--wipe", is_flag=True, help="lost or stolen: the app erases its data")
@pass_settings
def device_revoke(settings: Settings, device_id: str, wipe: bool) -> None:
    """Revoke a device: it can no longer sync."""
    _run(settings, lambda sm: devices.revoke(sm, device_id, wipe=wipe))
    click.echo(f"revoked {device_id}{' (wipe)' if wipe else ''}")


@device.command("retire")
@click.argument("device_id")
@pass_settings
def device_retire(settings: Settings, device_id: str) -> None:
    """Retire a device: it stops syncing and keeps its data until its user has seen why."""
    _run(settings, lambda sm: devices.retire(sm, device_id))
    click.echo(f"retired {device_id}")


@cli.command()
@click.option("--households", default=3000, show_default=True, type=click.IntRange(10, 200_000))
@click.option("--seed", default=2018, show_default=True, type=int)
@pass_settings
def demo(settings: Settings, households: int, seed: int) -> None:
    """Load a demo sub-district (communities, grids, households, users, visits, cases)."""
    from server.demo import load_demo

    summary = _run(settings, lambda sm: load_demo(sm, households=households, seed=seed))
    for line in summary:
        click.echo(line)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors, exit 2 for bad arguments, 1 for failures."""
    try:
        # Without standalone mode, click returns a command's Exit status instead of exiting.
        status = cli.main(args=argv, prog_name="fieldloop", standalone_mode=False)
        if isinstance(status, int) and status:
            sys.exit(status)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("fieldloop: aborted", err=True)
        sys.exit(1)
    except click.UsageError as exc:
        if exc.ctx is not None and isinstance(exc.ctx.command, click.Group) and (
                isinstance(exc, click.exceptions.NoArgsIsHelpError) or exc.message == "Missing command."):
            # A group without its command; NoArgsIsHelpError's message is the whole help.
            names = ", ".join(exc.ctx.command.list_commands(exc.ctx))
            message = f"missing command after '{exc.ctx.command_path}': one of {names} (see --help)"
        else:
            message = " ".join(exc.format_message().split())
        click.echo(f"fieldloop: error: {message}", err=True)
        sys.exit(2)
    except (AccountError, DemoRefused) as exc:
        click.echo(f"fieldloop: error: {exc}", err=True)
        sys.exit(2)
    except (CliFailure, SQLAlchemyError, BadDatabaseUrl) as exc:
        click.echo(f"fieldloop: error: {str(exc).splitlines()[0]}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
