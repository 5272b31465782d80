"""Replies no v1 server could send are refused whole: nothing stored, nothing lost, and the next
round against a server that behaves converges as if the bad reply had never come."""

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
    return lambda page: page["changes"][0]["fields"].update(fields)


def first_record(**values):
    return lambda page: page["changes"][0].update(values)


@pytest.mark.parametrize(
    ("spoil", "said"),
    [
        (first_record(entity="spaceship"), "unknown entity"),
        (first_record(version=-3), "at version -3"),
        (first_record(hlc="yesterday"), "unreadable hlc"),
        (first_record(id="../../etc"), "not a UUID"),
        (first_record(entity="case", fields={"grid_id": GRID, "title": "漏水", "photos": ["../../x"]}), "photos"),
        (first_record(entity="case", fields={"grid_id": GRID, "title": "漏水", "photos": 5}), "photos"),
        (first_record_fields(grid_id={"a": 1}), "grid_id"),
        (first_record_fields(members="many"), "members"),
        (first_record_fields(notes="x" * 100_000), "notes"),
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

    a.engine.transport.pull = good_pull
    a.engine.sync()
    assert a.store.get("household", hid).fields == server.record("household", hid).fields
    assert a.store.record_count("household") == len([k for k in server.records if k[0] == "household"])
    assert a.store.get("household", mine).version == 1


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

    b = make_device("b")
    tamper_pulls(b.engine.transport, first_record_fields(floor_area_m2=86, members="many"))
    with pytest.raises(ProtocolError, match="members"):
        b.engine.sync()


@pytest.mark.parametrize(
    ("spoil", "said"),
    [
        (lambda reply: [r["record"].update(id=STRANGER) for r in reply["results"]], "the record of another"),
        (lambda reply: reply["results"].append(dict(reply["results"][0], status="rejected")), "two results"),
        (lambda reply: reply["results"].append(dict(reply["results"][0], mid=STRANGER)), "did not send"),
        (lambda reply: [(r.pop("record"), r.update(version=0)) for r in reply["results"]], "version 0"),
        (lambda reply: [r["record"]["fields"].update(members="many") for r in reply["results"]], "members"),
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
