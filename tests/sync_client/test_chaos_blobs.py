"""A photo upload whose HEAD reply is cut after its status line (found by the chaos probe, seeds
108 and 111 on SQLite: phones lacked a photo of a visit for good).

HTTP's parsers take a header block that ends with the connection as complete, so the cut reply
reads as ``200`` with no ``Upload-Offset``, which is what a complete blob answers. The phone
marked the photo uploaded and pushed the visit naming it, while the server held one chunk of it:
no phone could ever download it. A complete blob's HEAD carries ``Upload-Length`` (protocol
Changes 8); a ``200`` with neither header is a cut reply, tried again at the next round.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sync.client import AesGcmCipher, DeviceIdentity, HttpTransport, LocalStore, SyncEngine
from sync.errors import TransportError
from tests.support.chaos import Fault, FaultProxy
from tests.support.servers import LiveServer

pytestmark = pytest.mark.slow

VISITED = "2026-11-25T08:00:00+08:00"


def phone(path: Path, server: LiveServer, url: str, user: str) -> SyncEngine:
    code = server.cli("enrollment", "create", "--user", user).stdout.strip().splitlines()[-1]
    store = LocalStore(path, AesGcmCipher(AesGcmCipher.generate_key()))
    transport = HttpTransport(url, timeout=10.0)
    transport._headers["Connection"] = "close"  # one request a connection: the proxy's unit
    engine = SyncEngine(store, transport, DeviceIdentity(store), sleep=lambda _s: None)
    engine.enroll(code, label=path.parent.name, app_version="test")
    return engine


def test_a_photo_whose_head_reply_was_cut_is_not_taken_for_uploaded(live_server: LiveServer, tmp_path: Path):
    grid = live_server.cli("grid", "add", "所前一网格", "--community", "所前社区").stdout.strip().splitlines()[-1]
    live_server.cli("user", "add", "li", "--role", "grid_worker", "--grid", "所前一网格")
    live_server.cli("user", "add", "wang", "--role", "grid_worker", "--grid", "所前一网格")
    faults: list[Fault] = []

    def choose(method: str, path: str) -> Fault:
        return faults.pop(0) if faults and path.startswith("/v1/blobs/") else Fault("pass")

    proxy = FaultProxy([live_server.port], choose, lambda _i: None, lambda: None, lambda: None)
    try:
        a = phone(tmp_path / "a" / "store.db", live_server, proxy.url, "li")
        b = phone(tmp_path / "b" / "store.db", live_server, live_server.url, "wang")
        photo = os.urandom(600 * 1024)
        hid = a.create("household", {"grid_id": grid, "address": "3幢2单元401"})
        sha = a.add_photo(photo)
        a.create("visit", {"grid_id": grid, "household_id": hid, "method": "inquiry", "visited_at": VISITED,
                           "photos": [sha]})
        # HEAD (404), the first chunk, then the link drops while the second goes: the server holds one chunk.
        faults[:] = [Fault("pass"), Fault("pass"), Fault("cut_request", amount=0.5)]
        with pytest.raises(TransportError):
            a.sync()
        # The next round's HEAD reply is cut after its status line.
        faults[:] = [Fault("cut_headers")]
        for _ in range(3):
            try:
                a.sync()
                break
            except TransportError:
                continue
        assert a.store.pending_count() == 0
        b.sync()
        assert b.store.read_blob(sha) == photo
    finally:
        proxy.close()
        for engine in ("a", "b"):
            with_engine = locals().get(engine)
            if with_engine is not None:
                with_engine.store.close()
                with_engine.close()
