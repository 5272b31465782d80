"""The device's HTTP transport: protocol v1 requests in msgpack, replies as shared_schema Structs.

Every httpx error and every error status becomes a ``sync.errors`` exception here, so the
engine and the UI never see httpx:

=========================================  ==================================
network down, timeout, 5xx, 429, junk      ``TransportError`` (retryable)
401 anywhere; 403 on enroll/challenge/token ``AuthError``
410                                        ``DeviceRevoked(wipe)``
426                                        ``UpgradeRequired(min_protocol)``
422 on a blob upload                       ``BlobRejected``
any other 4xx                              ``ProtocolError(code, message, detail)``
=========================================  ==================================
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar

import httpx
import msgspec

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
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
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


class HttpTransport:
    """Protocol v1 over HTTP with msgpack bodies.

    Args:
        base_url: the server's root, e.g. ``https://fieldloop.example.org`` (no ``/v1``). May be
            empty when ``client`` carries its own ``base_url``.
        client: an httpx client to use (Litestar's ``TestClient`` is one); made and owned here
            when omitted.
        timeout: per-request timeout for a client made here.
    """

    def __init__(
        self, base_url: str, *, client: httpx.Client | None = None, timeout: float | httpx.Timeout = DEFAULT_TIMEOUT
    ):
        self.base_url = base_url.rstrip("/")
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._headers = {"Sync-Protocol": str(PROTOCOL_VERSION), "Accept": MSGPACK}

    def close(self) -> None:
        """Close the HTTP client if this transport made it."""
        if self._owns_client:
            self._client.close()

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
        return self._call("GET", "/v1/sync/pull", PullReply, params=params, token=token)

    # ---- blobs ----------------------------------------------------------------------

    def blob_head(self, token: str, sha: str) -> tuple[int, int | None]:
        """Ask what the server holds of a blob.

        Returns:
            ``(200, None)`` complete; ``(200, n)`` an interrupted upload holds ``n`` bytes;
            ``(404, None)`` unknown.
        """
        response = self._send("HEAD", f"/v1/blobs/{sha}", token=token)
        if response.status_code == 404:
            return 404, None
        self._raise_for(response, auth_call=False)
        return response.status_code, _offset(response)

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
        response = self._send("PATCH", f"/v1/blobs/{sha}", token=token, content=chunk, headers=headers)
        if response.status_code == 409:
            return 409, _offset(response)
        if response.status_code == 422:
            error = _error_of(response)
            raise BlobRejected(
                error.code if error else "invalid", error.message if error else "blob hash mismatch", status=422
            )
        self._raise_for(response, auth_call=False)
        return response.status_code, _offset(response)

    def blob_chunks(self, token: str, sha: str, range_start: int = 0) -> Iterator[tuple[int, bytes]]:
        """Stream a blob from ``range_start``, yielding ``(absolute offset, bytes)`` pieces.

        A server that ignores ``Range`` sends the whole blob: the first offset is then 0, and
        the caller must start over.
        """
        headers = {"Range": f"bytes={range_start}-"} if range_start else {}
        try:
            with self._client.stream(
                "GET", self._url(f"/v1/blobs/{sha}"), headers=self._headers_with(token, headers)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response, auth_call=False)
                offset = range_start if response.status_code == 206 else 0
                for piece in response.iter_bytes(DOWNLOAD_CHUNK):
                    yield offset, piece
                    offset += len(piece)
        except httpx.HTTPError as exc:
            raise TransportError(f"blob download interrupted: {exc}") from exc

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
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            return self._client.request(
                method, self._url(path), content=content, params=params, headers=self._headers_with(token, headers)
            )
        except httpx.TimeoutException as exc:
            raise TransportError(f"{method} {path} timed out") from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {path} failed: {exc}") from exc
        except OSError as exc:  # a socket error httpx did not wrap
            raise TransportError(f"{method} {path} failed: {exc}") from exc

    def _call(
        self,
        method: str,
        path: str,
        reply_type: type[T],
        *,
        body: msgspec.Struct | None = None,
        params: dict[str, Any] | None = None,
        token: str | None = None,
        auth_call: bool = False,
    ) -> T:
        content = msgspec.msgpack.encode(body) if body is not None else None
        headers = {"Content-Type": MSGPACK} if body is not None else None
        response = self._send(method, path, token=token, content=content, params=params, headers=headers)
        self._raise_for(response, auth_call=auth_call)
        try:
            return _decode(response, reply_type)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # A captive portal's HTML or a half-written reply: try again later.
            raise TransportError(f"unreadable reply to {method} {path}: {exc}", status=response.status_code) from exc

    @staticmethod
    def _raise_for(response: httpx.Response, *, auth_call: bool) -> None:
        status = response.status_code
        if status < 400:
            return
        error = _error_of(response)
        code = error.code if error else f"http_{status}"
        message = error.message if error else response.reason_phrase
        if status == 429 or status >= 500:
            raise TransportError(f"server said {status}: {message}", status=status, retry_after=_retry_after(response))
        if status == 410:
            wipe = bool(error.wipe) if error and error.wipe is not msgspec.UNSET else False
            raise DeviceRevoked(wipe=wipe, message=message)
        if status == 426:
            minimum = error.min_protocol if error and error.min_protocol is not msgspec.UNSET else PROTOCOL_VERSION + 1
            raise UpgradeRequired(int(minimum), message)
        if status == 401 or (status == 403 and auth_call):
            raise AuthError(code, message, status=status)
        raise ProtocolError(code, message, detail=error.detail if error else None, status=status)


def _decode(response: httpx.Response, reply_type: type[T]) -> T:
    if response.headers.get("content-type", "").startswith("application/json"):
        return msgspec.json.decode(response.content, type=reply_type)
    return msgspec.msgpack.decode(response.content, type=reply_type)


def _error_of(response: httpx.Response) -> Any:
    """The protocol error body of a reply, or None when it has none we can read."""
    if not response.content:
        return None
    try:
        return _decode(response, ErrorBody).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _offset(response: httpx.Response) -> int | None:
    value = response.headers.get("Upload-Offset")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
