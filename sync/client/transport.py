"""The device's HTTP transport: protocol v1 requests in msgpack, replies as shared_schema Structs.

Every urllib3 and socket error and every error status becomes a ``sync.errors`` exception here,
so the engine and the UI never see urllib3:

=========================================  ==================================
network down, timeout, 5xx, 429, junk      ``TransportError`` (retryable)
401 anywhere; 403 on enroll/challenge/token ``AuthError``
410                                        ``DeviceRevoked(wipe)``
426                                        ``UpgradeRequired(min_protocol)``
422 on a blob upload                       ``BlobRejected``
any other 4xx                              ``ProtocolError(code, message, detail)``
=========================================  ==================================

``HttpTransport`` sends through an ``HttpSession``: ``Urllib3Session`` on the device (urllib3
takes about half of httpx's CPU per request, see bench/transport_cpu.py, and a cheap phone pays
that in battery); tests put an in-process server behind the same seam.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode

import msgspec
import urllib3

from shared_schema.messages import (
    PROTOCOL_VERSION,
    ChallengeReply,
    ChallengeRequest,
    EnrollReply,
    EnrollRequest,
    ErrorBody,
    Mutation,
    PullReply,
    PushReply,
    PushRequest,
    TokenReply,
    TokenRequest,
)
from sync.errors import (
    AuthError,
    BlobRejected,
    DeviceRevoked,
    ProtocolError,
    TransportError,
    UpgradeRequired,
)

MSGPACK = "application/msgpack"
# Connect fails fast (a dead network shows at once); a pull of 1000 records over 2G may take long.
DEFAULT_TIMEOUT = urllib3.Timeout(connect=10.0, read=30.0)
DOWNLOAD_CHUNK = 256 * 1024

T = TypeVar("T")


class Transport(Protocol):
    """What the engine needs from the network; ``HttpTransport`` speaks it over HTTP, tests fake it."""

    def enroll(self, code: str, public_key_b64: str, label: str, app_version: str) -> EnrollReply: ...

    def challenge(self, device_id: str) -> ChallengeReply: ...

    def token(self, device_id: str, nonce: str, signature_b64: str) -> TokenReply: ...

    def push(self, token: str, mutations: Sequence[Mutation]) -> PushReply: ...

    def pull(self, token: str, cursor: str | None, limit: int) -> PullReply: ...

    def blob_head(self, token: str, sha: str) -> tuple[int, int | None]: ...

    def blob_patch(self, token: str, sha: str, offset: int, length: int, chunk: bytes) -> tuple[int, int | None]: ...

    def blob_chunks(self, token: str, sha: str, range_start: int = 0) -> Iterator[tuple[int, bytes]]: ...


# ---- the HTTP session seam --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A reply read to its end.

    Attributes:
        status: the HTTP status code.
        headers: the reply's headers, looked up case-insensitively.
        data: the whole body.
    """

    status: int
    headers: Mapping[str, str]
    data: bytes


@dataclass(frozen=True, slots=True)
class HttpStream:
    """A reply whose body is still arriving.

    Attributes:
        status: the HTTP status code.
        headers: the reply's headers, looked up case-insensitively.
        pieces: the body in order, in pieces of at most the size asked for; raises
            ``TransportError`` if the body is cut off.
    """

    status: int
    headers: Mapping[str, str]
    pieces: Iterator[bytes]


class HttpSession(Protocol):
    """How ``HttpTransport`` sends a request: ``Urllib3Session`` on a device, an in-process server in tests.

    Every reply is returned whatever its status; a request that gets no complete reply (refused,
    reset, timed out, cut mid-body) raises ``TransportError``. Redirects are not followed.
    """

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> HttpReply:
        """Send a request and read its whole reply."""
        ...

    def stream(
        self, method: str, url: str, headers: Mapping[str, str], piece_size: int
    ) -> AbstractContextManager[HttpStream]:
        """Send a request and hand its reply over as the body arrives; leaving the block lets the connection go."""
        ...


class Urllib3Session:
    """``HttpSession`` over a urllib3 pool: keep-alive, the system's CA certificates for HTTPS.

    urllib3 neither retries (the engine retries with backoff and would multiply urllib3's
    attempts) nor follows redirects (a redirect comes back as the reply it is).

    Args:
        timeout: seconds for connect and for each read, or a ``urllib3.Timeout``.
    """

    def __init__(self, timeout: float | urllib3.Timeout = DEFAULT_TIMEOUT):
        self._pool = urllib3.PoolManager(timeout=timeout, retries=False)

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> HttpReply:
        """Send a request and read its whole reply.

        Raises:
            TransportError: no complete reply (refused, reset, timed out).
        """
        try:
            response = self._pool.request(method, url, body=body, headers=headers, redirect=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _failure(method, url, exc) from exc
        return HttpReply(response.status, response.headers, response.data)

    @contextmanager
    def stream(self, method: str, url: str, headers: Mapping[str, str], piece_size: int) -> Iterator[HttpStream]:
        """Send a request and hand its reply over as the body arrives.

        Raises:
            TransportError: no reply, or the body was cut off.
        """
        try:
            response = self._pool.request(method, url, headers=headers, redirect=False, preload_content=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _failure(method, url, exc) from exc
        try:
            yield HttpStream(response.status, response.headers, _pieces_of(response, piece_size, method, url))
        finally:
            # A body left half read would be taken for the next reply on this keep-alive connection:
            # close it (a no-op once the body was read to its end) before the pool gets it back.
            response.close()
            response.release_conn()

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.clear()


def _pieces_of(response: urllib3.BaseHTTPResponse, piece_size: int, method: str, url: str) -> Iterator[bytes]:
    try:
        yield from response.stream(piece_size)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise TransportError(f"{method} {url} interrupted: {exc}") from exc


def _failure(method: str, url: str, exc: Exception) -> TransportError:
    # NewConnectionError is a ConnectTimeoutError in urllib3's tree; a refusal is not a timeout.
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return TransportError(f"{method} {url} could not connect: {exc}")
    if isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)):
        return TransportError(f"{method} {url} timed out")
    return TransportError(f"{method} {url} failed: {exc}")


# ---- the transport ----------------------------------------------------------------------


class HttpTransport:
    """Protocol v1 over HTTP with msgpack bodies.

    Args:
        base_url: the server's root, e.g. ``https://fieldloop.example.org`` (no ``/v1``). May be
            empty when ``session`` resolves paths itself (an in-process server in tests).
        session: the ``HttpSession`` to send through; a ``Urllib3Session`` made and owned here
            when omitted.
        timeout: connect and read timeout of a session made here, in seconds or a ``urllib3.Timeout``.
    """

    def __init__(
        self, base_url: str, *, session: HttpSession | None = None, timeout: float | urllib3.Timeout = DEFAULT_TIMEOUT
    ):
        self.base_url = base_url.rstrip("/")
        self._owned_session = Urllib3Session(timeout) if session is None else None
        self._session: HttpSession = session if session is not None else self._owned_session
        self._headers = {"Sync-Protocol": str(PROTOCOL_VERSION), "Accept": MSGPACK}

    def close(self) -> None:
        """Close the HTTP session if this transport made it."""
        if self._owned_session is not None:
            self._owned_session.close()

    # ---- enrollment and tokens ------------------------------------------------------

    def enroll(self, code: str, public_key_b64: str, label: str, app_version: str) -> EnrollReply:
        """Spend an enrollment code and register this device's public key.

        Raises:
            AuthError: the code is unknown, spent or expired.
        """
        body = EnrollRequest(code=code, public_key=public_key_b64, label=label, app_version=app_version)
        return self._call("POST", "/v1/devices/enroll", EnrollReply, body=body, auth_call=True)

    def challenge(self, device_id: str) -> ChallengeReply:
        """Ask for a single-use nonce to sign."""
        return self._call(
            "POST", "/v1/auth/challenge", ChallengeReply, body=ChallengeRequest(device_id=device_id), auth_call=True
        )

    def token(self, device_id: str, nonce: str, signature_b64: str) -> TokenReply:
        """Trade a signed nonce for a short-lived access token."""
        body = TokenRequest(device_id=device_id, nonce=nonce, signature=signature_b64)
        return self._call("POST", "/v1/auth/token", TokenReply, body=body, auth_call=True)

    # ---- push and pull --------------------------------------------------------------

    def push(self, token: str, mutations: Sequence[Mutation]) -> PushReply:
        """Send up to 500 mutations; the reply holds one result per mutation, same order."""
        return self._call("POST", "/v1/sync/push", PushReply, body=PushRequest(mutations=list(mutations)), token=token)

    def pull(self, token: str, cursor: str | None, limit: int) -> PullReply:
        """Fetch the next page of changes after ``cursor`` (None on a first sync)."""
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        return self._call("GET", f"/v1/sync/pull?{urlencode(params)}", PullReply, token=token)

    # ---- blobs ----------------------------------------------------------------------

    def blob_head(self, token: str, sha: str) -> tuple[int, int | None]:
        """Ask what the server holds of a blob.

        Returns:
            ``(200, None)`` complete; ``(200, n)`` an interrupted upload holds ``n`` bytes;
            ``(404, None)`` unknown.
        """
        reply = self._send("HEAD", f"/v1/blobs/{sha}", token=token)
        if reply.status == 404:
            return 404, None
        self._raise_for(reply, auth_call=False)
        offset = _offset(reply)
        if reply.status == 200 and offset is None and "Upload-Length" not in reply.headers:
            # A complete blob's HEAD carries Upload-Length (protocol, Changes 8). HTTP parsers take
            # a header block the connection ended as complete, so a reply cut after its status line
            # reads as a bare 200: taken at its word, a photo the server holds a part of would be
            # marked uploaded, and no other phone could ever download it.
            raise TransportError(f"HEAD /v1/blobs/{sha} was cut short: neither Upload-Length nor Upload-Offset")
        return reply.status, offset

    def blob_patch(self, token: str, sha: str, offset: int, length: int, chunk: bytes) -> tuple[int, int | None]:
        """Append one chunk of an upload at ``offset`` of a blob ``length`` bytes long.

        Returns:
            ``(201, None)`` the blob is complete and its hash matched; ``(200, None)`` the server
            already had it complete; ``(409, n)`` the server holds ``n`` bytes, resend from
            there; any other 2xx with the new ``Upload-Offset``.

        Raises:
            BlobRejected: the completed blob does not match ``sha`` (the server discarded it).
        """
        headers = {
            "Upload-Offset": str(offset),
            "Upload-Length": str(length),
            "Content-Type": "application/offset+octet-stream",
        }
        reply = self._send("PATCH", f"/v1/blobs/{sha}", token=token, body=chunk, headers=headers)
        if reply.status == 409:
            return 409, _offset(reply)
        if reply.status == 422:
            error = _error_of(reply)
            raise BlobRejected(
                error.code if error else "invalid", error.message if error else "blob hash mismatch", status=422
            )
        self._raise_for(reply, auth_call=False)
        return reply.status, _offset(reply)

    def blob_chunks(self, token: str, sha: str, range_start: int = 0) -> Iterator[tuple[int, bytes]]:
        """Stream a blob from ``range_start``, yielding ``(absolute offset, bytes)`` pieces.

        A server that ignores ``Range`` sends the whole blob: the first offset is then 0, and
        the caller must start over.
        """
        headers = self._headers_with(token, {"Range": f"bytes={range_start}-"} if range_start else None)
        with self._session.stream("GET", self._url(f"/v1/blobs/{sha}"), headers, DOWNLOAD_CHUNK) as reply:
            if reply.status >= 400:
                self._raise_for(HttpReply(reply.status, reply.headers, b"".join(reply.pieces)), auth_call=False)
            offset = range_start if reply.status == 206 else 0
            for piece in reply.pieces:
                yield offset, piece
                offset += len(piece)

    def blob_get(self, token: str, sha: str, range_start: int = 0) -> bytes:
        """A blob's bytes from ``range_start`` to its end (the whole blob when Range is ignored)."""
        return b"".join(piece for _, piece in self.blob_chunks(token, sha, range_start))

    # ---- plumbing -------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}" if self.base_url else path

    def _headers_with(self, token: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(self._headers)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if extra:
            headers.update(extra)
        return headers

    def _send(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpReply:
        return self._session.request(method, self._url(path), self._headers_with(token, headers), body)

    def _call(
        self,
        method: str,
        path: str,
        reply_type: type[T],
        *,
        body: msgspec.Struct | None = None,
        token: str | None = None,
        auth_call: bool = False,
    ) -> T:
        content = msgspec.msgpack.encode(body) if body is not None else None
        headers = {"Content-Type": MSGPACK} if body is not None else None
        reply = self._send(method, path, token=token, body=content, headers=headers)
        self._raise_for(reply, auth_call=auth_call)
        try:
            return _decode(reply, reply_type)
        except _UNREADABLE as exc:
            # A captive portal's HTML or a half-written reply: try again later.
            raise TransportError(f"unreadable reply to {method} {path}: {exc}", status=reply.status) from exc

    @staticmethod
    def _raise_for(reply: HttpReply, *, auth_call: bool) -> None:
        status = reply.status
        if status < 400:
            return
        error = _error_of(reply)
        code = error.code if error else f"http_{status}"
        message = error.message if error else _reason(status)
        if status == 429 or status >= 500:
            raise TransportError(f"server said {status}: {message}", status=status, retry_after=_retry_after(reply))
        if status == 410:
            wipe = bool(error.wipe) if error and error.wipe is not msgspec.UNSET else False
            raise DeviceRevoked(wipe=wipe, message=message)
        if status == 426:
            minimum = error.min_protocol if error and error.min_protocol is not msgspec.UNSET else PROTOCOL_VERSION + 1
            raise UpgradeRequired(int(minimum), message)
        if status == 401 or (status == 403 and auth_call):
            raise AuthError(code, message, status=status)
        raise ProtocolError(code, message, detail=error.detail if error else None, status=status)


# What msgspec raises on a body it cannot read. RecursionError: a value nested deeper than the
# decoder goes (a few thousand levels) is not a DecodeError, and would otherwise reach the app.
_UNREADABLE = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


def _decode(reply: HttpReply, reply_type: type[T]) -> T:
    if reply.headers.get("content-type", "").startswith("application/json"):
        return msgspec.json.decode(reply.data, type=reply_type)
    return msgspec.msgpack.decode(reply.data, type=reply_type)


def _error_of(reply: HttpReply) -> Any:
    """The protocol error body of a reply, or None when it has none we can read."""
    if not reply.data:
        return None
    try:
        return _decode(reply, ErrorBody).error
    except _UNREADABLE:
        return None


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _offset(reply: HttpReply) -> int | None:
    value = reply.headers.get("Upload-Offset")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _retry_after(reply: HttpReply) -> float | None:
    value = reply.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
