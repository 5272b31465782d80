"""The transport as a phone runs it: urllib3 over a real socket, against a tiny local HTTP server.

test_transport.py checks the error table with canned replies; this file checks what only a real
socket shows: refusals, timeouts, keep-alive, no retries and no redirects, streaming with Range.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import pytest
import urllib3

from shared_schema.messages import PullReply
from sync.client import HttpTransport
from sync.client.transport import DOWNLOAD_CHUNK
from sync.errors import DeviceRevoked, TransportError

SHA = "b" * 64
BLOB = os.urandom(600 * 1024)  # three download pieces
EMPTY_PULL = msgspec.msgpack.encode(PullReply(changes=[], cursor="c2", more=False, server_time=9))


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    client_port: int


class LocalServer:
    """``http.server`` on 127.0.0.1 in a thread; each test sets ``answer`` and reads ``seen``."""

    def __init__(self):
        self.seen: list[Seen] = []
        self.answer: Callable[[BaseHTTPRequestHandler], None] = lambda handler: reply(handler, 200, EMPTY_PULL)
        self.released = threading.Event()  # lets a deliberately slow handler finish at teardown
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="local-http",
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address
        return f"http://{host}:{port}"

    def __enter__(self) -> "LocalServer":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LocalServer

    def handle_error(self, request, client_address):  # noqa: ANN001
        pass  # a client that timed out and left: expected here, not worth a traceback


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real server

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        owner = self.server.owner
        owner.seen.append(Seen(self.command, self.path, dict(self.headers), self.client_address[1]))
        owner.answer(self)

    do_GET = do_POST = do_HEAD = do_PATCH = _handle

    def log_message(self, *args: object) -> None:
        pass


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/msgpack")
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def error_body(code: str, **extra) -> bytes:
    return msgspec.msgpack.encode({"error": {"code": code, "message": f"{code} happened", **extra}})


def serve_blob(handler: BaseHTTPRequestHandler, *, honour_range: bool = True) -> None:
    requested = handler.headers.get("Range")
    if requested and honour_range:
        start = int(requested.removeprefix("bytes=").rstrip("-"))
        reply(handler, 206, BLOB[start:], {"Content-Range": f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}"})
    else:
        reply(handler, 200, BLOB)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as s:
        yield s


@pytest.fixture
def transport(server: LocalServer) -> Iterator[HttpTransport]:
    t = HttpTransport(server.url)
    yield t
    t.close()


def test_a_503_with_retry_after_is_a_transport_error_that_says_when_to_come_back(server, transport):
    server.answer = lambda h: reply(h, 503, error_body("internal"), {"Retry-After": "12"})
    with pytest.raises(TransportError) as caught:
        transport.pull("tok", "c1", 100)
    assert (caught.value.status, caught.value.retry_after) == (503, 12.0)


def test_a_revoked_device_told_to_wipe_hears_it(server, transport):
    server.answer = lambda h: reply(h, 410, error_body("device_revoked", wipe=True))
    with pytest.raises(DeviceRevoked) as caught:
        transport.pull("tok", "c1", 100)
    assert caught.value.wipe is True


def test_a_refused_connection_is_a_transport_error_not_a_urllib3_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transport = HttpTransport(f"http://127.0.0.1:{port}")
    with pytest.raises(TransportError) as caught:
        transport.challenge("device")
    assert "could not connect" in str(caught.value)
    assert isinstance(caught.value.__cause__, urllib3.exceptions.NewConnectionError)
    assert not isinstance(caught.value, urllib3.exceptions.HTTPError)


def test_a_server_that_does_not_answer_in_time_is_a_transport_error(server):
    server.answer = lambda h: server.released.wait(10)
    transport = HttpTransport(server.url, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        transport.pull("tok", None, 100)
    assert "timed out" in str(caught.value)
    assert time.monotonic() - started < 3


def test_a_dropped_connection_is_tried_once_the_engine_does_the_retrying(server, transport):
    def hang_up(handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)

    server.answer = hang_up
    with pytest.raises(TransportError):
        transport.pull("tok", None, 100)
    assert len(server.seen) == 1


def test_a_redirect_is_not_followed(server, transport):
    server.answer = lambda h: reply(h, 302, b"", {"Location": "/elsewhere"})
    with pytest.raises(TransportError):  # an empty 302 is no pull reply: try later
        transport.pull("tok", None, 100)
    assert [seen.path for seen in server.seen] == ["/v1/sync/pull?limit=100"]


def test_requests_share_one_kept_alive_connection_and_carry_the_protocol_headers(server, transport):
    for _ in range(3):
        assert transport.pull("tok", "c/1 +", 100).cursor == "c2"
    assert len({seen.client_port for seen in server.seen}) == 1
    first = server.seen[0]
    assert first.path == "/v1/sync/pull?limit=100&cursor=c%2F1+%2B"
    assert (first.headers["Authorization"], first.headers["Sync-Protocol"]) == ("Bearer tok", "1")


def test_a_download_streams_from_the_range_asked_for(server, transport):
    server.answer = serve_blob
    pieces = list(transport.blob_chunks("tok", SHA, 100_000))
    assert server.seen[0].headers["Range"] == "bytes=100000-"
    assert [offset for offset, _ in pieces] == [100_000, 100_000 + DOWNLOAD_CHUNK]
    assert b"".join(piece for _, piece in pieces) == BLOB[100_000:]


def test_a_download_from_a_server_ignoring_range_starts_over_at_zero(server, transport):
    server.answer = lambda h: serve_blob(h, honour_range=False)
    pieces = list(transport.blob_chunks("tok", SHA, 100_000))
    assert [offset for offset, _ in pieces] == [0, DOWNLOAD_CHUNK, 2 * DOWNLOAD_CHUNK]
    assert b"".join(piece for _, piece in pieces) == BLOB


def serve_blob_in_two_goes(handler: BaseHTTPRequestHandler) -> None:
    """The first piece, then the rest only once the client has sent more on this connection."""
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(BLOB)))
    handler.end_headers()
    handler.wfile.write(BLOB[:DOWNLOAD_CHUNK])
    select.select([handler.connection], [], [], 5)
    handler.wfile.write(BLOB[DOWNLOAD_CHUNK:])


def test_a_download_abandoned_midway_leaves_the_next_request_a_clean_reply(server, transport):
    server.answer = serve_blob_in_two_goes
    chunks = transport.blob_chunks("tok", SHA)
    assert next(chunks) == (0, BLOB[:DOWNLOAD_CHUNK])
    chunks.close()  # the store failed, say: the rest of the blob is still on the wire
    server.answer = lambda h: reply(h, 200, EMPTY_PULL)
    assert transport.pull("tok", None, 100).cursor == "c2"


def test_a_refused_download_raises_its_sync_error(server, transport):
    server.answer = lambda h: reply(h, 410, error_body("device_revoked", wipe=False))
    with pytest.raises(DeviceRevoked) as caught:
        list(transport.blob_chunks("tok", SHA))
    assert caught.value.wipe is False
