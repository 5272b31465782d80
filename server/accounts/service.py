"""Accounts: create users and grids, assign grids, set passwords.

Every grid is also a synced record (entity ``grid``, its fields ``name``, ``community`` and
``workers``), written through the one write path so devices pull it like any other record.
"""

from __future__ import annotations

import contextlib
import enum
import unicodedata
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.accounts.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, hash_password
from server.db.models import Grid, RecordRow, User, UserGrid
from server.records.writes import SERVER, apply_in_transaction, server_clock
from shared_schema.messages import Mutation


_Named = TypeVar("_Named", User, Grid)


class Role(str, enum.Enum):
    GRID_WORKER = "grid_worker"
    RED_STEWARD = "red_steward"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


FIELD_ROLES = frozenset({Role.GRID_WORKER.value, Role.RED_STEWARD.value})


class AccountError(ValueError):
    """A request about accounts that cannot be carried out.

    The message says why in English (the CLI prints it); ``code`` and ``params`` say it to the
    console, which shows ``error.account.<code>`` from its catalogs in the user's language.
    """

    def __init__(self, code: str, message: str, **params: object):
        super().__init__(message)
        self.code = code
        self.params = params


def fold_name(name: str | None) -> str:
    """A user, grid or community name as it is stored and looked up: compatibility characters
    as their plain forms (NFKC), so that "１号网格" typed in an input method's fullwidth mode is
    the grid "1号网格", and "ｗａｎｇ" the user "wang"; no spaces around it."""
    return unicodedata.normalize("NFKC", name or "").strip()


def _check_name(name: str, what: str) -> str:
    name = fold_name(name)
    if not name or len(name) > 100:
        raise AccountError(f"{what}_name_length", f"a {what} name must have 1 to 100 characters")
    # Control and format characters (NUL, a right-to-left override) make a name that reads as
    # another one, or that a terminal or a spreadsheet shows wrongly.
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise AccountError(f"{what}_name_characters", f"a {what} name may not hold control or formatting characters")
    return name


def _check_password(password: str) -> None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise AccountError("password_length",
                           f"a password needs {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
                           min=MIN_PASSWORD_LENGTH, max=MAX_PASSWORD_LENGTH)


async def add_grid(sessionmaker: async_sessionmaker, name: str, community: str) -> Grid:
    """Create a grid and its synced record."""
    name, community = _check_name(name, "grid"), _check_name(community, "community")
    taken = AccountError("grid_exists", f"a grid named {name!r} exists already", name=name)
    async with _name_taken_is_refused(taken), sessionmaker() as session, session.begin():
        if await session.scalar(select(Grid.id).where(func.lower(Grid.name) == name.lower())):
            raise taken
        grid = Grid(id=str(uuid.uuid4()), name=name, community=community)
        await _write_grid_record(session, grid.id, {"name": name, "community": community, "workers": []})
        session.add(grid)
    return grid


@contextlib.asynccontextmanager
async def _name_taken_is_refused(taken: AccountError) -> AsyncIterator[None]:
    """The check for a taken name and the insert are two statements: two administrators submitting
    the same name at once both pass the check, and the database's unique name refuses the second."""
    try:
        yield
    except IntegrityError:
        raise taken from None


async def grids_by_name(session: AsyncSession, names: Sequence[str]) -> list[Grid]:
    """The grids of these names, as typed or folded (``fold_name``), in the order given; a grid
    named twice, in one spelling or two, comes once."""
    names = list(dict.fromkeys(names))
    wanted = set(names) | {fold_name(n) for n in names}
    found = {g.name: g for g in (await session.execute(select(Grid).where(Grid.name.in_(wanted)))).scalars()}
    missing = [n for n in names if _named(found, n) is None]
    if missing:
        raise AccountError("no_grid", f"no grid named {', '.join(map(repr, missing))}", names="、".join(missing))
    return list({g.id: g for g in (_named(found, n) for n in names)}.values())


def _named(found: dict[str, _Named], name: str) -> _Named | None:
    # The name as typed first: a name stored before names were folded is found as it was written.
    return found.get(name) or found.get(fold_name(name))


async def create_user(
    sessionmaker: async_sessionmaker,
    name: str,
    role: str,
    grid_names: list[str] = (),
    password: str | None = None,
) -> User:
    """Create a user with a role, grids and (for the console) a password."""
    name = _check_name(name, "user")
    if role not in {r.value for r in Role}:
        raise AccountError("unknown_role", f"unknown role {role!r}: one of {', '.join(r.value for r in Role)}",
                           role=role)
    if password is not None:
        _check_password(password)
    taken = AccountError("user_exists", f"a user named {name!r} exists already", name=name)
    async with _name_taken_is_refused(taken), sessionmaker() as session, session.begin():
        # Names that differ only in case would be two logins a person cannot tell apart.
        if await session.scalar(select(User.id).where(func.lower(User.name) == name.lower())):
            raise taken
        grids = await grids_by_name(session, grid_names)
        user = User(id=str(uuid.uuid4()), name=name, role=role,
                    password_hash=hash_password(password) if password else None)
        session.add(user)
        await session.flush()
        await _assign(session, user.id, [g.id for g in grids])
    return user


async def set_grids(sessionmaker: async_sessionmaker, user_name: str, grid_names: list[str]) -> None:
    """Replace the grids a user works in (the user's devices then pull the new scope)."""
    async with sessionmaker() as session, session.begin():
        user = await user_by_name(session, user_name)
        grids = await grids_by_name(session, grid_names)
        await _assign(session, user.id, [g.id for g in grids])


async def set_password(sessionmaker: async_sessionmaker, user_name: str, password: str) -> None:
    _check_password(password)
    async with sessionmaker() as session, session.begin():
        user = await user_by_name(session, user_name)
        user.password_hash = hash_password(password)


async def find_user(session: AsyncSession, name: str) -> User | None:
    """The user of this name, as typed or folded (``fold_name``)."""
    found = {u.name: u for u in await session.scalars(select(User).where(User.name.in_({name, fold_name(name)})))}
    return _named(found, name)


async def user_by_name(session: AsyncSession, name: str) -> User:
    user = await find_user(session, name)
    if user is None:
        raise AccountError("no_user", f"no user named {name!r}", name=name)
    return user


async def user_grid_ids(session: AsyncSession, user_id: str) -> frozenset[str]:
    rows = await session.execute(select(UserGrid.grid_id).where(UserGrid.user_id == user_id))
    return frozenset(rows.scalars())


async def _assign(session: AsyncSession, user_id: str, grid_ids: list[str]) -> None:
    before = await user_grid_ids(session, user_id)
    after = frozenset(grid_ids)
    if before == after:
        return
    touched = sorted(before ^ after)
    await session.execute(delete(UserGrid).where(UserGrid.user_id == user_id))
    for grid_id in after:
        session.add(UserGrid(user_id=user_id, grid_id=grid_id))
    await session.flush()
    for grid_id in touched:
        workers = sorted(
            (await session.execute(select(UserGrid.user_id).where(UserGrid.grid_id == grid_id))).scalars()
        )
        await _write_grid_record(session, grid_id, {"workers": workers})


async def _write_grid_record(session: AsyncSession, grid_id: str, fields: dict) -> None:
    version = await session.scalar(select(RecordRow.version).where(RecordRow.id == grid_id)) or 0
    mutation = Mutation(
        mid=str(uuid.uuid4()),
        entity="grid",
        id=grid_id,
        op="upsert",
        base_version=version,
        hlc=server_clock().now(),
        fields=fields,
    )
    [result] = await apply_in_transaction(session, [mutation], SERVER)
    if result.status.value == "rejected":
        raise AccountError("grid_record", f"grid record not written: {result.error.message}",
                           reason=result.error.message)
