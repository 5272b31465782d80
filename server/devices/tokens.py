"""Short-lived access tokens: ``v1.<payload>.<mac>``, HMAC-SHA256 under a secret every server
process reads from the database, so a token from one process is good at another."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.db.models import ServerSecret
from server.db.inserts import insert_ignoring_duplicates

TOKEN_SECRET = "token_hmac"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def load_token_secret(sessionmaker: async_sessionmaker) -> bytes:
    """The shared signing secret, made by whichever process starts first."""
    async with sessionmaker() as session, session.begin():
        await session.execute(
            insert_ignoring_duplicates(session.bind.dialect.name, ServerSecret),
            [{"name": TOKEN_SECRET, "value": secrets.token_bytes(32)}],
        )
        return await session.scalar(select(ServerSecret.value).where(ServerSecret.name == TOKEN_SECRET))


def make_token(secret: bytes, device_id: str, expires_ms: int) -> str:
    payload = _b64(msgspec.msgpack.encode([device_id, expires_ms]))
    mac = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    return f"v1.{payload}.{_b64(mac)}"


def read_token(secret: bytes, token: str) -> tuple[str, int] | None:
    """The (device id, expiry ms) a token carries, or None when it is not one of ours."""
    try:
        version, payload, mac = token.split(".")
        if version != "v1":
            return None
        wanted = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(wanted, _unb64(mac)):
            return None
        device_id, expires_ms = msgspec.msgpack.decode(_unb64(payload))
        return str(device_id), int(expires_ms)
    except (ValueError, TypeError, msgspec.DecodeError):
        return None
