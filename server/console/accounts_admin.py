"""The small account changes the console makes that the accounts service does not offer yet.

Everything else (create users and grids, assign grids, set passwords, enrollment codes, retire,
revoke) is the lead's ``server.accounts.service`` / ``server.devices.service``; the console calls it.
"""

from __future__ import annotations

import datetime
import hashlib

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.accounts.service import AccountError, Role
from server.console.actions import ActionRefused
from server.db.models import Device, EnrollmentCode, Grid, RecordRow, User, UserGrid


async def set_role_and_active(
    sm: async_sessionmaker, user_id: str, role: str, active: bool, acting_user_id: str
) -> User:
    """Change a user's role and whether the user may sign in and sync.

    The console must keep one way in: an administrator cannot demote or deactivate themselves,
    nor the last other active administrator (two of them removing each other at once included).
    """
    if role not in {r.value for r in Role}:
        raise AccountError("unknown_role", f"unknown role {role!r}", role=role)
    removes_admin_access = role != Role.ADMIN.value or not active
    async with sm() as db, db.begin():
        # Every active administrator's row, locked in one order before anything is read: two
        # administrators removing each other's access at once are serialised (on SQLite the
        # write transaction already is), and the second one counts after the first's change.
        admins = set(
            await db.scalars(
                select(User.id)
                .where(User.role == Role.ADMIN.value, User.active.is_(True))
                .order_by(User.id)
                .with_for_update()
            )
        )
        user = await db.get(User, user_id, populate_existing=True)
        if user is None:
            raise AccountError("no_user", "no such user", name=user_id)
        if user_id == acting_user_id and removes_admin_access:
            raise ActionRefused("own_admin_access")
        if removes_admin_access and user_id in admins and not admins - {user_id}:
            raise ActionRefused("last_admin")
        user.role, user.active = role, active
    return user


def account_state(user: User, grid_ids: frozenset[str]) -> str:
    """What the user page shows and saves (role, active, grids), as one token the page sends back:
    a save from a page another administrator has since changed would undo that change."""
    shown = f"{user.role}|{int(bool(user.active))}|{','.join(sorted(grid_ids))}"
    return hashlib.sha256(shown.encode()).hexdigest()[:16]


async def user_overview(sm: async_sessionmaker, page: int, size: int | None) -> tuple[list, int]:
    """Users with their grid names and device counts, by name."""
    async with sm() as db:
        total = await db.scalar(select(func.count()).select_from(User)) or 0
        stmt = select(User).order_by(User.role, User.name)
        if size is not None:
            stmt = stmt.limit(size).offset((page - 1) * size)
        users = list((await db.scalars(stmt)).all())
        ids = [u.id for u in users]
        grid_rows = (
            (
                await db.execute(
                    select(UserGrid.user_id, Grid.name)
                    .join(Grid, Grid.id == UserGrid.grid_id)
                    .where(UserGrid.user_id.in_(ids))
                )
            ).all()
            if ids
            else []
        )
        device_rows = (
            (
                await db.execute(
                    select(Device.user_id, func.count())
                    .where(Device.user_id.in_(ids), Device.status == "active")
                    .group_by(Device.user_id)
                )
            ).all()
            if ids
            else []
        )
    grids: dict[str, list[str]] = {}
    for uid, name in grid_rows:
        grids.setdefault(uid, []).append(name)
    devices = dict(device_rows)
    return [(u, sorted(grids.get(u.id, [])), devices.get(u.id, 0)) for u in users], total


async def grid_overview(sm: async_sessionmaker, page: int, size: int | None) -> tuple[list, int]:
    """Grids by community with how many workers and households each has."""
    async with sm() as db:
        total = await db.scalar(select(func.count()).select_from(Grid)) or 0
        stmt = select(Grid).order_by(Grid.community, Grid.name)
        if size is not None:
            stmt = stmt.limit(size).offset((page - 1) * size)
        grids = list((await db.scalars(stmt)).all())
        ids = [g.id for g in grids]
        workers = (
            dict(
                (
                    await db.execute(
                        select(UserGrid.grid_id, func.count())
                        .where(UserGrid.grid_id.in_(ids))
                        .group_by(UserGrid.grid_id)
                    )
                ).all()
            )
            if ids
            else {}
        )
        homes = (
            dict(
                (
                    await db.execute(
                        select(RecordRow.grid_id, func.count())
                        .where(
                            RecordRow.entity == "household", RecordRow.deleted.is_(False), RecordRow.grid_id.in_(ids)
                        )
                        .group_by(RecordRow.grid_id)
                    )
                ).all()
            )
            if ids
            else {}
        )
    return [(g, workers.get(g.id, 0), homes.get(g.id, 0)) for g in grids], total


async def communities(sm: async_sessionmaker) -> list[tuple[str, int]]:
    async with sm() as db:
        return list(
            (
                await db.execute(select(Grid.community, func.count()).group_by(Grid.community).order_by(Grid.community))
            ).all()
        )


async def recent_enrollment_codes(sm: async_sessionmaker, limit: int = 20) -> list:
    """The latest codes issued as (code row, user name, device label, used|expired|open). The codes
    themselves are stored only as hashes, so they cannot be shown again."""
    now = datetime.datetime.now(datetime.UTC)
    async with sm() as db:
        rows = await db.execute(
            select(EnrollmentCode, User.name, Device.label)
            .join(User, User.id == EnrollmentCode.user_id)
            .outerjoin(Device, Device.id == EnrollmentCode.device_id)
            .order_by(EnrollmentCode.created_at.desc())
            .limit(limit)
        )
        out = []
        for code, name, label in rows.all():
            expires = code.expires_at if code.expires_at.tzinfo else code.expires_at.replace(tzinfo=datetime.UTC)
            state = "used" if code.used_at else "expired" if expires < now else "open"
            out.append((code, name, label, state))
        return out
