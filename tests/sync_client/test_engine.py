"""The sync engine against an in-memory server: rounds, crash safety, conflicts, auth, revocation."""

from __future__ import annotations

import time

import pytest

from shared_schema.messages import Mutation
from sync.client import SyncEngine
from sync.client.engine import stored_clock_offset_ms
from sync.client.store import META_CLOCK_LAST, META_CLOCK_OFFSET, META_CURSOR, LocalStore
from sync.errors import (
    AuthError,
    DeviceRevoked,
    NotEnrolled,
    ProtocolError,
    StorageError,
    TransportError,
    UpgradeRequired,
)
from sync.hlc import parse_stamp
from tests.sync_client.fake_server import GRID, FakeServer

VISITED = "2026-11-25T08:00:00+00:00"


def household(**extra) -> dict:
    return {"grid_id": GRID, "address": "所前社区3幢", **extra}


def test_first_sync_pushes_local_records_and_pulls_everyone_elses(make_device, server: FakeServer):
    a, b = make_device("a"), make_device("b")
    hid = a.engine.create("household", household(head_name="张三"))
    vid = a.engine.create("visit", {"grid_id": GRID, "household_id": hid, "method": "inquiry", "visited_at": VISITED})
    report = a.engine.sync()
    assert (report.pushed, report.applied, report.rejected) == (2, 2, 0)
    assert a.store.pending_count() == 0
    assert a.store.get("household", hid).version == 1 and not a.store.get("household", hid).pending

    report = b.engine.sync()
    assert report.pulled == 2
    assert b.store.get("household", hid).fields == server.record("household", hid).fields
    assert b.store.get("visit", vid).fields["method"] == "inquiry"
    assert b.engine.last_sync()["ok"] is True


@pytest.mark.parametrize("step", ["_store_result", "_adopt_result_record", "_store_conflicts", "_retire_entry"])
def test_retried_push_after_crash_while_storing_results_applies_once(
    make_device, server: FakeServer, monkeypatch, step
):
    a = make_device("a")
    hid = a.engine.create("household", household(members=1))
    a.engine.edit("household", hid, {"members": 2})
    a.engine.create("household", household(members=3))
    mids = [e.mid for e in a.store.pending_mutations(10)]
    original = getattr(LocalStore, step)
    calls = []

    def crash_on_second_entry(self, db, entry, *rest):  # noqa: ANN001 - the process dies mid-transaction
        calls.append(entry.mid)
        if len(calls) == 2:
            raise KeyboardInterrupt("power cut")
        return original(self, db, entry, *rest)

    monkeypatch.setattr(LocalStore, step, crash_on_second_entry)
    with pytest.raises(KeyboardInterrupt):
        a.engine.sync()
    monkeypatch.undo()
    # Nothing left the outbox without its result: the whole results transaction rolled back.
    assert [e.mid for e in a.store.pending_mutations(10)] == mids
    assert [a.store.result(m) for m in mids] == [None, None, None]

    report = a.engine.sync()
    assert report.pushed == 3 and a.store.pending_count() == 0
    assert server.push_calls == [mids, mids]  # the same mids went again
    assert server.applied_mids == mids  # and the server applied each once
    assert server.record("household", hid).version == 2
    assert a.store.get("household", hid).version == 2
    assert all(a.store.result(m) is not None for m in mids)


def test_a_push_whose_reply_was_lost_is_resent_with_the_same_mids(make_device, server: FakeServer):
    a = make_device("a")
    for n in range(3):
        a.engine.create("household", household(members=n))
    mids = [e.mid for e in a.store.pending_mutations(10)]
    server.lose_push_reply_once = True
    report = a.engine.sync_with_retry(max_attempts=3, base_delay=0.01)
    assert server.push_calls == [mids, mids]
    assert server.applied_mids == mids
    assert report.pushed == 3 and a.store.pending_count() == 0
    assert {r.version for r in a.store.records("household")} == {1}


def test_the_cursor_moves_only_with_the_page_it_follows(make_device, server: FakeServer, monkeypatch):
    a, b = make_device("a"), make_device("b")
    for n in range(5):
        a.engine.create("household", household(members=n))
    a.engine.sync()

    original = LocalStore._upsert_records

    def fail_mid_page(self, db, records):  # noqa: ANN001
        original(self, db, records[:2])
        raise OSError("disk full")

    monkeypatch.setattr(LocalStore, "_upsert_records", fail_mid_page)
    with pytest.raises(OSError):
        b.engine.sync()
    monkeypatch.undo()
    assert b.store.get_meta(META_CURSOR) is None
    assert b.store.record_count() == 0  # the half-applied page rolled back with it

    assert b.engine.sync().pulled == 5
    assert b.store.record_count("household") == 5


def test_pull_pages_until_the_server_says_no_more(make_device, server: FakeServer):
    a = make_device("a")
    b = make_device("b", pull_limit=2)
    for n in range(5):
        a.engine.create("household", household(members=n))
    a.engine.sync()
    seen = []
    report = b.engine.sync(progress=seen.append)
    assert report.pulled == 5
    assert [p.done for p in seen if p.phase == "pull"] == [2, 4, 5]
    assert seen[-1].phase == "done"
    assert b.store.get_meta(META_CURSOR) == str(server.seq)


def test_the_outbox_goes_in_batches_of_at_most_500(make_device, server: FakeServer):
    a = make_device("a")
    for n in range(1203):
        a.store.create("diary", {"grid_id": GRID, "text": f"日记 {n}", "written_at": VISITED}, hlc=a.engine.stamp())
    report = a.engine.sync()
    assert [len(call) for call in server.push_calls] == [500, 500, 203]
    assert report.pushed == 1203 and report.applied == 1203


def test_concurrent_edits_merge_and_the_lost_value_is_kept_for_the_user(make_device, server: FakeServer):
    a, b = make_device("a"), make_device("b")
    hid = a.engine.create("household", household(phone="111", tags=["elderly"]))
    a.engine.sync()
    b.engine.sync()
    # Both edit offline; b's edit is later, so b wins the phone and both tags survive.
    a.engine.edit("household", hid, {"phone": "222", "tags": ["elderly", "disabled"]})
    time.sleep(0.005)  # b's stamp must be later on the wall clock, not only by counter
    b.engine.edit("household", hid, {"phone": "333", "tags": ["elderly", "veteran"]})
    a.engine.sync()
    report = b.engine.sync()
    assert report.merged == 1 and report.conflicts == 1
    [conflict] = b.store.conflicts(unseen_only=True)
    assert (conflict.field, conflict.kept, conflict.lost) == ("phone", "333", "222")
    a.engine.sync()
    expected = server.record("household", hid)
    for device in (a, b):
        record = device.store.get("household", hid)
        assert record.fields == expected.fields and record.version == expected.version
    assert expected.fields["tags"] == ["disabled", "elderly", "veteran"]


def test_own_later_edit_of_a_pending_record_is_not_a_conflict(make_device, server: FakeServer):
    a = make_device("a")
    hid = a.engine.create("household", household(phone="1"))
    a.engine.sync()
    a.engine.edit("household", hid, {"phone": "2"})
    a.engine.edit("household", hid, {"phone": "3", "notes": "second"})
    assert [e.base_version for e in a.store.pending_mutations(10)] == [1, 1]
    report = a.engine.sync()
    assert (report.applied, report.merged, report.conflicts) == (2, 0, 0)
    assert a.store.get("household", hid).fields["phone"] == "3"


def test_a_rejected_edit_leaves_the_outbox_and_stays_visible(make_device, server: FakeServer):
    a = make_device("a")
    cid = a.engine.create("case", {"grid_id": GRID, "category": "drainage", "title": "落水管", "status": "reported"})
    a.engine.sync()
    a.engine.edit("case", cid, {"status": "closed"})  # only the console may close a case
    report = a.engine.sync()
    assert report.rejected == 1 and a.store.pending_count() == 0
    [rejected] = a.store.rejections()
    assert rejected.code == "invalid_transition" and rejected.fields == {"status": "closed"}
    assert a.store.get("case", cid).fields["status"] == "reported"


def test_a_mutation_the_server_refuses_as_a_body_is_isolated_and_kept_as_a_rejection(make_device, server: FakeServer):
    a = make_device("a")
    for n in range(6):
        a.engine.create("household", household(members=n))
    bad = a.store.pending_mutations(10)[3].mid
    server.refuse_mids = {bad}
    report = a.engine.sync()
    assert report.applied == 5 and report.rejected == 1
    assert [r.mid for r in a.store.rejections()] == [bad]
    assert a.store.pending_count() == 0
    assert bad not in server.applied_mids


def test_the_token_is_cached_and_fetched_again_after_a_401(make_device, server: FakeServer):
    a = make_device("a")
    a.engine.sync()
    a.engine.sync()
    assert server.token_calls == 1
    server.expire_tokens()
    a.engine.create("household", household())
    report = a.engine.sync()
    assert report.pushed == 1 and server.token_calls == 2


def test_a_device_not_enrolled_cannot_sync(make_device):
    a = make_device("a", enroll=False)
    with pytest.raises(NotEnrolled):
        a.engine.sync()


def test_a_spent_enrollment_code_is_an_auth_error(make_device, server: FakeServer):
    code = server.new_code()
    make_device("a", enroll=False).engine.enroll(code)
    with pytest.raises(AuthError):
        make_device("b", enroll=False).engine.enroll(code)


def test_revoked_with_wipe_erases_the_store(make_device, server: FakeServer):
    a = make_device("a")
    a.engine.create("household", household(head_name="张三"))
    a.engine.add_photo(b"photo bytes")
    a.engine.sync()
    server.revoked[a.identity.device_id] = True
    with pytest.raises(DeviceRevoked) as caught:
        a.engine.sync()
    assert caught.value.wipe is True
    assert not a.path.exists() and not a.store.blob_dir.exists()
    assert list(a.path.parent.iterdir()) == []
    with pytest.raises(StorageError):
        a.store.records("household")


def test_retired_device_keeps_its_data_and_stops_syncing(make_device, server: FakeServer):
    a = make_device("a")
    hid = a.engine.create("household", household())
    a.engine.sync()
    a.engine.edit("household", hid, {"notes": "unsent"})
    server.revoked[a.identity.device_id] = False
    with pytest.raises(DeviceRevoked) as caught:
        a.engine.sync()
    assert caught.value.wipe is False and a.engine.retired
    assert a.store.get("household", hid).fields["notes"] == "unsent"
    calls = server.token_calls
    with pytest.raises(DeviceRevoked):
        a.engine.sync()
    assert server.token_calls == calls  # no request is sent once retired


def test_sync_with_retry_backs_off_on_transport_errors_only(make_device, server: FakeServer):
    waits: list[float] = []
    a = make_device("a")
    a.engine._sleep = waits.append
    server.fail_pulls = 3
    report = a.engine.sync_with_retry(max_attempts=5, base_delay=1.0)
    assert report.pulled == 0 and len(waits) == 3
    assert 0.5 <= waits[0] <= 1 and 1 <= waits[1] <= 2 and 2 <= waits[2] <= 4

    server.fail_pulls = 10
    waits.clear()
    with pytest.raises(TransportError):
        a.engine.sync_with_retry(max_attempts=2, base_delay=0.01)
    assert len(waits) == 1
    assert a.engine.last_sync()["ok"] is False

    server.fail_pulls = 0
    server.upgrade_required = True
    waits.clear()
    with pytest.raises(UpgradeRequired):
        a.engine.sync_with_retry(max_attempts=5)
    assert waits == []


def test_the_clock_runs_past_server_time_and_pulled_stamps_and_survives_a_restart(
    make_device, server: FakeServer, tmp_path
):
    ahead = server.clock.physical_ms() + 60_000  # another device a minute ahead, within the skew rule
    other = f"{ahead:013d}-0003-otherdevice"
    server.write_as(
        "otherdevice",
        Mutation(
            mid="0190a000-0000-7000-8000-0000000000aa",
            entity="household",
            id="0190a000-0000-7000-8000-0000000000bb",
            op="upsert",
            base_version=0,
            hlc=other,
            fields=household(),
        ),
    )
    a = make_device("a")
    a.engine.sync()
    stamp = a.engine.stamp()
    assert stamp > other
    assert parse_stamp(stamp).node == a.identity.device_id
    a.engine.create("household", household())
    last = a.store.get_meta(META_CLOCK_LAST)
    assert last > stamp
    # A new engine on the same store (the app restarted) never stamps before what it saw.
    again = SyncEngine(a.store, server.connect(), a.identity)
    assert again.stamp() > last


def test_a_stamp_from_a_clock_far_ahead_does_not_drag_ours_along(make_device, server: FakeServer):
    far = server.clock.physical_ms() + 365 * 24 * 3600 * 1000
    server.write_as(
        "liar",
        Mutation(
            mid="0190a000-0000-7000-8000-0000000000cc",
            entity="household",
            id="0190a000-0000-7000-8000-0000000000dd",
            op="upsert",
            base_version=0,
            hlc=f"{far:013d}-0000-liar",
            fields=household(),
        ),
    )
    a = make_device("a")
    a.engine.sync()
    assert parse_stamp(a.engine.stamp()).wall_ms < far - 300 * 24 * 3600 * 1000


def test_a_protocol_error_on_pull_is_raised_not_retried(make_device, server: FakeServer, monkeypatch):
    a = make_device("a")
    waits: list[float] = []
    a.engine._sleep = waits.append

    def refuse(token, cursor, limit):  # noqa: ANN001
        raise ProtocolError("malformed", "bad cursor", status=400)

    monkeypatch.setattr(a.engine.transport, "pull", refuse)
    with pytest.raises(ProtocolError, match="bad cursor"):
        a.engine.sync_with_retry()
    assert waits == []


def _refusing_cursors(transport, refuse):  # noqa: ANN001
    """The transport's pull, answering ``400 malformed`` (as the server does for a cursor it did
    not issue) when ``refuse(cursor)``; records every cursor asked with."""
    original = transport.pull
    asked: list[str | None] = []

    def pull(token, cursor, limit):  # noqa: ANN001
        asked.append(cursor)
        if refuse(cursor):
            raise ProtocolError("malformed", "the cursor is not one this server issued", detail={"path": "cursor"},
                                status=400)
        return original(token, cursor, limit)

    transport.pull = pull
    return asked


def test_a_cursor_the_server_refuses_is_dropped_and_everything_pulled_again(make_device, server: FakeServer):
    a, b = make_device("a"), make_device("b", pull_limit=2)
    kept = a.engine.create("household", household(members=1))
    gone = a.engine.create("household", household(members=2))
    a.engine.sync()
    b.engine.sync()
    old = b.store.get_meta(META_CURSOR)
    a.engine.delete("household", gone)
    added = a.engine.create("household", household(members=3))
    a.engine.sync()
    # The server no longer takes b's cursor (its database was replaced, or it began signing
    # cursors): kept, it would fail every round and b would never see another change.
    asked = _refusing_cursors(b.engine.transport, lambda cursor: cursor == old)
    waits: list[float] = []
    b.engine._sleep = waits.append
    report = b.engine.sync_with_retry()
    assert asked[:2] == [old, None] and old not in asked[1:]
    assert report.pulled == 3 and waits == []
    assert b.store.get_meta(META_CURSOR) == str(server.seq)
    assert {r.id for r in b.store.records("household")} == {kept, added}
    assert b.store.get("household", gone).deleted  # the tombstone came with the full pull
    assert b.engine.sync().pulled == 0


def test_a_server_that_refuses_every_cursor_is_not_looped_on(make_device, server: FakeServer):
    a, b = make_device("a"), make_device("b", pull_limit=2)
    a.engine.create("household", household())
    a.engine.sync()
    b.engine.sync()
    old = b.store.get_meta(META_CURSOR)
    for n in range(4):
        a.engine.create("household", household(members=n))
    a.engine.sync()
    asked = _refusing_cursors(b.engine.transport, lambda cursor: cursor is not None)
    with pytest.raises(ProtocolError, match="not one this server issued"):
        b.engine.sync()
    # Once from the start, and then the error; the first page of it is kept, with its cursor.
    assert len(asked) == 3 and asked[:2] == [old, None]
    assert b.store.get_meta(META_CURSOR) == asked[2] != old
    assert b.store.record_count("household") == 2


def test_a_new_transport_is_used_with_a_fresh_token(make_device, server: FakeServer):
    a = make_device("a")
    a.engine.sync()
    moved = server.connect()
    a.engine.set_transport(moved)
    a.engine.create("household", household())
    assert a.engine.sync().applied == 1
    assert a.engine.transport is moved and server.token_calls == 2


def test_enrolling_again_pulls_everything_afresh(make_device, server: FakeServer):
    a, b = make_device("a"), make_device("b")
    a.engine.create("household", household())
    a.engine.sync()
    b.engine.sync()
    assert b.store.get_meta(META_CURSOR) is not None
    b.engine.enroll(server.new_code())
    assert b.store.get_meta(META_CURSOR) is None
    assert b.engine.sync().pulled == 1


def test_an_edit_made_while_a_pull_runs_survives_the_page_that_brings_its_record(make_device, server: FakeServer):
    a = make_device("a", pull_limit=1)
    b = make_device("b")
    ids = [b.engine.create("household", household(members=n)) for n in range(3)]
    b.engine.sync()
    a.engine.sync()
    for hid in ids:
        b.engine.edit("household", hid, {"phone": "120"})
    b.engine.sync()
    mids = []

    def edit_the_last_record_before_its_page_arrives(progress) -> None:  # noqa: ANN001
        if progress.phase == "pull" and not mids:
            mids.append(a.engine.edit("household", ids[-1], {"notes": "mine"}))

    a.engine.sync(progress=edit_the_last_record_before_its_page_arrives)
    record = a.store.get("household", ids[-1])
    assert record.pending and record.version == 2
    assert (record.fields["phone"], record.fields["notes"]) == ("120", "mine")
    a.engine.sync()
    assert a.store.result(mids[0]).status.value == "applied"
    assert server.record("household", ids[-1]).fields["notes"] == "mine"


def test_a_phone_whose_clock_ran_a_year_ahead_stamps_from_server_time_after_it_syncs(make_device, server: FakeServer):
    year_ms = 365 * 24 * 3600 * 1000
    a = make_device("a", enroll=False, wall=lambda: server.clock.physical_ms() + year_ms)
    hid = a.engine.create("household", household())  # stamped a year ahead, offline
    assert parse_stamp(a.store.pending_mutations(1)[0].hlc).wall_ms > server.clock.physical_ms() + year_ms - 60_000
    a.engine.enroll(server.new_code())
    a.engine.sync()
    a.engine.edit("household", hid, {"notes": "after the correction"})
    stamp = parse_stamp(a.store.pending_mutations(1)[0].hlc)
    assert abs(stamp.wall_ms - server.clock.physical_ms()) < 60_000
    # A restart keeps the corrected clock: the persisted stamp is no longer a year ahead.
    again = SyncEngine(a.store, server.connect(), a.identity, wall=lambda: server.clock.physical_ms() + year_ms)
    assert abs(parse_stamp(again.stamp()).wall_ms - server.clock.physical_ms()) < 60_000


@pytest.mark.parametrize("nonsense", [10**15, 2**63 - 1, -5])
def test_a_server_time_no_stamp_can_hold_leaves_the_clock_alone(make_device, server: FakeServer, nonsense):
    a = make_device("a")
    hid = a.engine.create("household", household())
    a.engine.ensure_token()
    real_now = server._now
    server._now = lambda: nonsense  # a server whose push and pull replies carry a broken time
    a.engine.sync()
    assert a.store.pending_count() == 0
    a.engine.edit("household", hid, {"notes": "still editable"})
    stamp = parse_stamp(a.store.pending_mutations(1)[0].hlc)
    assert abs(stamp.wall_ms - real_now()) < 60_000
    again = SyncEngine(a.store, server.connect(), a.identity)  # the app restarted
    assert abs(parse_stamp(again.stamp()).wall_ms - real_now()) < 60_000


def test_a_stored_clock_no_stamp_can_hold_does_not_stop_the_engine_from_starting(make_device, server: FakeServer):
    a = make_device("a")
    a.store.set_meta_many({META_CLOCK_LAST: f"{10**15}-0000-{a.identity.device_id}", META_CLOCK_OFFSET: str(10**15)})
    again = SyncEngine(a.store, server.connect(), a.identity)
    assert abs(parse_stamp(again.stamp()).wall_ms - server.clock.physical_ms()) < 60_000
    a.store.set_meta(META_CLOCK_OFFSET, "soon")
    assert parse_stamp(SyncEngine(a.store, server.connect(), a.identity).stamp())


def test_the_stored_clock_offset_is_learned_at_enrollment_and_read_as_the_engine_reads_it(make_device, server):
    three_hours_ms = 3 * 3600 * 1000

    def slow_wall() -> int:
        return server.clock.physical_ms() - three_hours_ms

    a = make_device("a", enroll=False, wall=slow_wall)
    assert stored_clock_offset_ms(a.store, slow_wall()) is None  # never heard the server's time
    a.engine.enroll(server.new_code())
    assert abs(stored_clock_offset_ms(a.store, slow_wall()) - three_hours_ms) < 60_000
    a.store.set_meta(META_CLOCK_OFFSET, str(10**15))  # what an earlier app version could store
    assert stored_clock_offset_ms(a.store, slow_wall()) == 0
    a.store.set_meta(META_CLOCK_OFFSET, "soon")
    assert stored_clock_offset_ms(a.store, slow_wall()) == 0
