"""An httpx client behind the transport's ``HttpSession`` seam.

The device speaks urllib3; tests put Litestar's ``TestClient`` (the server in-process) or an
``httpx.MockTransport`` (canned replies) behind ``HttpTransport`` through this adapter.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx

from sync.client.transport import HttpReply, HttpStream
from sync.errors import TransportError


class HttpxSession:
    """``HttpSession`` over an httpx client, whose ``base_url`` resolves the transport's paths.

    Redirects are not followed, as on the device (Litestar's ``TestClient`` would follow them).
    """

    def __init__(self, client: httpx.Client):
        self.client = client

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> HttpReply:
        try:
            response = self.client.request(method, url, headers=headers, content=body, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {url} failed: {exc}") from exc
        return HttpReply(response.status_code, response.headers, response.content)

    @contextmanager
    def stream(self, method: str, url: str, headers: Mapping[str, str], piece_size: int) -> Iterator[HttpStream]:
        try:
            with self.client.stream(method, url, headers=headers, follow_redirects=False) as response:
                yield HttpStream(response.status_code, response.headers, response.iter_bytes(piece_size))
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {url} interrupted: {exc}") from exc
