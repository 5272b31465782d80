"""The engine against the real server in-process (Litestar's TestClient behind the transport's session).

Runs once per backend of ``tests/conftest.py`` (SQLite, and PostgreSQL when it is reachable).
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import msgspec
import pytest

from server.devices import service as devices
from sync.client import AesGcmCipher, DeviceIdentity, HttpTransport, LocalStore, PlainCipher, SyncEngine
from sync.client.cipher import Cipher
from sync.client.store import META_CURSOR
from sync.errors import AuthError, DeviceRevoked, TransportError, UpgradeRequired
from tests.conftest import FieldSetup, run
from tests.support.httpx_session import HttpxSession

VISITED = "2026-11-25T08:00:00+00:00"
PHOTO = os.urandom(600 * 1024)


class CountingTransport(HttpTransport):
    """The real transport, counting blob calls and able to drop the link after n PATCHes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.patches: list[tuple[int, int]] = []
        self.heads = 0
        self.cut_after_patches: int | None = None

    def blob_head(self, token, sha):  # noqa: ANN001, ANN201
        self.heads += 1
        return super().blob_head(token, sha)

    def blob_patch(self, token, sha, offset, length, chunk):  # noqa: ANN001, ANN201
        reply = super().blob_patch(token, sha, offset, length, chunk)
        self.patches.append((offset, len(chunk)))
        if self.cut_after_patches is not None and len(self.patches) >= self.cut_after_patches:
            self.cut_after_patches = None
            raise TransportError("the link dropped before the reply arrived")
        return reply


class Phone:
    def __init__(self, path: Path, field: FieldSetup, user: str, cipher: Cipher | None = None):
        self.path = path
        self.store = LocalStore(path, cipher or AesGcmCipher(AesGcmCipher.generate_key()))
        self.identity = DeviceIdentity(self.store)
        self.transport = CountingTransport("", session=HttpxSession(field.client))
        self.engine = SyncEngine(self.store, self.transport, self.identity, sleep=lambda _s: None)
        self.reply = self.engine.enroll(field.code(user), label=path.parent.name, app_version="test")


@pytest.fixture
def grid(field: FieldSetup) -> str:
    grid_id = field.grid("所前一网格")
    field.user("li", ["所前一网格"])
    field.user("wang", ["所前一网格"])
    return grid_id


@pytest.fixture
def phone(tmp_path: Path, field: FieldSetup, grid: str):
    made: list[Phone] = []

    def make(name: str, user: str = "li", cipher: Cipher | None = None) -> Phone:
        p = Phone(tmp_path / name / "store.db", field, user, cipher)
        made.append(p)
        return p

    yield make
    for p in made:
        p.store.close()


def household(grid: str, **extra) -> dict:
    return {"grid_id": grid, "address": "所前社区3幢2单元", **extra}


def test_two_phones_converge_with_their_conflict_kept(phone, grid: str):
    a, b = phone("a"), phone("b", "wang")
    assert [g.id for g in a.reply.grids] == [grid]
    hid = a.engine.create("household", household(grid, head_name="李秀英", phone="111", tags=["elderly"]))
    sha = a.engine.add_photo(PHOTO)
    vid = a.engine.create(
        "visit", {"grid_id": grid, "household_id": hid, "method": "inquiry", "visited_at": VISITED, "photos": [sha]}
    )
    report = a.engine.sync()
    assert (report.applied, report.blobs_uploaded) == (2, 1)

    report = b.engine.sync()
    assert report.pulled >= 3  # the grid record, the household, the visit
    assert b.store.get("visit", vid).fields["photos"] == [sha]
    assert b.store.read_blob(sha) == PHOTO

    a.engine.edit("household", hid, {"phone": "222", "tags": ["elderly", "disabled"]})
    time.sleep(0.005)
    b.engine.edit("household", hid, {"phone": "333", "tags": ["elderly", "veteran"]})
    a.engine.sync()
    report = b.engine.sync()
    assert report.merged == 1
    [conflict] = b.store.conflicts()
    assert (conflict.field, conflict.kept, conflict.lost) == ("phone", "333", "222")
    a.engine.sync()
    ra, rb = a.store.get("household", hid), b.store.get("household", hid)
    assert ra.fields == rb.fields and ra.version == rb.version and not ra.pending
    assert ra.fields["phone"] == "333" and ra.fields["tags"] == ["disabled", "elderly", "veteran"]


def test_retried_push_after_crash_applies_once_on_the_real_server(phone, grid: str, monkeypatch):
    a, b = phone("a"), phone("b", "wang")
    hid = a.engine.create("household", household(grid, members=1))
    a.engine.edit("household", hid, {"members": 2})

    original = LocalStore._adopt_result_record
    seen = []

    def crash(self, db, entry, result):  # noqa: ANN001
        seen.append(entry.mid)
        if len(seen) == 2:
            raise KeyboardInterrupt("killed while storing the push's results")
        return original(self, db, entry, result)

    monkeypatch.setattr(LocalStore, "_adopt_result_record", crash)
    with pytest.raises(KeyboardInterrupt):
        a.engine.sync()
    monkeypatch.undo()
    assert a.store.pending_count() == 2
    report = a.engine.sync()
    assert report.pushed == 2 and a.store.pending_count() == 0
    b.engine.sync()
    record = b.store.get("household", hid)
    assert record.version == 2 and record.fields["members"] == 2  # two changes, each applied once
    assert a.store.get("household", hid).version == 2


def test_a_write_outside_the_users_grids_is_rejected_and_kept_visible(phone, field: FieldSetup, grid: str):
    other = field.grid("所前二网格")
    a = phone("a")
    hid = a.engine.create("household", household(other))
    report = a.engine.sync()
    assert report.rejected == 1 and a.store.pending_count() == 0
    [rejected] = a.store.rejections()
    assert rejected.id == hid and rejected.code == "forbidden_scope"


def test_an_upload_cut_halfway_resumes_from_the_servers_offset(phone, grid: str):
    a, b = phone("a"), phone("b", "wang")
    sha = a.engine.add_photo(PHOTO)  # three chunks
    a.engine.create(
        "visit",
        {
            "grid_id": grid,
            "household_id": a.store.new_record_id(),
            "method": "sit",
            "visited_at": VISITED,
            "photos": [sha],
        },
    )
    a.transport.cut_after_patches = 2
    with pytest.raises(TransportError):
        a.engine.sync()
    assert a.store.pending_count() == 1  # nothing was pushed while the photo was not up
    a.engine.sync()
    assert a.transport.patches == [(0, 262144), (262144, 262144), (524288, len(PHOTO) - 524288)]
    b.engine.sync()
    assert b.store.read_blob(sha) == PHOTO


def test_a_wrong_hash_is_refused_by_the_server(phone, grid: str):
    a = phone("a", cipher=PlainCipher())
    sha = a.engine.add_photo(PHOTO)
    (a.store.blob_dir / sha).write_bytes(PHOTO[::-1])
    report = a.engine.sync()
    assert any("not uploaded" in e for e in report.errors)
    assert a.store.blob_state(sha) == "local"
    token = a.engine.ensure_token()
    assert a.transport.blob_head(token, sha) == (404, None)  # the server discarded the bad bytes


def test_a_known_blob_is_not_sent_twice(phone, grid: str):
    a, b = phone("a"), phone("b", "wang")
    sha = a.engine.add_photo(PHOTO)
    a.engine.sync()
    assert sum(n for _, n in a.transport.patches) == len(PHOTO)
    assert b.engine.add_photo(PHOTO) == sha
    report = b.engine.sync()
    assert report.blobs_uploaded == 0 and b.transport.patches == [] and b.transport.heads == 1
    a.engine.sync()
    assert a.transport.heads == 1


def test_a_revoked_phone_with_wipe_erases_its_store(phone, field: FieldSetup, grid: str):
    a = phone("a")
    a.engine.create("household", household(grid, head_name="李秀英"))
    a.engine.sync()
    run(field.client, devices.revoke, field.sessionmaker, a.identity.device_id, wipe=True)
    with pytest.raises(DeviceRevoked) as caught:
        a.engine.sync()
    assert caught.value.wipe is True
    assert not a.path.exists() and list(a.path.parent.iterdir()) == []


def test_a_retired_phone_keeps_its_data(phone, field: FieldSetup, grid: str):
    a = phone("a")
    hid = a.engine.create("household", household(grid))
    a.engine.sync()
    run(field.client, devices.retire, field.sessionmaker, a.identity.device_id)
    with pytest.raises(DeviceRevoked) as caught:
        a.engine.sync()
    assert caught.value.wipe is False and a.engine.retired
    assert a.store.get("household", hid) is not None


def test_a_rejected_token_is_replaced_and_the_call_repeated(phone, grid: str):
    a = phone("a")
    a.engine.sync()
    a.engine._token = "not-a-token"  # as after the server restarted with a new secret
    a.engine.create("household", household(grid))
    assert a.engine.sync().applied == 1


def test_a_spent_code_and_an_old_protocol_surface_as_sync_errors(phone, field: FieldSetup, grid: str, tmp_path: Path):
    code = field.code("li")
    store = LocalStore(tmp_path / "x" / "store.db", PlainCipher())
    engine = SyncEngine(store, HttpTransport("", session=HttpxSession(field.client)), DeviceIdentity(store))
    engine.enroll(code)
    with pytest.raises(AuthError):
        engine.enroll(code)
    engine.transport._headers["Sync-Protocol"] = "0"
    with pytest.raises(UpgradeRequired) as caught:
        engine.sync()
    assert caught.value.min_protocol == 1
    store.close()


def test_records_of_a_grid_taken_from_the_user_are_erased_on_the_phone(phone, field: FieldSetup, grid: str):
    second = field.grid("所前二网格")
    field.set_grids("li", ["所前一网格", "所前二网格"])
    a = phone("a")
    kept = a.engine.create("household", household(grid, head_name="留下"))
    gone = a.engine.create("household", household(second, head_name="移走"))
    a.engine.sync()
    assert {r.id for r in a.store.records("household")} == {kept, gone}
    field.set_grids("li", ["所前一网格"])
    a.engine.sync()
    assert [r.id for r in a.store.records("household")] == [kept]
    tombstone = a.store.get("household", gone)
    assert tombstone.deleted and tombstone.fields == {}


def test_a_phone_whose_cursor_the_server_refuses_pulls_everything_again(phone, grid: str):
    a, b = phone("a"), phone("b", "wang")
    kept = a.engine.create("household", household(grid, head_name="留下"))
    gone = a.engine.create("household", household(grid, head_name="删除"))
    a.engine.sync()
    b.engine.sync()
    a.engine.delete("household", gone)
    added = a.engine.create("household", household(grid, head_name="新来"))
    a.engine.sync()
    # A cursor of the shape the server issued before it signed them, pointing past everything:
    # what an app updated after its server holds. The server refuses it (400 malformed); the
    # phone drops it and pulls from the start instead of failing every round.
    unsigned = base64.urlsafe_b64encode(msgspec.msgpack.encode({"s": 10**12, "g": [grid]})).rstrip(b"=").decode()
    b.store.set_meta(META_CURSOR, unsigned)
    report = b.engine.sync()
    assert report.pulled >= 4  # the grid record, three households (one a tombstone)
    assert b.store.get_meta(META_CURSOR) != unsigned
    assert {r.id for r in b.store.records("household")} == {kept, added}
    assert b.store.get("household", gone).deleted
    assert b.engine.sync().pulled == 0
