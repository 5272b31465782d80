"""An httpx client behind the transport's ``HttpSession`` seam.

The device speaks urllib3; tests put Litestar's ``TestClient`` (the server in-process) or an
``httpx.MockTransport`` (canned replies) behind ``HttpTransport`` through this adapter.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from sync.client import DeviceIdentity, HttpTransport, LocalStore, PlainCipher, SyncEngine
from sync.client.transport import HttpReply, HttpStream
from sync.errors import TransportError

if TYPE_CHECKING:
    from tests.conftest import FieldSetup


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


def enrolled_engine(path: Path, field: FieldSetup, user: str, **engine_options: Any) -> SyncEngine:
    """A device engine with a plain store at ``path``, talking to ``field``'s in-process server,
    enrolled as a phone of ``user`` (retries without waiting)."""
    store = LocalStore(path, PlainCipher())
    transport = HttpTransport("", session=HttpxSession(field.client))
    engine = SyncEngine(store, transport, DeviceIdentity(store), sleep=lambda _s: None, **engine_options)
    engine.enroll(field.code(user), label=path.parent.name, app_version="test")
    return engine
