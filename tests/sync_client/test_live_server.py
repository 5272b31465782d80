"""The engine over real TCP against ``fieldloop serve``, stopped and restarted between edits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sync.client import AesGcmCipher, DeviceIdentity, HttpTransport, LocalStore, SyncEngine
from sync.errors import TransportError

pytestmark = pytest.mark.slow

VISITED = "2026-11-25T08:00:00+00:00"


def enrolled_engine(path: Path, live_server, user: str) -> SyncEngine:
    code = live_server.cli("enrollment", "create", "--user", user).stdout.strip().splitlines()[-1]
    store = LocalStore(path, AesGcmCipher(AesGcmCipher.generate_key()))
    engine = SyncEngine(
        store, HttpTransport(live_server.url, timeout=5.0), DeviceIdentity(store), sleep=lambda _s: None
    )
    engine.enroll(code, label=path.parent.name, app_version="test")
    return engine


def test_edits_made_while_the_server_is_down_arrive_after_it_restarts(live_server, tmp_path: Path):
    grid = live_server.cli("grid", "add", "所前一网格", "--community", "所前社区").stdout.strip().splitlines()[-1]
    live_server.cli("user", "add", "li", "--role", "grid_worker", "--grid", "所前一网格")
    live_server.cli("user", "add", "wang", "--role", "grid_worker", "--grid", "所前一网格")
    a = enrolled_engine(tmp_path / "a" / "store.db", live_server, "li")
    b = enrolled_engine(tmp_path / "b" / "store.db", live_server, "wang")

    hid = a.create("household", {"grid_id": grid, "address": "3幢2单元401", "members": 1})
    assert a.sync().applied == 1

    live_server.stop()
    a.edit("household", hid, {"members": 2})
    photo = os.urandom(900 * 1024)
    sha = a.add_photo(photo)
    vid = a.create(
        "visit", {"grid_id": grid, "household_id": hid, "method": "inquiry", "visited_at": VISITED, "photos": [sha]}
    )
    with pytest.raises(TransportError):
        a.sync_with_retry(max_attempts=2, base_delay=0.01)
    assert a.store.pending_count() == 2 and a.last_sync()["ok"] is False

    live_server.start()
    report = a.sync()
    assert (report.pushed, report.blobs_uploaded) == (2, 1)

    live_server.kill()  # a power cut, no graceful shutdown
    a.edit("household", hid, {"notes": "需要每周回访"})
    live_server.start()
    assert a.sync().applied == 1

    report = b.sync()
    assert report.blobs_downloaded == 1 and b.store.read_blob(sha) == photo
    for engine in (a, b):
        record = engine.store.get("household", hid)
        assert (record.version, record.fields["members"], record.fields["notes"]) == (3, 2, "需要每周回访")
        assert engine.store.get("visit", vid).fields["photos"] == [sha]
    for engine in (a, b):
        engine.store.close()
        engine.transport.close()
