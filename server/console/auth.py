"""Console sign-in: password hashes, the signed session cookie, the CSRF token, and who may see what.

The session cookie is stateless: ``<user id>.<issued s>.<password fingerprint>.<hmac>``, signed
with a key kept in ``server_secrets`` so that every server process accepts it. The password
fingerprint ties the session to the password: a reset or a deactivation ends every open session.

CSRF is a double-submit token: a random value in its own HttpOnly cookie, repeated in a hidden
field of every form; a POST whose field does not match the cookie is refused. The session cookie
is also SameSite=Lax, so a cross-site form post carries no session at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.accounts.passwords import hash_password, verify_password
from server.accounts.service import Role, find_user, fold_name
from server.db.models import ServerSecret, User, UserGrid

SESSION_COOKIE = "fl_session"
CSRF_COOKIE = "fl_csrf"
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_SECRET_NAME = "console_session"
SESSION_MAX_AGE_S = 12 * 3600

ADMIN = Role.ADMIN.value
SUPERVISOR = Role.SUPERVISOR.value
CONSOLE_ROLES = frozenset({ADMIN, SUPERVISOR})

# Checked against when the user is unknown, so that a wrong name costs as much as a wrong password.
_DUMMY_HASH = hash_password("fieldloop-no-such-user")
__all__ = ["ConsoleUser", "authenticate", "hash_password", "user_from_session", "verify_password"]


@dataclass(frozen=True)
class ConsoleUser:
    """The signed-in console user and the grids every query is limited to."""

    id: str
    name: str
    role: str
    grid_ids: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    @property
    def scope(self) -> frozenset[str] | None:
        """The grid ids this user may read and write, None for every grid (administrators)."""
        return None if self.is_admin else self.grid_ids

    def may_see_grid(self, grid_id: str | None) -> bool:
        return self.is_admin or (grid_id is not None and grid_id in self.grid_ids)


async def session_key(sessionmaker: async_sessionmaker) -> bytes:
    """The HMAC key for session cookies, created on first use and shared by every process."""
    async with sessionmaker() as db:
        row = await db.get(ServerSecret, SESSION_SECRET_NAME)
        if row is not None:
            return row.value
    try:
        async with sessionmaker() as db, db.begin():
            row = await db.get(ServerSecret, SESSION_SECRET_NAME)
            if row is None:
                row = ServerSecret(name=SESSION_SECRET_NAME, value=secrets.token_bytes(32))
                db.add(row)
            return row.value
    except IntegrityError:  # another server process created it first: use theirs
        async with sessionmaker() as db:
            return (await db.get(ServerSecret, SESSION_SECRET_NAME)).value


def _fingerprint(password_hash: str | None) -> str:
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:16]


def _sign(key: bytes, payload: str) -> str:
    mac = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def make_session_token(key: bytes, user: User, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    payload = f"{user.id}.{issued}.{_fingerprint(user.password_hash)}"
    return f"{payload}.{_sign(key, payload)}"


def _parse_session_token(key: bytes, token: str, now: float) -> tuple[str, str] | None:
    parts = token.split(".")
    if len(parts) != 4:
        return None
    user_id, issued, fingerprint, mac = parts
    if not hmac.compare_digest(_sign(key, f"{user_id}.{issued}.{fingerprint}"), mac):
        return None
    try:
        age = now - int(issued)
    except ValueError:
        return None
    if age < -60 or age > SESSION_MAX_AGE_S:
        return None
    return user_id, fingerprint


async def user_from_session(sessionmaker: async_sessionmaker, key: bytes, token: str | None) -> ConsoleUser | None:
    """The console user a session cookie stands for, or None when it is absent, forged, stale or
    the user may no longer use the console."""
    if not token:
        return None
    parsed = _parse_session_token(key, token, time.time())
    if parsed is None:
        return None
    user_id, fingerprint = parsed
    async with sessionmaker() as db:
        user = await db.get(User, user_id)
        if user is None or not user.active or user.role not in CONSOLE_ROLES:
            return None
        if not hmac.compare_digest(_fingerprint(user.password_hash), fingerprint):
            return None
        grids = (await db.scalars(select(UserGrid.grid_id).where(UserGrid.user_id == user.id))).all()
    return ConsoleUser(id=user.id, name=user.name, role=user.role, grid_ids=frozenset(grids))


async def authenticate(sessionmaker: async_sessionmaker, name: str, password: str) -> User | None:
    """The user whose name and password match and who may use the console, else None."""
    async with sessionmaker() as db:
        user = await find_user(db, name)
    ok = verify_password(user.password_hash if user and user.password_hash else _DUMMY_HASH, password)
    if not ok or user is None or not user.password_hash or not user.active or user.role not in CONSOLE_ROLES:
        return None
    return user


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(cookie: str | None, submitted: str | None) -> bool:
    return bool(cookie) and bool(submitted) and hmac.compare_digest(cookie.encode(), submitted.encode())


def _throttle_key(name: str, address: str) -> tuple[str, str]:
    # Every spelling that signs in as one user counts against that user: "ｗａｎｇ" is "wang".
    return fold_name(name).lower(), address


class LoginThrottle:
    """Failed sign-ins per (name, address): after ``limit`` in ``window_s`` seconds, wait.

    Kept in the process's memory: it slows a password guesser down, it is not an account lockout
    (a guesser cannot lock a supervisor out from another address).
    """

    def __init__(self, limit: int = 5, window_s: float = 300.0):
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[tuple[str, str], list[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> list[float]:
        recent = [t for t in self._failures.get(key, []) if now - t < self.window_s]
        if recent:
            self._failures[key] = recent
        else:
            self._failures.pop(key, None)
        return recent

    def wait_s(self, name: str, address: str, now: float | None = None) -> float:
        """Seconds until this name may try again from this address (0: now)."""
        now = time.monotonic() if now is None else now
        recent = self._recent(_throttle_key(name, address), now)
        if len(recent) < self.limit:
            return 0.0
        return max(0.0, recent[0] + self.window_s - now)

    def failed(self, name: str, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        key = _throttle_key(name, address)
        self._recent(key, now)
        self._failures.setdefault(key, []).append(now)
        if len(self._failures) > 10_000:  # bounded: forget the oldest keys
            for stale in list(self._failures)[:1000]:
                del self._failures[stale]

    def succeeded(self, name: str, address: str) -> None:
        self._failures.pop(_throttle_key(name, address), None)
