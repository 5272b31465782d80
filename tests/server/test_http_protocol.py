"""The server's HTTP protocol sends a response in one socket write (server.http_protocol)."""

from __future__ import annotations

import asyncio

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from server.http_protocol import FLUSH_AT, CoalescingHttpToolsProtocol


class RecordingTransport(asyncio.Transport):
    """What a protocol writes, one entry per socket write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name, default=None):  # noqa: ANN001, ANN201
        return default

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def app_sending(*chunks: bytes, connection_close: bool = False):  # noqa: ANN201
    async def app(scope, receive, send):  # noqa: ANN001, ANN202
        headers = [(b"content-length", str(sum(map(len, chunks))).encode())]
        if connection_close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})

    return app


def served(protocol_class: type, app, request: bytes = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n") -> RecordingTransport:  # noqa: ANN001
    """What ``protocol_class`` writes, request by request, serving ``app`` on one connection."""
    return asyncio.run(_served(protocol_class, app, request))


async def _served(protocol_class: type, app, request: bytes) -> RecordingTransport:  # noqa: ANN001
    config = Config(app=app, http=protocol_class, lifespan="off", log_level="warning")
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(20):  # the response task, then the loop's turn that flushes
        await asyncio.sleep(0)
    return transport


def test_head_and_body_go_out_in_one_write():
    transport = served(CoalescingHttpToolsProtocol, app_sending(b"hello"))
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\nhello")


def test_uvicorns_own_protocol_writes_head_and_body_apart():
    # What server.http_protocol is for: without it, two writes (two segments) per response.
    transport = served(HttpToolsProtocol, app_sending(b"hello"))
    assert len(transport.writes) == 2


def test_a_large_body_goes_out_as_it_comes_not_held_back():
    big = b"x" * FLUSH_AT
    transport = served(CoalescingHttpToolsProtocol, app_sending(big, big, b"tail"))
    assert b"".join(transport.writes).endswith(big + big + b"tail")
    # Each chunk past the threshold is written when sent, not joined with the rest.
    assert len(transport.writes) == 3
    assert transport.writes[0].endswith(big)


def test_what_is_pending_is_written_before_the_connection_closes():
    transport = served(CoalescingHttpToolsProtocol, app_sending(b"bye", connection_close=True))
    assert transport.closed
    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(b"\r\n\r\nbye")


def test_two_requests_on_one_connection_get_two_whole_responses_in_order():
    request = b"GET /a HTTP/1.1\r\nhost: t\r\n\r\n"
    transport = served(CoalescingHttpToolsProtocol, app_sending(b"one"), request + request)
    assert [w.endswith(b"one") and w.startswith(b"HTTP/1.1 200") for w in transport.writes] == [True, True]
