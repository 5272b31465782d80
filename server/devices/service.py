"""Enrollment, authentication and the life of a device (protocol section 3)."""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import secrets
import unicodedata
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.accounts.service import FIELD_ROLES, AccountError, user_by_name, user_grid_ids
from server.db.driver_sql import DriverStatement
from server.db.models import AuthChallenge, Device, EnrollmentCode, Grid, User, UserGrid
from server.devices.ed25519 import usable_public_key
from server.devices.tokens import make_token, read_token
from server.errors import DeviceRevoked, Forbidden, Invalid, NotFound, Unauthenticated
from shared_schema.messages import (
    ChallengeReply,
    EnrollReply,
    EnrollRequest,
    GridInfo,
    TokenReply,
    UserInfo,
    token_message,
)
from sync.hlc import wall_now_ms

# Crockford's base32 without I, L, O, U: easy to read aloud and type on a phone.
_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


# Crockford's base32 reads the letters it leaves out as the digits they look like: a code read
# off paper or a screen as "K7QX-M3PA-9TZO" is still K7QX-M3PA-9TZ0.
_LOOK_ALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})


def normalise_code(code: str) -> str:
    """An enrollment code as it is checked: fullwidth characters as their ASCII (a Chinese
    keyboard's), case, dashes and spaces ignored, look-alike letters read as digits."""
    plain = unicodedata.normalize("NFKC", code).upper().translate(_LOOK_ALIKES)
    return "".join(ch for ch in plain if ch.isascii() and ch.isalnum())


def _code_hash(code: str) -> str:
    return hashlib.sha256(normalise_code(code).encode()).hexdigest()


def _aware(moment: datetime.datetime) -> datetime.datetime:
    # SQLite hands back naive datetimes for timezone-aware columns.
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


async def create_enrollment_code(sessionmaker: async_sessionmaker, user_name: str, ttl_s: int) -> str:
    """A one-time enrollment code for a field user, valid for ``ttl_s`` seconds."""
    async with sessionmaker() as session, session.begin():
        user = await user_by_name(session, user_name)
        if user.role not in FIELD_ROLES:
            raise AccountError("not_a_field_role",
                               f"{user_name} has the role {user.role}: only grid workers and red stewards enroll devices",
                               name=user_name)
        raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(12))
        code = "-".join(raw[i : i + 4] for i in range(0, 12, 4))
        session.add(
            EnrollmentCode(
                code_hash=_code_hash(code),
                user_id=user.id,
                expires_at=utcnow() + datetime.timedelta(seconds=ttl_s),
            )
        )
    return code


def _public_key(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("public_key is not base64", {"path": "$.public_key"}) from None
    if len(raw) != 32:
        raise Invalid("public_key must be a raw 32-byte Ed25519 key", {"path": "$.public_key"})
    if not usable_public_key(raw):
        # A key of small order: anyone could sign for it, without its private key.
        raise Invalid("public_key is not a usable Ed25519 key", {"path": "$.public_key"})
    return raw


async def enroll(sessionmaker: async_sessionmaker, request: EnrollRequest) -> EnrollReply:
    public_key = _public_key(request.public_key)
    async with sessionmaker() as session, session.begin():
        # Spend the code in the same statement that checks it: two racing enrollments can't both win.
        now = utcnow()
        spent = await session.execute(
            update(EnrollmentCode)
            .where(EnrollmentCode.code_hash == _code_hash(request.code), EnrollmentCode.used_at.is_(None))
            .values(used_at=now)
            .returning(EnrollmentCode.user_id, EnrollmentCode.expires_at)
        )
        row = spent.first()
        if row is None or _aware(row.expires_at) < now:
            raise Forbidden("this enrollment code is unknown, used or expired; ask your administrator for a new one")
        user = await session.get(User, row.user_id)
        if user is None or not user.active:
            raise Forbidden("the user of this enrollment code is no longer active")
        device = Device(
            id=str(uuid.uuid4()),
            user_id=user.id,
            public_key=public_key,
            label=request.label,
            app_version=request.app_version,
        )
        session.add(device)
        await session.execute(
            update(EnrollmentCode)
            .where(EnrollmentCode.code_hash == _code_hash(request.code))
            .values(device_id=device.id)
        )
        grid_ids = await user_grid_ids(session, user.id)
        grids = (await session.execute(select(Grid).where(Grid.id.in_(grid_ids)).order_by(Grid.name))).scalars()
        return EnrollReply(
            device_id=device.id,
            user=UserInfo(id=user.id, name=user.name, role=user.role),
            grids=[GridInfo(id=g.id, name=g.name, community=g.community) for g in grids],
            server_time=wall_now_ms(),
        )


async def _active_device(session, device_id: str) -> Device:  # noqa: ANN001
    device = await session.get(Device, device_id)
    if device is None:
        raise NotFound("this device is not enrolled here")
    _refuse_if_inactive(device.status, device.wipe)
    return device


def _refuse_if_inactive(status: str, wipe: bool) -> None:
    if status == "revoked":
        raise DeviceRevoked(wipe=wipe)
    if status == "retired":
        raise DeviceRevoked(wipe=False)


async def challenge(sessionmaker: async_sessionmaker, device_id: str, ttl_s: int) -> ChallengeReply:
    async with sessionmaker() as session, session.begin():
        await _active_device(session, device_id)
        now = utcnow()
        await session.execute(delete(AuthChallenge).where(AuthChallenge.expires_at < now))
        nonce = secrets.token_urlsafe(24)
        expires = now + datetime.timedelta(seconds=ttl_s)
        session.add(AuthChallenge(nonce=nonce, device_id=device_id, expires_at=expires))
    return ChallengeReply(nonce=nonce, expires_at=_iso(expires), server_time=wall_now_ms())


async def issue_token(
    sessionmaker: async_sessionmaker, secret: bytes, device_id: str, nonce: str, signature: str, ttl_s: int
) -> TokenReply:
    async with sessionmaker() as session, session.begin():
        device = await _active_device(session, device_id)
        # Deleting the nonce is what spends it: a replayed challenge finds nothing.
        taken = await session.execute(
            delete(AuthChallenge)
            .where(AuthChallenge.nonce == nonce, AuthChallenge.device_id == device_id)
            .returning(AuthChallenge.expires_at)
        )
        row = taken.first()
        if row is None or _aware(row.expires_at) < utcnow():
            raise Unauthenticated("this challenge is unknown, used or expired; ask for a new one")
        try:
            if not usable_public_key(device.public_key):  # stored before enrollment refused such keys
                raise InvalidSignature
            key = Ed25519PublicKey.from_public_bytes(device.public_key)
            key.verify(base64.b64decode(signature, validate=True), token_message(device_id, nonce))
        except (InvalidSignature, binascii.Error, ValueError):
            raise Unauthenticated("the signature does not match this device's key") from None
    expires = utcnow() + datetime.timedelta(seconds=ttl_s)
    token = make_token(secret, device_id, int(expires.timestamp() * 1000))
    return TokenReply(access_token=token, expires_at=_iso(expires), server_time=wall_now_ms())


@dataclass(frozen=True)
class DeviceContext:
    """The device behind a request and what it may touch."""

    device_id: str
    user_id: str
    user_name: str
    scope: frozenset[str]
    app_version: str


# Every sync request runs it: compiled once, run on the driver (server.db.driver_sql).
_DEVICE_CONTEXT = DriverStatement(
    select(Device.status, Device.wipe, Device.user_id, Device.app_version, User.name, User.active, UserGrid.grid_id)
    .join(User, User.id == Device.user_id)
    .outerjoin(UserGrid, UserGrid.user_id == Device.user_id)
    .where(Device.id == bindparam("device_id"))
)


def authenticate(connection: Connection, secret: bytes, authorization: str | None) -> DeviceContext:
    """The device a bearer token stands for; revoked devices are refused even with a good token."""
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthenticated("an Authorization: Bearer token is required")
    claims = read_token(secret, authorization[7:].strip())
    if claims is None:
        raise Unauthenticated("the access token is not valid")
    device_id, expires_ms = claims
    # One round trip per request: the device, its user and the user's grids together.
    rows = _DEVICE_CONTEXT.rows(connection, device_id=device_id)
    if not rows:
        raise Unauthenticated("the access token is not valid")
    status, wipe, user_id, app_version, user_name, active, _ = rows[0]
    _refuse_if_inactive(status, bool(wipe))
    if expires_ms < wall_now_ms():
        raise Unauthenticated("the access token has expired; get a new one")
    if not active:
        raise Forbidden("this user is no longer active")
    scope = frozenset(grid_id for *_, grid_id in rows if grid_id is not None)
    return DeviceContext(device_id, user_id, user_name, scope, app_version)


async def revoke(sessionmaker: async_sessionmaker, device_id: str, *, wipe: bool) -> Device:
    """Revoke a device: every later call gets 410; ``wipe`` tells it to erase its data."""
    return await _set_status(sessionmaker, device_id, "revoked", wipe)


async def retire(sessionmaker: async_sessionmaker, device_id: str) -> Device:
    return await _set_status(sessionmaker, device_id, "retired", False)


# How far a device is shut out. It only ever moves further: an order to wipe a lost phone must
# not be undone by a later retire or revoke without wipe (the phone would keep the data).
_SHUT_OUT = {("active", False): 0, ("retired", False): 1, ("revoked", False): 2, ("revoked", True): 3}


class DeviceStateRefused(AccountError):
    """The device is already shut out further than asked."""


async def _set_status(sessionmaker: async_sessionmaker, device_id: str, status: str, wipe: bool) -> Device:
    device_id = device_id.strip().lower()  # ids are lowercase UUIDs; one read off a screen may not be
    async with sessionmaker() as session, session.begin():
        # Locked on PostgreSQL (SQLite's write transaction holds the database already): a wipe and a
        # retire ordered at once must not both read "active", or the retire would keep the wipe flag
        # under a status that does not say it.
        device = await session.get(Device, device_id, with_for_update=True)
        if device is None:
            raise AccountError("no_device", f"no device {device_id!r}", device=device_id)
        now, asked = _SHUT_OUT[(device.status, bool(device.wipe))], _SHUT_OUT[(status, wipe)]
        if asked < now:
            shown = "revoked with wipe" if device.wipe else device.status
            raise DeviceStateRefused("device_shut_out", f"device {device_id} is already {shown}; that cannot be undone")
        if asked > now:  # asking again for the same state changes nothing, not even its time
            device.status = status
            device.wipe = wipe
            device.revoked_at = utcnow()
    return device


async def list_devices(sessionmaker: async_sessionmaker) -> list[tuple[Device, str]]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(Device, User.name).join(User, User.id == Device.user_id).order_by(Device.enrolled_at)
        )
        return [(d, name) for d, name in rows.all()]
