"""The local store: encryption at rest, the outbox and its rebase, pulled pages, wipe."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from shared_schema.messages import Conflict, MutationStatus, Record, Result, ResultError
from sync.client import AesGcmCipher, LocalStore, PlainCipher, new_id
from sync.client.store import META_CURSOR
from sync.errors import InvalidEdit, StorageError
from tests.sync_client.fake_server import GRID, OTHER_GRID

HLC = "1764000000000-0000-dev"


def stamp(n: int) -> str:
    return f"{1764000000000 + n:013d}-0000-dev"


HEAD_NAME = "王秀英独居老人"
PHONE = "13912345678"
NOTE = "楼道落水管堵塞需要上报"
PHOTO = b"\xff\xd8JPEG-FAKE-" + "门口照片".encode() * 50
MARKERS = [HEAD_NAME.encode(), PHONE.encode(), NOTE.encode(), PHOTO[:40], b"JPEG-FAKE", "门口照片".encode()]


def household(**extra) -> dict:
    return {"grid_id": GRID, "address": "所前社区3幢", **extra}


def fill_with_personal_data(store: LocalStore) -> None:
    """Every path by which personal text reaches the store: edit, pull, result, conflict, rejection, photo."""
    hid = store.create("household", household(head_name=HEAD_NAME, phone=PHONE, notes=NOTE), hlc=stamp(1))
    sha = store.put_blob(PHOTO)
    vid = store.create(
        "visit",
        {
            "grid_id": GRID,
            "household_id": hid,
            "method": "inquiry",
            "visited_at": "2026-11-25T08:00:00+00:00",
            "notes": NOTE,
            "photos": [sha],
        },
        hlc=stamp(2),
    )
    entries = store.pending_mutations(10)
    pulled = Record(
        entity="household",
        id=str(uuid.uuid4()),
        version=3,
        hlc=stamp(3),
        fields=household(head_name=HEAD_NAME + "2", phone=PHONE, notes=NOTE),
    )
    store.apply_pulled([pulled], cursor="c1")
    record = Record(
        entity="household", id=hid, version=1, hlc=stamp(1), fields=household(head_name=HEAD_NAME, notes=NOTE)
    )
    results = [
        Result(
            mid=entries[0].mid,
            status=MutationStatus.MERGED,
            version=1,
            record=record,
            conflicts=[Conflict(field="notes", kept=NOTE, lost=NOTE + PHONE, winner_hlc=stamp(1))],
        ),
        Result(
            mid=entries[1].mid,
            status=MutationStatus.REJECTED,
            version=0,
            error=ResultError(code="invalid", message="bad"),
        ),
    ]
    store.apply_results(entries, results)
    store.edit("household", hid, {"head_name": HEAD_NAME + "改"}, hlc=stamp(4))
    store.set_meta("note.test", NOTE)
    assert vid


def raw_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_no_name_phone_note_or_photo_appears_in_plaintext_on_disk(tmp_path: Path):
    store = LocalStore(tmp_path / "s" / "store.db", AesGcmCipher(AesGcmCipher.generate_key()))
    fill_with_personal_data(store)
    # Read while the WAL still holds the recent pages, then again after a checkpoint.
    assert (tmp_path / "s" / "store.db-wal").exists()
    disk = raw_bytes(tmp_path / "s")
    for marker in MARKERS:
        assert marker not in disk, marker
    assert store.get("household", store.records("household")[0].id) is not None
    store.close()
    disk = raw_bytes(tmp_path / "s")
    for marker in MARKERS:
        assert marker not in disk, marker


def test_the_plaintext_grep_finds_data_when_nothing_is_encrypted(tmp_path: Path):
    # The control for the test above: the same grep does see the markers without a cipher.
    store = LocalStore(tmp_path / "p" / "store.db", PlainCipher())
    fill_with_personal_data(store)
    disk = raw_bytes(tmp_path / "p")
    assert all(marker in disk for marker in MARKERS)
    store.close()


def test_a_store_opened_with_another_key_refuses_to_read(tmp_path: Path):
    path = tmp_path / "store.db"
    store = LocalStore(path, AesGcmCipher(AesGcmCipher.generate_key()))
    hid = store.create("household", household(head_name=HEAD_NAME), hlc=HLC)
    store.close()
    other = LocalStore(path, AesGcmCipher(AesGcmCipher.generate_key()))
    with pytest.raises(StorageError):
        other.get("household", hid)
    other.close()


def test_a_new_record_is_visible_at_once_and_pending(store: LocalStore):
    hid = store.create("household", household(head_name=HEAD_NAME, members=3), hlc=HLC)
    record = store.get("household", hid)
    assert record.pending and record.version == 0 and not record.deleted
    assert record.fields["head_name"] == HEAD_NAME and record.fields["members"] == 3
    assert store.pending_count() == 1
    [entry] = store.pending_mutations(10)
    assert entry.op == "upsert" and entry.base_version == 0 and entry.id == hid
    assert uuid.UUID(hid).version == 7


def test_pending_edit_survives_a_pull_and_is_rebased_on_top(store: LocalStore):
    hid = str(uuid.uuid4())
    store.apply_pulled(
        [
            Record(
                entity="household",
                id=hid,
                version=2,
                hlc=stamp(1),
                fields=household(head_name="old", phone="1", tags=["a"]),
            )
        ]
    )
    store.edit("household", hid, {"head_name": "mine", "tags": ["a", "b"]}, hlc=stamp(2))
    # Someone else changed the phone and the tags meanwhile; the server's new state is pulled.
    store.apply_pulled(
        [
            Record(
                entity="household",
                id=hid,
                version=3,
                hlc=stamp(3),
                fields=household(head_name="old", phone="2", tags=["a", "c"]),
            )
        ],
        cursor="c2",
    )
    seen = store.get("household", hid)
    assert seen.pending and seen.version == 3
    assert seen.fields["head_name"] == "mine"  # my pending edit on top
    assert seen.fields["phone"] == "2"  # their change underneath
    assert seen.fields["tags"] == ["a", "b", "c"]  # a union field shows both sides, as the server will merge it
    assert store.pending_count() == 1
    assert store.get_meta(META_CURSOR) == "c2"


def test_second_edit_of_a_pending_record_is_a_new_entry_with_the_same_base_version(store: LocalStore):
    hid = str(uuid.uuid4())
    store.apply_pulled([Record(entity="household", id=hid, version=5, hlc=stamp(1), fields=household(phone="1"))])
    m1 = store.edit("household", hid, {"phone": "2"}, hlc=stamp(2))
    m2 = store.edit("household", hid, {"notes": "x"}, hlc=stamp(3))
    entries = store.pending_mutations(10)
    assert [e.mid for e in entries] == [m1, m2]
    assert [e.base_version for e in entries] == [5, 5]
    assert entries[1].fields == {"notes": "x"}
    assert store.get("household", hid).fields == household(phone="2", notes="x")


def test_an_edit_that_changes_nothing_queues_nothing(store: LocalStore):
    hid = store.create("household", household(phone="1"), hlc=stamp(1))
    assert store.edit("household", hid, {"phone": "1"}, hlc=stamp(2)) is None
    mid = store.edit("household", hid, {"phone": "1", "members": 2}, hlc=stamp(3))
    assert mid is not None
    assert store.pending_mutations(10)[-1].fields == {"members": 2}


@pytest.mark.parametrize(
    ("entity", "fields", "message"),
    [
        ("household", {"address": "x"}, "needs: grid_id"),
        ("visit", {"grid_id": GRID, "review": None}, "server only: review"),
        ("grid", {"name": "g"}, "cannot be changed on a device"),
        ("spaceship", {"x": 1}, "unknown entity"),
        ("household", {"grid_id": GRID, "address": "x", "members": 1000}, "members"),
        ("household", {"grid_id": GRID, "address": "x", "colour": "red"}, "colour"),
    ],
)
def test_an_invalid_edit_is_refused_before_it_reaches_the_outbox(store: LocalStore, entity, fields, message):
    with pytest.raises(InvalidEdit, match=message):
        store.create(entity, fields, hlc=HLC)
    assert store.pending_count() == 0


def test_delete_hides_the_record_and_queues_a_delete(store: LocalStore):
    hid = str(uuid.uuid4())
    store.apply_pulled([Record(entity="household", id=hid, version=1, hlc=stamp(1), fields=household())])
    store.delete("household", hid, hlc=stamp(2))
    assert store.get("household", hid).deleted
    assert store.records("household") == []
    assert [r.id for r in store.records("household", include_deleted=True)] == [hid]
    [entry] = store.pending_mutations(10)
    assert entry.op == "delete" and entry.base_version == 1
    with pytest.raises(InvalidEdit):
        store.delete("household", str(uuid.uuid4()), hlc=stamp(3))


def test_records_lists_unpushed_creations_by_grid_and_household(store: LocalStore):
    h1 = store.create("household", household(), hlc=stamp(1))
    h2 = str(uuid.uuid4())
    store.apply_pulled(
        [Record(entity="household", id=h2, version=1, hlc=stamp(2), fields={"grid_id": OTHER_GRID, "address": "y"})]
    )
    v1 = store.create(
        "visit",
        {"grid_id": GRID, "household_id": h1, "method": "sit", "visited_at": "2026-11-25T08:00:00Z"},
        hlc=stamp(3),
    )
    assert [r.id for r in store.records("household")] == sorted([h1, h2])
    assert [r.id for r in store.records("household", grid_id=GRID)] == [h1]
    assert [r.id for r in store.records("visit", household_id=h1)] == [v1]
    assert store.records("visit", household_id=h2) == []


def test_results_replace_the_record_and_retire_the_entries_together(store: LocalStore):
    hid = store.create("household", household(head_name="a"), hlc=stamp(1))
    store.create("household", household(head_name="b"), hlc=stamp(2))
    entries = store.pending_mutations(10)
    server_record = Record(entity="household", id=hid, version=1, hlc=stamp(1), fields=household(head_name="a"))
    results = [
        Result(mid=entries[0].mid, status=MutationStatus.APPLIED, version=1, record=server_record),
        Result(
            mid=entries[1].mid,
            status=MutationStatus.REJECTED,
            version=0,
            error=ResultError(code="forbidden_scope", message="not your grid"),
        ),
    ]
    summary = store.apply_results(entries, results)
    assert (summary.applied, summary.rejected) == (1, 1)
    assert store.pending_count() == 0
    assert store.get("household", hid) == store.get("household", hid)
    record = store.get("household", hid)
    assert not record.pending and record.version == 1
    [rejected] = store.rejections()
    assert rejected.code == "forbidden_scope" and rejected.fields["head_name"] == "b"
    assert store.result(entries[0].mid).status is MutationStatus.APPLIED
    store.dismiss_rejection(rejected.mid)
    assert store.rejections() == []


def test_an_older_replayed_version_never_rolls_a_record_back(store: LocalStore):
    hid = str(uuid.uuid4())
    store.apply_pulled([Record(entity="household", id=hid, version=4, hlc=stamp(4), fields=household(phone="4"))])
    store.apply_pulled([Record(entity="household", id=hid, version=2, hlc=stamp(2), fields=household(phone="2"))])
    assert store.get("household", hid).fields["phone"] == "4"


def test_a_tombstone_empties_the_fields_but_keeps_the_lookup_ids(store: LocalStore):
    vid = str(uuid.uuid4())
    store.apply_pulled(
        [
            Record(
                entity="visit",
                id=vid,
                version=1,
                hlc=stamp(1),
                fields={"grid_id": GRID, "household_id": "h", "notes": NOTE},
            )
        ]
    )
    store.apply_pulled([Record(entity="visit", id=vid, version=2, hlc=stamp(2), deleted=True, fields={})])
    record = store.get("visit", vid)
    assert record.deleted and record.fields == {} and record.grid_id == GRID


def test_pulled_records_are_applied_at_over_5000_per_second_with_aes_gcm(store: LocalStore):
    pages = [
        [
            Record(
                entity="visit",
                id=str(uuid.uuid4()),
                version=1,
                hlc=stamp(i),
                fields={
                    "grid_id": GRID,
                    "household_id": str(uuid.uuid4()),
                    "method": "inquiry",
                    "notes": NOTE * 4,
                    "topics": ["water", "safety"],
                    "visited_at": "2026-11-25T08:00:00Z",
                },
            )
            for i in range(500)
        ]
        for _ in range(10)
    ]
    started = time.perf_counter()
    for n, page in enumerate(pages):
        store.apply_pulled(page, cursor=str(n))
    rate = 5000 / (time.perf_counter() - started)
    assert store.record_count("visit") == 5000
    print(f"applied {rate:.0f} records/s")
    assert rate >= 5000, f"{rate:.0f} records/s"


def test_conflicts_are_kept_until_seen(store: LocalStore):
    hid = store.create("household", household(phone="1"), hlc=stamp(1))
    [entry] = store.pending_mutations(10)
    record = Record(entity="household", id=hid, version=2, hlc=stamp(5), fields=household(phone="9"))
    result = Result(
        mid=entry.mid,
        status=MutationStatus.MERGED,
        version=2,
        record=record,
        conflicts=[Conflict(field="phone", kept="9", lost="1", winner_hlc=stamp(5))],
    )
    store.apply_results([entry], [result])
    [conflict] = store.conflicts(unseen_only=True)
    assert (conflict.field, conflict.kept, conflict.lost, conflict.seen) == ("phone", "9", "1", False)
    store.mark_conflicts_seen([conflict.cid])
    assert store.conflicts(unseen_only=True) == []
    assert len(store.conflicts()) == 1
    # A repeated result (the server's first result for a re-sent mid) logs nothing twice.
    store.apply_results([entry], [result])
    assert len(store.conflicts()) == 1


def test_wipe_erases_the_database_files_and_every_blob(tmp_path: Path):
    path = tmp_path / "w" / "store.db"
    store = LocalStore(path, AesGcmCipher(AesGcmCipher.generate_key()))
    fill_with_personal_data(store)
    assert any(store.blob_dir.iterdir())
    store.wipe()
    assert not path.exists()
    assert not Path(str(path) + "-wal").exists() and not Path(str(path) + "-shm").exists()
    assert not store.blob_dir.exists()
    assert [p for p in (tmp_path / "w").rglob("*")] == []
    with pytest.raises(StorageError):
        store.pending_count()


def test_meta_values_round_trip_and_can_be_removed(store: LocalStore):
    store.set_meta("server.url", "https://x")
    assert store.get_meta("server.url") == "https://x"
    store.set_meta("server.url", None)
    assert store.get_meta("server.url", "none") == "none"


def test_new_ids_are_time_ordered_uuid7():
    ids = [new_id() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == 2000
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)


def test_blob_kept_sealed_reads_back_and_is_queued_for_upload(store: LocalStore):
    sha = store.put_blob(PHOTO)
    assert store.read_blob(sha) == PHOTO
    assert store.blobs_to_upload() == [sha]
    assert PHOTO[:40] not in (store.blob_dir / sha).read_bytes()
    store.mark_blob_uploaded(sha)
    assert store.blobs_to_upload() == []


def test_an_edit_with_a_malformed_stamp_is_refused(store: LocalStore):
    with pytest.raises(InvalidEdit, match="hlc"):
        store.create("household", household(), hlc="yesterday")
    assert store.pending_count() == 0


def test_old_applied_results_are_pruned_but_rejections_stay(store: LocalStore):
    store.create("household", household(head_name="a"), hlc=stamp(1))
    store.create("household", household(head_name="b"), hlc=stamp(2))
    first, second = store.pending_mutations(10)
    store.apply_results(
        [first, second],
        [
            Result(mid=first.mid, status=MutationStatus.APPLIED, version=1),
            Result(
                mid=second.mid,
                status=MutationStatus.REJECTED,
                version=0,
                error=ResultError(code="invalid", message="no"),
            ),
        ],
    )
    assert store.prune_results(older_than_days=1) == 0
    assert store.prune_results(older_than_days=-1) == 1
    assert store.result(first.mid) is None
    assert [r.mid for r in store.rejections()] == [second.mid]


def test_an_applied_result_without_a_record_replays_the_edit_on_the_local_copy(store: LocalStore):
    hid = str(uuid.uuid4())
    store.apply_pulled([Record(entity="household", id=hid, version=1, hlc=stamp(1), fields=household(phone="1"))])
    store.edit("household", hid, {"phone": "2"}, hlc=stamp(2))
    store.edit("household", hid, {"phone": "3"}, hlc=stamp(3))
    applied, merged = store.pending_mutations(10)
    store.apply_results(
        [applied, merged],
        [
            Result(mid=applied.mid, status=MutationStatus.APPLIED, version=2),
            Result(mid=merged.mid, status=MutationStatus.MERGED, version=3),
        ],
    )
    record = store.get("household", hid)
    # The applied edit is shown at its new version; the merge's outcome waits for the pull.
    assert (record.version, record.fields["phone"], record.pending) == (2, "2", False)


def test_a_damaged_database_file_is_a_storage_error_not_a_sqlite_error(tmp_path: Path):
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError) as caught:
        LocalStore(path, AesGcmCipher(AesGcmCipher.generate_key()))
    assert "cannot open the local store" in str(caught.value)


def test_a_photo_hash_that_is_a_path_never_names_a_file_outside_the_blob_folder(store: LocalStore, tmp_path: Path):
    # A record stored before pulled records were checked, naming a "photo" by a path.
    escape = "../" * 8 + str(tmp_path).lstrip("/") + "/escaped"
    store.apply_pulled(
        [Record(entity="visit", id=new_id(), version=1, hlc=f"{int(time.time() * 1000):013d}-0000-srv",
                fields={"grid_id": GRID, "photos": [escape, "/" + escape.lstrip("./")]})],
        cursor="c1",
    )
    assert store.blobs_to_download() == []
    for name in (escape, "/" + escape.lstrip("./"), "A" * 64):
        with pytest.raises(StorageError, match="not a blob hash"):
            store.append_blob_part(name, 0, b"from a hostile server")
        with pytest.raises(StorageError, match="not a blob hash"):
            store.read_blob(name)
    assert not list(tmp_path.glob("escaped*"))


def test_a_held_photo_waits_for_the_edit_that_names_it_and_a_dropped_one_is_gone(store: LocalStore):
    """The app's unsaved forms hold photos: sealed here, never uploaded, until a saved record names them."""
    from sync.client.store import BLOB_HELD, BLOB_LOCAL

    kept, dropped = store.put_blob(b"photo kept", state=BLOB_HELD), store.put_blob(b"photo dropped", state=BLOB_HELD)
    assert store.blobs_to_upload() == [] and store.blob_state(kept) == BLOB_HELD
    store.create("patrol", {"grid_id": GRID, "started_at": "2026-11-25T08:00:00+08:00", "photos": [kept]}, hlc=HLC)
    assert store.blob_state(kept) == BLOB_LOCAL and store.blobs_to_upload() == [kept]
    store.drop_held_blobs([kept, dropped])
    assert store.blob_state(dropped) is None and store.read_blob(dropped) is None
    assert store.read_blob(kept) == b"photo kept"  # a record names it: never dropped
