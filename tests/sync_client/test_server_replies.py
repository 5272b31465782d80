"""Replies no v1 server could send are refused whole: nothing stored, nothing lost, and the next
round against a server that behaves converges as if the bad reply had never come. A record a
server could hold but this app cannot (an entity or a value it does not know) is set aside,
sealed, while the rest of the reply is applied, and applied once the app can read it."""

from __future__ import annotations

import time

import msgspec
import pytest

from shared_schema.messages import MutationStatus, PullReply, PushReply
from sync.client.server_replies import MAX_CURSOR_LENGTH
from sync.client.store import META_CURSOR
from sync.errors import ProtocolError
from tests.sync_client.fake_server import GRID, FakeServer

STRANGER = "0190a000-0000-7000-8000-00000000abcd"


def household(**extra) -> dict:
    return {"grid_id": GRID, "address": "所前社区3幢", **extra}


def tamper_pulls(transport, change_page) -> None:  # noqa: ANN001
    """Let ``change_page`` rewrite every pull page (a builtins dict) before the engine sees it."""
    original = transport.pull

    def pull(token, cursor, limit):  # noqa: ANN001
        page = msgspec.to_builtins(original(token, cursor, limit))
        change_page(page)
        return msgspec.convert(page, PullReply)

    transport.pull = pull


def tamper_pushes(transport, change_reply) -> None:  # noqa: ANN001
    """Let ``change_reply`` rewrite every push reply (a builtins dict); the server has committed."""
    original = transport.push

    def push(token, mutations):  # noqa: ANN001
        reply = msgspec.to_builtins(original(token, mutations))
        change_reply(reply)
        return msgspec.convert(reply, PushReply)

    transport.push = push


def first_record_fields(**fields):
    return lambda page: page["changes"] and page["changes"][0]["fields"].update(fields)


def first_record(**values):
    return lambda page: page["changes"] and page["changes"][0].update(values)


@pytest.mark.parametrize(
    ("spoil", "said"),
    [
        (first_record(version=-3), "at version -3"),
        (first_record(hlc="yesterday"), "unreadable hlc"),
        (first_record(id="../../etc"), "not a UUID"),
    ],
)
def test_a_pulled_page_with_a_record_no_server_could_hold_is_refused_whole(
    make_device, server: FakeServer, spoil, said
):
    other, a = make_device("other"), make_device("a")
    for n in range(3):
        other.engine.create("household", household(address=f"{n}号"))
    other.engine.sync()
    a.engine.sync()
    cursor = a.store.get_meta(META_CURSOR)
    hid = other.engine.create("household", household(members=2))
    other.engine.create("household", household(address="另一户"))
    other.engine.sync()
    mine = a.engine.create("household", household(address="我的"))

    good_pull = a.engine.transport.pull
    tamper_pulls(a.engine.transport, spoil)
    with pytest.raises(ProtocolError) as refused:
        a.engine.sync()
    assert refused.value.code == "malformed" and said in str(refused.value)
    # The push went before the pull; the bad page left no trace and the cursor did not move.
    assert a.store.pending_count() == 0
    assert a.store.get("household", hid) is None
    assert a.store.get_meta(META_CURSOR) == cursor
    assert a.store.set_aside_count() == 0

    a.engine.transport.pull = good_pull
    a.engine.sync()
    assert a.store.get("household", hid).fields == server.record("household", hid).fields
    assert a.store.record_count("household") == len([k for k in server.records if k[0] == "household"])
    assert a.store.get("household", mine).version == 1


def store_bytes(device) -> bytes:  # noqa: ANN001
    return b"".join(f.read_bytes() for f in device.path.parent.glob(device.path.name + "*") if f.is_file())


@pytest.mark.parametrize(
    ("spoil", "said"),
    [
        (first_record(entity="spaceship"), "entity this app does not know"),
        (first_record(entity="case", fields={"grid_id": GRID, "title": "漏水", "photos": ["../../x"]}), "photos"),
        (first_record(entity="case", fields={"grid_id": GRID, "title": "漏水", "photos": 5}), "photos"),
        (first_record_fields(grid_id={"a": 1}), "grid_id"),
        (first_record_fields(members="many"), "members"),
        (first_record_fields(notes="x" * 100_000), "notes"),
    ],
)
def test_a_record_the_app_cannot_hold_is_set_aside_and_the_rest_of_its_page_applied(
    make_device, server: FakeServer, spoil, said
):
    # A server can hold such a record for good (a newer server's entity or value, data stored
    # before its checks tightened): refusing the page would stop the grid's phones for good.
    other, a = make_device("other"), make_device("a")
    other.engine.create("household", household(address="一号"))
    other.engine.sync()
    a.engine.sync()
    cursor = a.store.get_meta(META_CURSOR)
    hid = other.engine.create("household", household(address="不可读的那户", members=2))
    kept = other.engine.create("household", household(address="另一户"))
    other.engine.sync()
    mine = a.engine.create("household", household(address="我的"))

    tamper_pulls(a.engine.transport, spoil)
    report = a.engine.sync()
    assert (report.pulled, report.set_aside, report.pushed) == (2, 1, 1)  # mine comes back too
    assert a.store.get("household", hid) is None
    assert a.store.get("household", kept).fields == server.record("household", kept).fields
    assert a.store.get("household", mine).version == 1
    assert a.store.get_meta(META_CURSOR) != cursor
    [aside] = a.store.set_aside()
    assert aside.record.id == hid and said in aside.reason and not aside.seen
    assert "不可读的那户".encode() not in store_bytes(a)  # sealed like every record

    # Told once: a new round does not set it aside again.
    a.store.mark_set_aside_seen()
    a.engine.sync()
    assert a.store.set_aside_count(unseen_only=True) == 0 and a.store.set_aside_count() == 1


def test_a_readable_version_replaces_what_was_set_aside(make_device, server: FakeServer):
    other, a = make_device("other"), make_device("a")
    hid = other.engine.create("household", household(members=2))
    other.engine.sync()
    good_pull = a.engine.transport.pull
    tamper_pulls(a.engine.transport, first_record_fields(members="many"))
    a.engine.sync()
    assert a.store.set_aside_count() == 1 and a.store.get("household", hid) is None

    a.engine.transport.pull = good_pull
    other.engine.edit("household", hid, {"members": 3})
    other.engine.sync()
    a.engine.sync()
    assert a.store.get("household", hid).fields["members"] == 3
    assert a.store.set_aside_count() == 0


def test_what_was_set_aside_is_applied_once_the_app_can_read_it(make_device, server: FakeServer, monkeypatch):
    from shared_schema.entities import FieldsInvalid, validate_fields
    from sync.client import server_replies

    other, a = make_device("other"), make_device("a")
    hid = other.engine.create("household", household(address="新小区1幢", members=2))
    plain = other.engine.create("household", household(address="老小区"))
    other.engine.sync()

    def older_app(entity, fields):  # noqa: ANN001 - an app that does not know new compounds yet
        if "新小区" in str(fields.get("address", "")):
            raise FieldsInvalid("address: not a compound this app knows")
        return validate_fields(entity, fields)

    monkeypatch.setattr(server_replies, "validate_fields", older_app)
    report = a.engine.sync()
    assert (report.set_aside, a.store.get("household", hid), a.store.get("household", plain).version) == (1, None, 1)

    monkeypatch.setattr(server_replies, "validate_fields", validate_fields)  # the app was upgraded
    report = a.engine.sync()
    assert (report.readmitted, report.pulled) == (1, 0)
    assert a.store.get("household", hid).fields == server.record("household", hid).fields
    assert a.store.set_aside_count() == 0


def test_an_older_set_aside_copy_does_not_roll_back_a_newer_record(make_device, server: FakeServer):
    other, a = make_device("other"), make_device("a")
    hid = other.engine.create("household", household(members=2))
    other.engine.sync()
    a.engine.sync()
    other.engine.edit("household", hid, {"members": 4})
    other.engine.sync()
    a.engine.sync()
    # A copy at version 1 cannot displace version 2, nor wait to be applied.
    from shared_schema.messages import Record
    from sync.client.store import Unfit

    stale = Record(entity="household", id=hid, version=1, hlc=a.store.get("household", hid).hlc, deleted=False,
                   fields={"grid_id": GRID, "address": "所前社区3幢", "members": "many"})
    a.store.apply_pulled([], unfit=[Unfit(stale, "members: not an int")])
    assert a.store.set_aside_count() == 0 and a.store.get("household", hid).fields["members"] == 4


def test_a_field_the_app_does_not_know_yet_does_not_stop_it_pulling(make_device, server: FakeServer):
    # A server upgraded ahead of the phones (a new optional field on households): the phones
    # keep syncing, and what they know of the record is still checked.
    other, a = make_device("other"), make_device("a")
    hid = other.engine.create("household", household(members=2))
    other.engine.sync()
    tamper_pulls(a.engine.transport, first_record_fields(floor_area_m2=86))
    a.engine.sync()
    assert a.store.get("household", hid).fields["members"] == 2
    assert "floor_area_m2" not in a.store.get("household", hid).fields

    # Set aside, the record keeps the field a later app may know.
    b = make_device("b")
    tamper_pulls(b.engine.transport, first_record_fields(floor_area_m2=86, members="many"))
    assert b.engine.sync().set_aside == 1
    [aside] = b.store.set_aside()
    assert aside.record.fields["floor_area_m2"] == 86 and "members" in aside.reason


@pytest.mark.parametrize(
    ("spoil", "said"),
    [
        (lambda reply: [r["record"].update(id=STRANGER) for r in reply["results"]], "the record of another"),
        (lambda reply: reply["results"].append(dict(reply["results"][0], status="rejected")), "two results"),
        (lambda reply: reply["results"].append(dict(reply["results"][0], mid=STRANGER)), "did not send"),
        (lambda reply: [(r.pop("record"), r.update(version=0)) for r in reply["results"]], "version 0"),
        (lambda reply: [r["record"].update(version=-1) for r in reply["results"]], "version -1"),
    ],
)
def test_push_results_that_do_not_answer_the_mutations_sent_are_refused_and_the_outbox_kept(
    make_device, server: FakeServer, spoil, said
):
    a = make_device("a")
    first = a.engine.create("household", household(address="一号"))
    a.engine.sync()
    a.engine.edit("household", first, {"notes": "改了"})
    second = a.engine.create("household", household(address="二号"))
    pending = [e.mid for e in a.store.pending_mutations()]

    good_push = a.engine.transport.push
    tamper_pushes(a.engine.transport, spoil)
    with pytest.raises(ProtocolError) as refused:
        a.engine.sync()
    assert refused.value.code == "malformed" and said in str(refused.value)
    assert [e.mid for e in a.store.pending_mutations()] == pending
    assert all(a.store.result(mid) is None for mid in pending)
    assert a.store.get("household", STRANGER) is None
    assert a.store.get("household", first).version == 1

    a.engine.transport.push = good_push
    report = a.engine.sync()
    assert (report.applied, report.rejected, a.store.pending_count()) == (2, 0, 0)
    assert all(a.store.result(mid).status is MutationStatus.APPLIED for mid in pending)
    assert server.applied_mids.count(pending[0]) == 1  # the first push had committed; the second got its result
    for hid in (first, second):
        assert a.store.get("household", hid).fields == server.record("household", hid).fields


def test_a_pushed_record_the_app_cannot_hold_is_set_aside_and_the_edit_kept(make_device, server: FakeServer):
    a = make_device("a")
    hid = a.engine.create("household", household(address="一号", members=2))
    tamper_pushes(a.engine.transport, lambda reply: reply["results"][0]["record"]["fields"].update(members="many"))
    tamper_pulls(a.engine.transport, first_record_fields(members="many"))  # the server holds it so
    report = a.engine.sync()
    assert (report.applied, report.set_aside, a.store.pending_count()) == (1, 2, 0)
    # The user still sees what they saved, at the server's version; the server's copy waits apart.
    assert a.store.get("household", hid).fields["members"] == 2
    assert a.store.get("household", hid).version == 1
    [aside] = a.store.set_aside()
    assert aside.record.fields["members"] == "many" and aside.record.version == 1


def test_an_empty_page_that_says_there_is_more_is_refused_not_pulled_forever(make_device, server: FakeServer):
    a = make_device("a")
    asked: list[str | None] = []

    def endless(token, cursor, limit):  # noqa: ANN001
        asked.append(cursor)
        if len(asked) > 50:
            raise AssertionError("the engine pulled empty pages forever")
        return PullReply(changes=[], cursor=f"c{len(asked)}", more=True, server_time=int(time.time() * 1000))

    a.engine.transport.pull = endless
    with pytest.raises(ProtocolError, match="empty pull page"):
        a.engine.sync()
    assert asked == [None] and a.store.get_meta(META_CURSOR) is None


def test_a_cursor_too_long_to_send_back_is_refused_and_the_stored_one_kept(make_device, server: FakeServer):
    other, a = make_device("other"), make_device("a")
    a.engine.sync()
    cursor = a.store.get_meta(META_CURSOR)
    hid = other.engine.create("household", household())
    other.engine.sync()
    good_pull = a.engine.transport.pull
    tamper_pulls(a.engine.transport, lambda page: page.update(cursor="c" * (MAX_CURSOR_LENGTH + 1)))
    with pytest.raises(ProtocolError, match="cursor of"):
        a.engine.sync()
    assert a.store.get_meta(META_CURSOR) == cursor and a.store.get("household", hid) is None
    a.engine.transport.pull = good_pull
    a.engine.sync()
    assert a.store.get("household", hid).version == 1


def test_a_result_for_each_mutation_in_any_order_is_still_taken(make_device, server: FakeServer):
    a = make_device("a")
    ids = [a.engine.create("household", household(address=f"{n}号")) for n in range(3)]
    tamper_pushes(a.engine.transport, lambda reply: reply["results"].reverse())
    assert a.engine.sync().applied == 3
    assert all(a.store.get("household", hid).version == 1 for hid in ids)
