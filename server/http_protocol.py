"""uvicorn's HTTP protocol (httptools), sending each response in one socket write.

uvicorn writes a response's head as soon as the app sends ``http.response.start``, and its body
with each ``http.response.body``: two ``send`` calls, two TCP segments, two wake-ups of the
phone's side. In a burst of 200 phones on SQLite, py-spy found a third of the event loop's
samples in those writes. Here what the protocol writes within one turn of the event loop goes
out in one write at the end of that turn; a body larger than ``FLUSH_AT`` goes at once, so a
streamed file never piles up here out of sight of uvicorn's flow control.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

FLUSH_AT = 64 * 1024


class _CoalescingTransport:
    """A transport whose writes are joined until the loop's turn ends; all else is the real one's."""

    __slots__ = ("_transport", "_loop", "_pending", "_pending_size")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None
        self._pending_size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._pending is None:
            self._pending = [data]
            self._pending_size = len(data)
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(data)
            self._pending_size += len(data)
        if self._pending_size >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http="server.http_protocol:CoalescingHttpToolsProtocol")``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
