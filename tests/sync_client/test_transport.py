"""The HTTP transport: what goes on the wire, and how every failure becomes a sync error.

Canned replies from ``httpx.MockTransport`` behind the session seam; the real urllib3 session
(refusals, timeouts, streaming) is tested in test_transport_urllib3.py.
"""

from __future__ import annotations

import httpx
import msgspec
import pytest

from shared_schema.messages import PushReply
from sync.client import HttpTransport
from sync.errors import (
    AuthError,
    BlobRejected,
    DeviceRevoked,
    ProtocolError,
    TransportError,
    UpgradeRequired,
)
from tests.support.httpx_session import HttpxSession

SHA = "a" * 64


def transport_answering(handler) -> HttpTransport:  # noqa: ANN001
    return HttpTransport("http://server", session=HttpxSession(httpx.Client(transport=httpx.MockTransport(handler))))


def error(status: int, code: str, headers: dict | None = None, **extra) -> httpx.Response:
    body = {"error": {"code": code, "message": f"{code} happened", "detail": {"path": "$.x"}, **extra}}
    return httpx.Response(
        status, content=msgspec.msgpack.encode(body), headers={"content-type": "application/msgpack", **(headers or {})}
    )


def test_requests_carry_msgpack_the_protocol_version_and_the_token():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        reply = PushReply(results=[], server_time=1)
        return httpx.Response(
            200, content=msgspec.msgpack.encode(reply), headers={"content-type": "application/msgpack"}
        )

    reply = transport_answering(handler).push("tok", [])
    assert reply == PushReply(results=[], server_time=1)
    [request] = seen
    assert request.url == "http://server/v1/sync/push"
    assert request.headers["Sync-Protocol"] == "1"
    assert request.headers["Content-Type"] == "application/msgpack"
    assert request.headers["Authorization"] == "Bearer tok"
    assert msgspec.msgpack.decode(request.content) == {"mutations": []}


def test_a_json_reply_is_read_as_well():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"changes": [], "cursor": "c", "more": False, "server_time": 5})

    reply = transport_answering(handler).pull("tok", None, 10)
    assert (reply.cursor, reply.more, reply.server_time) == ("c", False, 5)


@pytest.mark.parametrize(
    ("response", "expected", "attrs"),
    [
        (error(503, "internal"), TransportError, {"status": 503}),
        (error(429, "rate_limited", {"Retry-After": "7"}), TransportError, {"retry_after": 7.0}),
        (error(410, "device_revoked", wipe=True), DeviceRevoked, {"wipe": True}),
        (error(410, "device_revoked", wipe=False), DeviceRevoked, {"wipe": False}),
        (error(426, "upgrade_required", min_protocol=2), UpgradeRequired, {"min_protocol": 2}),
        (error(401, "unauthenticated"), AuthError, {"status": 401}),
        (error(403, "forbidden"), ProtocolError, {"code": "forbidden"}),
        (error(422, "invalid"), ProtocolError, {"code": "invalid", "detail": {"path": "$.x"}, "status": 422}),
        (
            httpx.Response(200, text="<html>captive portal</html>", headers={"content-type": "text/html"}),
            TransportError,
            {},
        ),
        (httpx.Response(502, text="bad gateway"), TransportError, {"status": 502}),
    ],
)
def test_each_failure_of_a_sync_call_becomes_its_sync_error(response, expected, attrs):
    with pytest.raises(expected) as caught:
        transport_answering(lambda request: response).pull("tok", "c", 10)
    for name, value in attrs.items():
        assert getattr(caught.value, name) == value


# A pull reply whose one record holds a value nested 100,000 lists deep: msgspec gives up with a
# RecursionError, which is not one of its DecodeErrors.
NESTED_TOO_DEEP = msgspec.msgpack.encode(
    {"changes": [{"entity": "household", "id": "x", "version": 1, "hlc": "h", "fields": {"notes": "HOLE"}}],
     "cursor": "c", "more": False, "server_time": 5}
).replace(msgspec.msgpack.encode("HOLE"), b"\x91" * 100_000 + b"\xc0")


@pytest.mark.parametrize("status", [200, 503])
def test_a_reply_nested_too_deep_to_read_is_a_transport_error_not_a_recursion_error(status):
    answer = httpx.Response(status, content=NESTED_TOO_DEEP, headers={"content-type": "application/msgpack"})
    with pytest.raises(TransportError) as caught:
        transport_answering(lambda request: answer).pull("tok", "c", 10)
    assert caught.value.status == status


def test_a_403_on_enroll_is_an_auth_error():
    with pytest.raises(AuthError) as caught:
        transport_answering(lambda request: error(403, "forbidden")).enroll("CODE", "key", "", "")
    assert caught.value.status == 403


def test_blob_calls_read_offsets_and_refusals():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Upload-Offset": "1024"})
        if request.headers["Upload-Offset"] == "0":
            return httpx.Response(409, headers={"Upload-Offset": "1024"})
        return error(422, "invalid")

    transport = transport_answering(handler)
    assert transport.blob_head("t", SHA) == (200, 1024)
    assert transport.blob_patch("t", SHA, 0, 2048, b"x") == (409, 1024)
    with pytest.raises(BlobRejected):
        transport.blob_patch("t", SHA, 1024, 2048, b"x")


def test_a_download_resumes_with_a_range_and_notices_when_it_is_ignored():
    data = bytes(range(256)) * 10

    def handler(request: httpx.Request) -> httpx.Response:
        start = int(request.headers["Range"].split("=")[1].rstrip("-")) if "Range" in request.headers else 0
        if start == 100:
            return httpx.Response(206, content=data[start:])
        return httpx.Response(200, content=data)  # a server that ignores Range

    transport = transport_answering(handler)
    pieces = list(transport.blob_chunks("t", SHA, 100))
    assert pieces[0][0] == 100 and b"".join(p for _, p in pieces) == data[100:]
    pieces = list(transport.blob_chunks("t", SHA, 7))
    assert pieces[0][0] == 0 and b"".join(p for _, p in pieces) == data
