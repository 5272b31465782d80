"""HTTP handlers for protocol v1: decode, call a service, encode. Nothing else lives here."""

from __future__ import annotations

import time

from litestar import Request, Response, Router, get, head, patch, post
from litestar.datastructures import State
from litestar.exceptions import InternalServerException
from litestar.params import FromPath
from sqlalchemy import Connection

from server.blobs.service import check_hash, may_read, parse_range, receive_chunk, upload_state
from server.db import units
from server.devices import service as devices
from server.devices.service import DeviceContext
from server.errors import ApiError, Invalid, Malformed, NotFound, TooLarge, UpgradeRequired
from server.records.feed import BadCursor, Cursor, decode_cursor, encode_cursor, pull_page
from server.records.writes import Sender, commit_mutations
from server.wire import decode_body, encode_reply, stored_records
from shared_schema.messages import (
    DEFAULT_PULL_LIMIT,
    MAX_BLOB_BYTES,
    MAX_PULL_LIMIT,
    MAX_PUSH_BYTES,
    MAX_PUSH_MUTATIONS,
    PROTOCOL_VERSION,
    ChallengeRequest,
    EnrollRequest,
    MutationStatus,
    PullReply,
    PushReply,
    PushRequest,
    TokenRequest,
)
from shared_schema.workflow import Actor
from sync.hlc import wall_now_ms

MAX_SMALL_BODY = 16 * 1024


def _ascii_digits(text: str) -> bool:
    """Whether ``int(text)`` reads a plain decimal integer: 0-9 only, at most 30 of them.
    ``str.isdigit`` also takes ``²`` (which ``int`` then refuses: a 500) and other scripts'
    digits (which ``int`` reads: ``limit=５`` was a limit of 5), and ``int`` refuses more than
    4,300 digits (another 500)."""
    return len(text) <= 30 and text.isascii() and text.isdigit()


def _reply(request: Request, value: object, status: int = 200) -> Response:
    content, media_type = encode_reply(request, value)
    return Response(content=content, media_type=media_type, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and _ascii_digits(declared) and int(declared) > limit:
        raise TooLarge(f"the body may have at most {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the body may have at most {limit} bytes")
            chunks.append(chunk)
    except InternalServerException:
        # Litestar's word for a client that hung up before the end of its body: the client's
        # doing, not a server fault (it was logged as one, with a 500); nothing was applied.
        raise Malformed("the body ended early: the client disconnected") from None
    return b"".join(chunks)


async def check_protocol(request: Request) -> None:
    """Before every /v1 request: the client must speak a protocol version this server supports."""
    value = request.headers.get("sync-protocol")
    if value is None:
        raise Malformed("the Sync-Protocol header is required", {"supported": [PROTOCOL_VERSION]})
    if not _ascii_digits(value.strip()):
        raise Malformed("Sync-Protocol must be an integer", {"supported": [PROTOCOL_VERSION]})
    version = int(value)
    if version < PROTOCOL_VERSION:
        raise UpgradeRequired("this app is too old for the server; update it", min_protocol=PROTOCOL_VERSION)
    if version > PROTOCOL_VERSION:
        raise Malformed(f"this server speaks protocol {PROTOCOL_VERSION}", {"supported": [PROTOCOL_VERSION]})


async def _device(request: Request, state: State) -> DeviceContext:
    return await units.read(
        state.engine, devices.authenticate, state.token_secret, request.headers.get("authorization")
    )


@post("/devices/enroll", status_code=201)
async def enroll(request: Request, state: State) -> Response:
    """Enroll a device with a one-time code and its Ed25519 public key."""
    body = decode_body(request, await _read_body(request, MAX_SMALL_BODY), EnrollRequest)
    return _reply(request, await devices.enroll(state.sessionmaker, body), 201)


@post("/auth/challenge", status_code=200)
async def auth_challenge(request: Request, state: State) -> Response:
    """A single-use nonce for the device to sign."""
    body = decode_body(request, await _read_body(request, MAX_SMALL_BODY), ChallengeRequest)
    return _reply(request, await devices.challenge(state.sessionmaker, body.device_id, state.settings.challenge_ttl_s))


@post("/auth/token", status_code=200)
async def auth_token(request: Request, state: State) -> Response:
    """A short-lived access token for a signed nonce."""
    body = decode_body(request, await _read_body(request, MAX_SMALL_BODY), TokenRequest)
    reply = await devices.issue_token(
        state.sessionmaker, state.token_secret, body.device_id, body.nonce, body.signature, state.settings.token_ttl_s
    )
    return _reply(request, reply)


@post("/sync/push", status_code=200)
async def push(request: Request, state: State) -> Response:
    """Apply a batch of mutations, each on its own, in order; one result per mutation."""
    device = await _device(request, state)
    started = time.perf_counter()
    try:
        body = decode_body(request, await _read_body(request, MAX_PUSH_BYTES), PushRequest)
        if len(body.mutations) > MAX_PUSH_MUTATIONS:
            raise TooLarge(f"a push may carry at most {MAX_PUSH_MUTATIONS} mutations")
        sender = Sender(origin=device.device_id, actor=Actor.DEVICE, scope=device.scope,
                        device_id=device.device_id, user_id=device.user_id)
        results = await commit_mutations(state.sessionmaker, body.mutations, sender)
    except ApiError as exc:
        state.sync_log.add(device_id=device.device_id, user_id=device.user_id, kind="push",
                           app_version=device.app_version, error=exc.code)
        raise
    counts = {s.value: 0 for s in MutationStatus}
    for result in results:
        counts[result.status.value] += 1
    state.sync_log.add(device_id=device.device_id, user_id=device.user_id, kind="push", app_version=device.app_version,
                       duration_ms=int((time.perf_counter() - started) * 1000), mutations=len(results), **counts)
    return _reply(request, PushReply(results=results, server_time=wall_now_ms()))


@get("/sync/pull")
async def pull(request: Request, state: State) -> Response:
    """The changes in the device's scope after its cursor, one page at a time."""
    started = time.perf_counter()
    device, page = await units.read(
        state.engine, _authenticated_page, state.token_secret, state.cursor_key, request.headers.get("authorization"),
        request.query_params.get("cursor"), request.query_params.get("limit"),
    )
    if isinstance(page, ApiError):
        state.sync_log.add(device_id=device.device_id, user_id=device.user_id, kind="pull",
                           app_version=device.app_version, error=page.code)
        raise page
    records, next_cursor, more = page
    state.sync_log.add(device_id=device.device_id, user_id=device.user_id, kind="pull", app_version=device.app_version,
                       duration_ms=int((time.perf_counter() - started) * 1000), changes=len(records))
    return _reply(request, PullReply(changes=stored_records(request, records),
                                     cursor=encode_cursor(next_cursor, state.cursor_key, device.user_id),
                                     more=more, server_time=wall_now_ms()))


def _authenticated_page(
    connection: Connection, secret: bytes, key: bytes, authorization: str | None, cursor_text: str | None,
    limit_text: str | None,
) -> tuple[DeviceContext, tuple[list[bytes], Cursor, bool] | ApiError]:
    """One unit of work for a pull: who asks, then their page; a bad cursor or limit comes back
    as the error, beside the device, so that the sync log can name it. ``key`` checks the cursor
    (``cursor_key``): it must be one this server issued to the device's user."""
    device = devices.authenticate(connection, secret, authorization)
    try:
        limit = _pull_limit(limit_text)
        try:
            cursor = decode_cursor(cursor_text, key, device.user_id)
        except BadCursor as exc:
            raise Malformed(str(exc), {"path": "cursor"}) from None
        return device, pull_page(connection, device.scope, cursor, limit)
    except ApiError as exc:
        return device, exc


def _pull_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_PULL_LIMIT
    if not _ascii_digits(text) or not 1 <= int(text) <= MAX_PULL_LIMIT:
        raise Invalid(f"limit must be an integer from 1 to {MAX_PULL_LIMIT}", {"path": "limit"})
    return int(text)


@head("/blobs/{sha256:str}")
async def blob_head(request: Request, state: State, sha256: FromPath[str]) -> Response[None]:
    """200 when complete; 200 with Upload-Offset while an upload is under way; 404 unknown."""
    await _device(request, state)
    held = upload_state(state.blob_store, check_hash(sha256))
    if held.complete:
        return Response(content=None, status_code=200, headers={"Upload-Length": str(state.blob_store.size(sha256))})
    if held.offset is None:
        return Response(content=None, status_code=404)
    return Response(content=None, status_code=200, headers={"Upload-Offset": str(held.offset)})


def _int_header(request: Request, name: str) -> int:
    value = request.headers.get(name)
    if value is None or not _ascii_digits(value.strip()):
        raise Malformed(f"the {name} header must be a non-negative integer")
    return int(value)


@patch("/blobs/{sha256:str}", status_code=200)
async def blob_patch(request: Request, state: State, sha256: FromPath[str]) -> Response:
    """Append a chunk at Upload-Offset; the last chunk is checked against the hash."""
    await _device(request, state)
    check_hash(sha256)
    if state.blob_store.is_complete(sha256):
        return Response(content=b"", status_code=200, headers={"Upload-Offset": str(state.blob_store.size(sha256))})
    offset = _int_header(request, "Upload-Offset")
    length = _int_header(request, "Upload-Length")
    if length > MAX_BLOB_BYTES:
        raise TooLarge(f"a blob may have at most {MAX_BLOB_BYTES} bytes")
    data = await _read_body(request, MAX_BLOB_BYTES)
    complete, held = await receive_chunk(state.blob_store, sha256, offset, length, data)
    return Response(content=b"", status_code=201 if complete else 204, headers={"Upload-Offset": str(held)})


@get("/blobs/{sha256:str}")
async def blob_get(request: Request, state: State, sha256: FromPath[str]) -> Response:
    """A blob (or a Range of it) that a record in the device's scope refers to."""
    device = await _device(request, state)
    check_hash(sha256)
    if not state.blob_store.is_complete(sha256) or not await may_read(state.read_sessionmaker, sha256, device.scope):
        raise NotFound("no such blob in your grids")
    size = state.blob_store.size(sha256)
    span = parse_range(request.headers.get("range"), size)
    if span is None:
        return Response(content=state.blob_store.read(sha256), media_type="application/octet-stream",
                        headers={"Accept-Ranges": "bytes"})
    start, end = span
    return Response(
        content=state.blob_store.read(sha256, start, end),
        status_code=206,
        media_type="application/octet-stream",
        headers={"Content-Range": f"bytes {start}-{end - 1}/{size}", "Accept-Ranges": "bytes"},
    )


def v1_router() -> Router:
    return Router(
        path="/v1",
        route_handlers=[enroll, auth_challenge, auth_token, push, pull, blob_head, blob_patch, blob_get],
        before_request=check_protocol,
    )
