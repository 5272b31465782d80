"""An in-memory stand-in for the server, speaking the engine's ``Transport`` interface.

It merges with the real ``sync.merge.apply_mutation``, keeps first results per mid (G2), a
change feed with a cursor, resumable blob uploads, and lets a test script failures: a reply
lost after the commit, an upload cut halfway, expired tokens, revocation.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets
import uuid
from collections.abc import Callable, Iterator, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared_schema.messages import (
    ChallengeReply,
    EnrollReply,
    GridInfo,
    Mutation,
    MutationStatus,
    PullReply,
    PushReply,
    Record,
    Result,
    ResultError,
    TokenReply,
    UserInfo,
    token_message,
)
from shared_schema.workflow import Actor
from sync.errors import AuthError, BlobRejected, DeviceRevoked, ProtocolError, TransportError, UpgradeRequired
from sync.hlc import HybridClock
from sync.merge import RecordState, apply_mutation

GRID = "0190a000-0000-7000-8000-000000000001"
OTHER_GRID = "0190a000-0000-7000-8000-000000000002"


class FakeServer:
    """One server; ``connect()`` gives each device its own transport onto it."""

    def __init__(self, *, now_ms: Callable[[], int] | None = None):
        self.clock = HybridClock(node="fake-server")
        self._now = now_ms or self.clock.physical_ms
        self.records: dict[tuple[str, str], RecordState] = {}
        self.seq = 0
        self.changed_at: dict[tuple[str, str], int] = {}
        self.results: dict[str, Result] = {}
        self.applied_mids: list[str] = []  # every mid whose mutation actually ran, in order
        self.push_calls: list[list[str]] = []
        self.codes: set[str] = set()
        self.devices: dict[str, bytes] = {}  # device id -> raw public key
        self.revoked: dict[str, bool] = {}  # device id -> wipe
        self.nonces: set[str] = set()
        self.tokens: dict[str, str] = {}  # token -> device id
        self.token_calls = 0
        self.scope = frozenset({GRID})
        self.blobs: dict[str, bytes] = {}  # complete blobs
        self.partial: dict[str, bytearray] = {}
        self.patch_bytes: dict[str, int] = {}  # bytes received per blob, over all PATCHes
        self.patch_calls: list[tuple[str, int, int]] = []
        self.head_calls: list[str] = []
        self.get_calls: list[tuple[str, int]] = []
        # scripted failures
        self.lose_push_reply_once = False
        self.cut_upload_after: int | None = None  # raise once the partial upload holds this much
        self.cut_download_after: int | None = None
        self.corrupt_downloads = False
        self.refuse_mids: set[str] = set()  # a push holding one of these is refused as a whole (422)
        self.upgrade_required = False
        self.fail_pulls = 0  # answer this many pulls with 503
        self.token_ttl_s = 900

    # ---- administration ---------------------------------------------------------------

    def new_code(self) -> str:
        code = secrets.token_hex(6)
        self.codes.add(code)
        return code

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def connect(self) -> FakeTransport:
        return FakeTransport(self)

    def write_as(self, origin: str, mutation: Mutation) -> Result:
        """Apply a mutation as some other device (or the console) would."""
        return self._commit(mutation, origin)

    def _commit(self, mutation: Mutation, origin: str) -> Result:
        if mutation.mid in self.results:
            return self.results[mutation.mid]
        key = (mutation.entity, mutation.id)
        stamp = mutation.hlc
        self.clock.observe(stamp)
        outcome = apply_mutation(
            self.records.get(key), mutation, stamp=stamp, origin=origin, actor=Actor.DEVICE, scope=self.scope
        )
        self.applied_mids.append(mutation.mid)
        if outcome.status is MutationStatus.REJECTED:
            result = Result(
                mid=mutation.mid,
                status=outcome.status,
                version=outcome.state.version if outcome.state else 0,
                error=ResultError(code=outcome.rejection.code.value, message=outcome.rejection.message),
            )
        else:
            if outcome.changed:
                self.records[key] = outcome.state
                self.seq += 1
                self.changed_at[key] = self.seq
            state = self.records[key]
            result = Result(
                mid=mutation.mid,
                status=outcome.status,
                version=state.version,
                record=state.to_record(),
                **({"conflicts": outcome.conflicts} if outcome.conflicts else {}),
            )
        self.results[mutation.mid] = result
        return result

    def record(self, entity: str, id_: str) -> Record | None:
        state = self.records.get((entity, id_))
        return state.to_record() if state else None


class FakeTransport:
    """The engine's view of a ``FakeServer`` (what ``HttpTransport`` is for a real one)."""

    base_url = "fake://server"

    def __init__(self, server: FakeServer):
        self.server = server

    def _device(self, token: str) -> str:
        s = self.server
        if s.upgrade_required:
            raise UpgradeRequired(2)
        device_id = s.tokens.get(token)
        if device_id is None:
            raise AuthError("unauthenticated", "token expired", status=401)
        if device_id in s.revoked:
            raise DeviceRevoked(wipe=s.revoked[device_id])
        return device_id

    def enroll(self, code: str, public_key_b64: str, label: str, app_version: str) -> EnrollReply:
        s = self.server
        if code not in s.codes:
            raise AuthError("forbidden", "unknown or spent code", status=403)
        s.codes.discard(code)
        device_id = str(uuid.uuid4())
        s.devices[device_id] = base64.b64decode(public_key_b64)
        return EnrollReply(
            device_id=device_id,
            user=UserInfo(id="u1", name="worker", role="grid_worker"),
            grids=[GridInfo(id=GRID, name="Grid 1", community="East")],
            server_time=s._now(),
        )

    def challenge(self, device_id: str) -> ChallengeReply:
        s = self.server
        if device_id in s.revoked:
            raise DeviceRevoked(wipe=s.revoked[device_id])
        nonce = secrets.token_urlsafe(16)
        s.nonces.add(nonce)
        return ChallengeReply(nonce=nonce, expires_at="2099-01-01T00:00:00Z", server_time=s._now())

    def token(self, device_id: str, nonce: str, signature_b64: str) -> TokenReply:
        s = self.server
        s.token_calls += 1
        if nonce not in s.nonces or device_id not in s.devices:
            raise AuthError("unauthenticated", "bad nonce", status=401)
        s.nonces.discard(nonce)
        try:
            Ed25519PublicKey.from_public_bytes(s.devices[device_id]).verify(
                base64.b64decode(signature_b64), token_message(device_id, nonce)
            )
        except InvalidSignature:
            raise AuthError("unauthenticated", "bad signature", status=401) from None
        token = secrets.token_urlsafe(16)
        s.tokens[token] = device_id
        now = s._now()
        expires = datetime.datetime.fromtimestamp(now / 1000 + s.token_ttl_s, datetime.UTC)
        return TokenReply(access_token=token, expires_at=expires.isoformat(), server_time=now)

    def push(self, token: str, mutations: Sequence[Mutation]) -> PushReply:
        s = self.server
        device_id = self._device(token)
        if len(mutations) > 500:
            raise ProtocolError("too_large", "too many", status=413)
        s.push_calls.append([m.mid for m in mutations])
        if any(m.mid in s.refuse_mids for m in mutations):
            raise ProtocolError("invalid", "a mutation does not fit", status=422)
        results = [s._commit(m, device_id) for m in mutations]
        if s.lose_push_reply_once:
            s.lose_push_reply_once = False
            raise TransportError("connection reset after the commit")
        return PushReply(results=results, server_time=s._now())

    def pull(self, token: str, cursor: str | None, limit: int) -> PullReply:
        s = self.server
        self._device(token)
        if s.fail_pulls:
            s.fail_pulls -= 1
            raise TransportError("server said 503", status=503)
        after = int(cursor) if cursor else 0
        changed = sorted((seq, key) for key, seq in s.changed_at.items() if seq > after)
        page = changed[:limit]
        changes = [s.records[key].to_record() for _, key in page if s.records[key].grid_id in s.scope]
        next_cursor = str(page[-1][0]) if page else str(after)
        return PullReply(changes=changes, cursor=next_cursor, more=len(changed) > limit, server_time=s._now())

    def blob_head(self, token: str, sha: str) -> tuple[int, int | None]:
        s = self.server
        self._device(token)
        s.head_calls.append(sha)
        if sha in s.blobs:
            return 200, None
        if sha in s.partial:
            return 200, len(s.partial[sha])
        return 404, None

    def blob_patch(self, token: str, sha: str, offset: int, length: int, chunk: bytes) -> tuple[int, int | None]:
        s = self.server
        self._device(token)
        s.patch_calls.append((sha, offset, len(chunk)))
        if sha in s.blobs:
            return 200, len(s.blobs[sha])
        held = s.partial.setdefault(sha, bytearray())
        if offset != len(held):
            return 409, len(held)
        s.patch_bytes[sha] = s.patch_bytes.get(sha, 0) + len(chunk)
        if s.cut_upload_after is not None and len(held) + len(chunk) > s.cut_upload_after:
            keep = s.cut_upload_after - len(held)
            held.extend(chunk[:keep])
            s.cut_upload_after = None
            raise TransportError("connection lost mid-upload")
        held.extend(chunk)
        if len(held) < length:
            return 204, len(held)
        data = bytes(s.partial.pop(sha))
        if hashlib.sha256(data).hexdigest() != sha:
            raise BlobRejected("invalid", "the uploaded bytes do not match their SHA-256", status=422)
        s.blobs[sha] = data
        return 201, len(data)

    def blob_chunks(self, token: str, sha: str, range_start: int = 0) -> Iterator[tuple[int, bytes]]:
        s = self.server
        self._device(token)
        s.get_calls.append((sha, range_start))
        if sha not in s.blobs:
            raise ProtocolError("not_found", "no such blob in your grids", status=404)
        data = s.blobs[sha]
        if s.corrupt_downloads:
            data = bytes(b ^ 0xFF for b in data)
        offset = range_start
        step = 1000
        while offset < len(data):
            if s.cut_download_after is not None and offset >= s.cut_download_after:
                s.cut_download_after = None
                raise TransportError("download cut")
            piece = data[offset : offset + step]
            yield offset, piece
            offset += len(piece)
