"""The protocol's error catalogue and the one place that turns errors into HTTP replies.

Domain code raises ``ApiError`` subclasses; ``exception_handlers`` maps them, Litestar's own
HTTP exceptions and anything unexpected to the protocol's body
``{"error": {"code", "message", "detail"}, "server_time"}``. Nothing a client sends may produce
a 500: an unexpected exception is logged and answered 500 only for the server's own faults. A
database that cannot be reached is not a fault of the request: ``503 unavailable``, with
``Retry-After``, and the device tries again later (Changes 15).
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

from server.db.outage import RETRY_AFTER_S, database_unreachable
from server.wire import encode_reply
from shared_schema.messages import ErrorBody, ErrorDetail
from sync.hlc import wall_now_ms

log = logging.getLogger("fieldloop")


class ApiError(Exception):
    status = 400
    code = "malformed"

    def __init__(self, message: str, detail: dict[str, Any] | None = None, **extra: Any):
        super().__init__(message)
        self.message = message
        self.detail = detail or {}
        self.extra = extra


class Malformed(ApiError):
    status, code = 400, "malformed"


class Unauthenticated(ApiError):
    status, code = 401, "unauthenticated"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class DeviceRevoked(ApiError):
    status, code = 410, "device_revoked"

    def __init__(self, wipe: bool):
        message = "this device was revoked; its data must be erased" if wipe else "this device was retired"
        super().__init__(message, wipe=wipe)


class TooLarge(ApiError):
    status, code = 413, "too_large"


class Invalid(ApiError):
    status, code = 422, "invalid"


class UpgradeRequired(ApiError):
    status, code = 426, "upgrade_required"

    def __init__(self, message: str, min_protocol: int):
        super().__init__(message, min_protocol=min_protocol)


class RateLimited(ApiError):
    status, code = 429, "rate_limited"


class Unavailable(ApiError):
    """The server cannot do it now (its database unreachable, its disk full); the same request
    will work later. Answered with ``Retry-After`` (Changes 15)."""

    status, code = 503, "unavailable"


_STATUS_CODES = {400: "malformed", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
                 405: "malformed", 409: "conflict", 410: "device_revoked", 413: "too_large",
                 415: "malformed", 422: "invalid", 426: "upgrade_required", 429: "rate_limited"}


def error_response(request: Request, status: int, code: str, message: str, detail: dict | None = None,
                   headers: dict[str, str] | None = None, **extra: Any) -> Response:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, detail=detail or {}, **extra),
                     server_time=wall_now_ms())
    content, media_type = encode_reply(request, body)
    return Response(content=content, status_code=status, media_type=media_type, headers=headers)


def _api_error(request: Request, exc: ApiError) -> Response:
    headers = {"Upload-Offset": str(exc.extra["offset"])} if "offset" in exc.extra else None
    if isinstance(exc, Unavailable):
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    extra = {k: v for k, v in exc.extra.items() if k in ("wipe", "min_protocol")}
    return error_response(request, exc.status, exc.code, exc.message, exc.detail, headers=headers, **extra)


def _http_error(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    if status >= 500:
        log.exception("server fault on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(request, 500, "internal", "the server failed; the request was not applied")
    code = _STATUS_CODES.get(status, "malformed")
    detail = {"problems": exc.extra} if isinstance(exc.extra, list) and exc.extra else {}
    return error_response(request, status, code, str(exc.detail), detail, headers=exc.headers)


def _unexpected(request: Request, exc: Exception) -> Response:
    if database_unreachable(exc):
        log.warning("database unreachable on %s %s: %s", request.method, request.url.path, exc)
        return _api_error(request, Unavailable("the database cannot be reached; nothing was applied, try again later"))
    log.exception("server fault on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(request, 500, "internal", "the server failed; the request was not applied")


exception_handlers = {ApiError: _api_error, HTTPException: _http_error, Exception: _unexpected}
