"""A third outside probe of the running server, written from docs/protocol.md alone (2026-12-02,
sixth session), on SQLite and PostgreSQL (two server processes where it matters), JSON and
msgpack: scope changes (section 6), the case workflow over the wire (section 9), union fields
and their caps (Changes 11, 17), the token and enrollment lifecycle (section 3), pull paging
while others write, blob ranges, reads and uploads (section 7), and the error format and reply
format of section 2 on every failing reply.

Defects it found, fixed: a blob stayed readable after every record in scope let go of it (a
photo taken off its record, a deleted visit); an Accept header's weights were ignored (q=0
msgpack still got msgpack); a grid's catch-up cut short by another scope change left the device
holding what the cut pages sent (records alive out of scope, or in-scope records tombstoned for
good); the catch-up sent tombstones of records made in a grid after it left the scope; a device
resolved a case without feedback.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import threading
import uuid

import httpx
import msgspec
import pytest
from sqlalchemy import update

from server.db.models import AuthChallenge
from server.devices.tokens import make_token
from server.records.writes import Sender, commit_mutations, server_clock
from shared_schema.messages import Mutation
from shared_schema.workflow import Actor
from sync.hlc import HybridClock, format_stamp, parse_stamp, wall_now_ms
from tests.conftest import run
from tests.support.device import WireDevice

BOTH = pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])


@pytest.fixture
def msgpack() -> bool:
    """The app's format; tests that run in both parametrize ``msgpack`` over ``BOTH``."""
    return True


def household(grid: str, **extra) -> dict:
    return {"grid_id": grid, "address": "台苑新村3幢", "head_name": "顾", **extra}


def visit(grid: str, **extra) -> dict:
    return {"grid_id": grid, "household_id": str(uuid.uuid4()), "method": "inquiry",
            "visited_at": "2026-12-02T10:00:00+08:00", **extra}


def case(grid: str, **extra) -> dict:
    return {"grid_id": grid, "category": "drainage", "title": "落水管破裂", "status": "reported", **extra}


def sha(n: int) -> str:
    return hashlib.sha256(f"photo {n}".encode()).hexdigest()


def error_of(device: WireDevice, response: httpx.Response, status: int, code: str) -> dict:
    """Section 2's error format, in the reply's format, with the Server-Time header."""
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response.headers.get("server-time", "").isdigit(), response.headers
    accept = response.request.headers.get("accept", "")
    asked = accept if "application/" in accept else response.request.headers.get("content-type", "")
    wanted = "application/msgpack" if "msgpack" in asked else "application/json"
    if response.request.method != "HEAD":
        assert response.headers.get("content-type", "").startswith(wanted), (asked, response.headers)
    body = device.decode(response)
    assert set(body) == {"error", "server_time"}, body
    assert isinstance(body["server_time"], int) and abs(body["server_time"] - wall_now_ms()) < 60_000
    error = body["error"]
    assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["detail"], dict), body
    return error


def later(device: WireDevice, mutation: dict, ms: int = 1000) -> dict:
    latest = max(wall_now_ms(), parse_stamp(server_clock().last()).wall_ms, parse_stamp(device.clock.last()).wall_ms)
    mutation["hlc"] = format_stamp(latest + ms, 0, device.device_id)
    return mutation


def console_edit(field, record_id: str, base_version: int, fields: dict) -> dict:
    """A supervisor's move through the one write path (the console's own actor)."""
    mutation = Mutation(mid=str(uuid.uuid4()), entity="case", id=record_id, op="upsert", base_version=base_version,
                        hlc=server_clock().now(), fields=fields)
    sender = Sender(origin="console:probe", actor=Actor.CONSOLE, scope=None)
    [result] = run(field.client, commit_mutations, field.sessionmaker, [mutation], sender)
    assert result.status.value in ("applied", "merged"), result
    return msgspec.to_builtins(result.record)


# ---------------------------------------------------------------------------------------------
# Section 6: the user's grids change


@pytest.fixture
def two_grids(field, msgpack):
    a, b = field.grid("A网格"), field.grid("B网格")
    field.user("wang", ["A网格"])
    field.user("zhao", ["B网格"])
    return a, b, field.device("wang", msgpack=msgpack), field.device("zhao", msgpack=not msgpack)


def _in_scope(records: list[dict], scope: set[str]) -> None:
    """G5: a live record pulled is of a grid in scope (a grid's own record: that grid)."""
    for r in records:
        if r["deleted"]:
            continue
        grid = r["id"] if r["entity"] == "grid" else r["fields"]["grid_id"]
        assert grid in scope, r


def _held(device: WireDevice) -> dict[str, dict]:
    return {i: r for i, r in device.records.items() if not r["deleted"]}


@BOTH
def test_a_grid_added_comes_whole_and_a_grid_removed_comes_as_tombstones_page_by_page(field, two_grids):
    a, b, wang, zhao = two_grids
    wang.push([wang.mutation("household", fields=household(a)) for _ in range(4)])
    zhao.push([zhao.mutation("household", fields=household(b)) for _ in range(5)])
    wang.pull_all()
    before = wang.cursor
    field.set_grids("wang", ["B网格"])
    pulled = wang.pull_all(limit=2)
    _in_scope(pulled, {b})
    ids = [r["id"] for r in pulled]
    zhao.pull_all()
    # Every record of B at its latest version, and nothing of A left alive.
    assert {i: r["version"] for i, r in _held(wang).items()} == {i: r["version"] for i, r in _held(zhao).items()}
    # A cursor from before the change still works (it is one this server issued).
    response = wang.call("GET", "/v1/sync/pull", params={"cursor": before})
    assert response.status_code == 200, response.text
    assert len(ids) == len(set(ids)), ids  # nobody wrote meanwhile: each record once


def test_a_grid_added_then_removed_during_the_catch_up_leaves_nothing_of_it_alive(field, two_grids):
    """Section 6: the records of a grid that left the scope come as tombstones, also when the
    device received some of them in the first pages of that grid's catch-up."""
    a, b, wang, zhao = two_grids
    zhao.push([zhao.mutation("household", fields=household(b)) for _ in range(6)])
    wang.push([wang.mutation("household", fields=household(a))])  # wang's cursor goes past B's records
    wang.pull_all()
    field.set_grids("wang", ["A网格", "B网格"])
    # One page of the catch-up only: a phone that lost the network after it.
    response = wang.call("GET", "/v1/sync/pull", params={"cursor": wang.cursor, "limit": "2"})
    page = wang.decode(response)
    assert page["more"] is True
    for r in page["changes"]:
        wang.records[r["id"]] = r
    wang.cursor = page["cursor"]
    assert any(r["entity"] == "household" and not r["deleted"] for r in page["changes"])
    field.set_grids("wang", ["A网格"])
    wang.pull_all()
    alive_of_b = [r for r in _held(wang).values() if r["entity"] != "grid" and r["fields"].get("grid_id") == b]
    assert alive_of_b == [], alive_of_b


def test_a_grid_swapped_away_and_back_during_the_catch_up_brings_the_old_grid_back_alive(field, two_grids):
    """Section 6 and G3: a device whose user went from A to B, pulled one page of that catch-up
    (tombstones of A), and then had A back instead of B, must end holding A's records alive."""
    a, _, wang, _ = two_grids
    wang.push([wang.mutation("household", fields=household(a)) for _ in range(6)])
    wang.pull_all()
    field.set_grids("wang", ["B网格"])
    page = wang.decode(wang.call("GET", "/v1/sync/pull", params={"cursor": wang.cursor, "limit": "3"}))
    assert page["more"] is True and any(r["deleted"] for r in page["changes"])
    for r in page["changes"]:
        wang.records[r["id"]] = r
    wang.cursor = page["cursor"]
    field.set_grids("wang", ["A网格"])
    wang.pull_all()
    households = [r for r in wang.records.values() if r["entity"] == "household"]
    assert len(households) == 6
    assert [r["id"] for r in households if r["deleted"]] == []


def test_records_made_in_a_grid_after_it_left_the_scope_are_not_pulled_even_as_tombstones(field, two_grids):
    """G5: 'nothing outside scope is ever pulled'. The tombstones of a grid that left are for what
    the device may hold; a record created there after it left was never in the device's scope."""
    a, _, wang, _ = two_grids
    field.user("li", ["A网格"], role="red_steward")
    li = field.device("li")
    wang.push([wang.mutation("household", fields=household(a))])
    wang.pull_all()
    field.set_grids("wang", ["B网格"])
    [later_made] = li.push([li.mutation("household", fields=household(a))])["results"]
    pulled = wang.pull_all(limit=1)
    assert later_made["record"]["id"] not in {r["id"] for r in pulled}


def test_a_push_to_a_grid_that_just_left_the_scope_is_forbidden_scope_and_tells_nothing(field, two_grids):
    a, _, wang, _ = two_grids
    [made] = wang.push([wang.mutation("household", fields=household(a))])["results"]
    record_id = made["record"]["id"]
    field.set_grids("wang", ["B网格"])
    edit = wang.mutation("household", record_id, {"notes": "after the move"}, base_version=1)
    new = wang.mutation("household", fields=household(a))
    delete = wang.mutation("household", record_id, op="delete", base_version=1)
    for result in wang.push([edit, new, delete])["results"]:
        assert result["status"] == "rejected" and result["error"]["code"] == "forbidden_scope", result
        assert result["version"] == 0 and "record" not in result
    # Nothing was written: the record is as it was when the user gets the grid back.
    field.set_grids("wang", ["A网格", "B网格"])
    pulled = {r["id"]: r for r in field.device("wang").pull_all()}
    assert pulled[record_id]["version"] == 1 and "notes" not in pulled[record_id]["fields"]


def test_a_device_whose_user_has_no_grids_syncs_nothing_until_a_grid_is_assigned(field):
    msgpack = True
    a = field.grid("A网格")
    field.user("li", ["A网格"])
    li = field.device("li")
    li.push([li.mutation("household", fields=household(a)) for _ in range(3)])
    field.user("nobody", [], role="red_steward")
    device = WireDevice(field.client, msgpack=msgpack)
    assert device.enroll(field.code("nobody"))["grids"] == []
    device.sign_in()
    assert device.pull_all() == []
    [result] = device.push([device.mutation("household", fields=household(a))])["results"]
    assert result["status"] == "rejected" and result["error"]["code"] == "forbidden_scope"
    field.set_grids("nobody", ["A网格"])
    pulled = device.pull_all(limit=1)
    _in_scope(pulled, {a})
    li.pull_all()
    assert {i: r["version"] for i, r in _held(device).items()} == {i: r["version"] for i, r in _held(li).items()}
    # And every grid taken away: everything it holds becomes a tombstone.
    field.set_grids("nobody", [])
    device.pull_all(limit=2)
    assert _held(device) == {}


# ---------------------------------------------------------------------------------------------
# Section 9: the case workflow over the wire


@pytest.fixture
def phone(two_phones):
    """A grid with two phones: wang speaks JSON, li msgpack (tests/server/conftest.py)."""
    return two_phones


def test_a_device_creates_a_case_only_as_reported(phone):
    grid, wang, li = phone
    for device in (wang, li):
        statuses = ["accepted", "dispatched", "overdue", "resolved", "closed", "reported"]
        results = device.push([device.mutation("case", fields=case(grid, status=s)) for s in statuses])["results"]
        for status, result in zip(statuses[:-1], results, strict=False):
            assert result["status"] == "rejected" and result["error"]["code"] == "invalid_transition", (status, result)
        assert results[-1]["status"] == "applied" and results[-1]["record"]["fields"]["status"] == "reported"


def test_the_device_moves_of_the_loop_and_the_ones_it_may_not_make(field, phone):
    grid, wang, li = phone
    [made] = wang.push([wang.mutation("case", fields=case(grid))])["results"]
    cid = made["record"]["id"]
    for status in ("accepted", "dispatched", "resolved", "closed", "overdue"):
        [r] = wang.push([wang.mutation("case", cid, {"status": status, "feedback": "修好了"})])["results"]
        assert r["status"] == "rejected" and r["error"]["code"] == "invalid_transition", (status, r)
    record = console_edit(field, cid, 1, {"status": "accepted"})
    record = console_edit(field, cid, record["version"], {"status": "dispatched"})
    wang.pull_all()
    for status in ("closed", "overdue", "accepted", "reported"):
        [r] = wang.push([wang.mutation("case", cid, {"status": status})])["results"]
        assert r["status"] == "rejected" and r["error"]["code"] == "invalid_transition", (status, r)
    [resolved] = wang.push([wang.mutation("case", cid, {"status": "resolved", "feedback": "已疏通"})])["results"]
    assert resolved["status"] == "applied", resolved
    assert resolved["record"]["fields"]["status"] == "resolved"
    for status in ("dispatched", "closed"):  # the console's moves after a resolution
        [r] = wang.push([wang.mutation("case", cid, {"status": status})])["results"]
        assert r["status"] == "rejected" and r["error"]["code"] == "invalid_transition", (status, r)
    # The server's own overdue, then the device resolves from there.
    record = console_edit(field, cid, resolved["version"], {"status": "dispatched"})
    overdue = Mutation(mid=str(uuid.uuid4()), entity="case", id=cid, op="upsert", base_version=record["version"],
                       hlc=server_clock().now(), fields={"status": "overdue"})
    from server.records.writes import SERVER
    [o] = run(field.client, commit_mutations, field.sessionmaker, [overdue], SERVER)
    assert o.status.value == "applied"
    li.pull_all()
    [r] = li.push([li.mutation("case", cid, {"status": "resolved", "feedback": "第二次修好"})])["results"]
    assert r["status"] == "applied" and r["record"]["fields"]["status"] == "resolved", r


def test_a_device_resolves_a_case_only_with_feedback(field, phone):
    grid, wang, _ = phone
    [made] = wang.push([wang.mutation("case", fields=case(grid))])["results"]
    cid = made["record"]["id"]
    record = console_edit(field, cid, 1, {"status": "accepted"})
    console_edit(field, cid, record["version"], {"status": "dispatched"})
    wang.pull_all()
    [bare] = wang.push([wang.mutation("case", cid, {"status": "resolved"})])["results"]
    assert bare["status"] == "rejected" and bare["error"]["code"] == "invalid_transition", bare
    [blank] = wang.push([wang.mutation("case", cid, {"status": "resolved", "feedback": ""})])["results"]
    [spaces] = wang.push([wang.mutation("case", cid, {"status": "resolved", "feedback": "  "})])["results"]
    assert blank["status"] == spaces["status"] == "rejected", (blank, spaces)
    [done] = wang.push([wang.mutation("case", cid, {"status": "resolved", "feedback": "管道已修好"})])["results"]
    assert done["status"] == "applied", done


SERVER_FIELDS = [{"department": None}, {"department": "城管"}, {"due_at": None},
                 {"due_at": "2026-12-09T10:00:00+08:00"}, {"rating": None}, {"rating": 5}]


def test_server_fields_of_a_case_are_read_only_for_a_device_even_null(field, phone):
    grid, wang, li = phone
    [made] = wang.push([wang.mutation("case", fields=case(grid))])["results"]
    cid = made["record"]["id"]
    for device in (wang, li):
        device.pull_all()
        mutations = [device.mutation("case", cid, {"title": "改标题", **f}) for f in SERVER_FIELDS]
        mutations += [device.mutation("case", fields=case(grid, **f)) for f in SERVER_FIELDS]
        for r in device.push(mutations)["results"]:
            assert r["status"] == "rejected" and r["error"]["code"] == "read_only_field", r
    assert [r["fields"]["title"] for r in wang.pull_all()] == []  # nothing was written


def test_a_visit_review_and_a_grid_are_read_only_for_a_device(phone):
    grid, wang, _ = phone
    [v] = wang.push([wang.mutation("visit", fields=visit(grid, review=None))])["results"]
    assert v["status"] == "rejected" and v["error"]["code"] == "read_only_field", v
    [g] = wang.push([wang.mutation("grid", grid, {"name": "改名"}, base_version=1)])["results"]
    assert g["status"] == "rejected" and g["error"]["code"] == "read_only_field", g


def test_two_devices_resolving_one_case_at_once_lose_no_feedback(field, phone):
    grid, wang, li = phone
    [made] = wang.push([wang.mutation("case", fields=case(grid))])["results"]
    cid = made["record"]["id"]
    record = console_edit(field, cid, 1, {"status": "accepted"})
    record = console_edit(field, cid, record["version"], {"status": "dispatched"})
    wang.pull_all()
    li.pull_all()
    first = wang.mutation("case", cid, {"status": "resolved", "feedback": "王：已修"})
    second = later(li, li.mutation("case", cid, {"status": "resolved", "feedback": "李：已修"}))
    [r1] = wang.push([first])["results"]
    [r2] = li.push([second])["results"]
    assert r1["status"] == "applied"
    assert r2["status"] == "merged", r2
    assert r2["record"]["fields"]["feedback"] == "李：已修" and r2["record"]["fields"]["status"] == "resolved"
    assert {c["field"]: c["lost"] for c in r2["conflicts"]}.get("feedback") == "王：已修", r2
    # Resolving again after the console closed it is an invalid transition for either device.
    console_edit(field, cid, r2["version"], {"status": "closed"})
    [r3] = wang.push([wang.mutation("case", cid, {"status": "resolved"}, base_version=r1["version"])])["results"]
    assert r3["status"] == "rejected" and r3["error"]["code"] == "invalid_transition", r3


# ---------------------------------------------------------------------------------------------
# Union fields: add-wins, removals, caps (Changes 11, 17)


def test_union_adds_win_and_a_removal_by_a_writer_that_saw_the_set_is_kept(phone):
    grid, wang, li = phone
    [made] = wang.push([wang.mutation("household", fields=household(grid, tags=["独居老人", "低保"]))])["results"]
    hid = made["record"]["id"]
    li.pull_all()
    [w] = wang.push([wang.mutation("household", hid, {"tags": ["独居老人", "低保", "残疾"]})])["results"]
    [li_r] = li.push([li.mutation("household", hid, {"tags": ["独居老人"]})])["results"]  # removes 低保, unseen add
    assert li_r["status"] in ("applied", "merged")
    assert sorted(li_r["record"]["fields"]["tags"]) == sorted(["独居老人", "低保", "残疾"]), li_r
    li.pull_all()
    [gone] = li.push([li.mutation("household", hid, {"tags": ["独居老人"]})])["results"]
    assert gone["status"] == "applied" and gone["record"]["fields"]["tags"] == ["独居老人"], gone
    assert w["status"] == "applied"


CAPS = [("visit", "photos", 32), ("visit", "topics", 64), ("household", "tags", 64), ("patrol", "hazards", 64),
        ("case", "photos", 32), ("diary", "topics", 64)]


def test_one_edit_may_send_up_to_the_cap_and_no_more(phone):
    grid, wang, li = phone
    make = {"visit": visit, "household": household, "case": case,
            "patrol": lambda g, **x: {"grid_id": g, "started_at": "2026-12-02T08:00:00+08:00", **x},
            "diary": lambda g, **x: {"grid_id": g, "text": "走访", "written_at": "2026-12-02T08:00:00+08:00", **x}}
    for device, (entity, name, cap) in zip([wang, li] * 3, CAPS, strict=True):
        items = [sha(i) for i in range(cap + 1)] if name == "photos" else [f"标签{i}" for i in range(cap + 1)]
        [over, full] = device.push([device.mutation(entity, fields=make[entity](grid, **{name: items})),
                                    device.mutation(entity, fields=make[entity](grid, **{name: items[:cap]}))]
                                   )["results"]
        assert over["status"] == "rejected" and over["error"]["code"] == "invalid", over
        assert name in over["error"]["message"]
        assert full["status"] == "applied" and len(full["record"]["fields"][name]) == cap


def test_concurrent_unions_reaching_the_cap_merge_and_passing_it_are_refused(phone):
    grid, wang, li = phone
    [made] = wang.push([wang.mutation("visit", fields=visit(grid, photos=[sha(i) for i in range(10)]))])["results"]
    vid = made["record"]["id"]
    li.pull_all()
    mine = [sha(i) for i in range(10)]
    [w] = wang.push([wang.mutation("visit", vid, {"photos": mine + [sha(100 + i) for i in range(11)]})])["results"]
    assert w["status"] == "applied"
    # li, not having seen wang's 11: 10 + 11 + 11 = 32 exactly: united.
    [l1] = li.push([li.mutation("visit", vid, {"photos": mine + [sha(200 + i) for i in range(11)]})])["results"]
    assert l1["status"] == "merged" and len(l1["record"]["fields"]["photos"]) == 32, l1
    # One more from a third base: 33: refused, naming the field; the record left as it was.
    [l2] = li.push([li.mutation("visit", vid, {"photos": mine + [sha(300)]}, base_version=1)])["results"]
    assert l2["status"] == "rejected" and l2["error"]["code"] == "invalid" and "photos" in l2["error"]["message"]
    latest = {r["id"]: r for r in wang.pull_all()}[vid]
    assert latest["version"] == l1["version"] and len(latest["fields"]["photos"]) == 32


# ---------------------------------------------------------------------------------------------
# Section 3: tokens and the enrollment lifecycle


def _user(field) -> None:
    field.grid("所前社区第1网格")
    field.user("wang", ["所前社区第1网格"])


def test_an_expired_token_is_401_and_a_token_of_another_secret_too(field):
    msgpack = True
    _user(field)
    wang = field.device("wang", msgpack=msgpack)
    secret = field.client.app.state.token_secret if hasattr(field.client.app.state, "token_secret") else None
    if secret is None:
        pytest.skip("the token secret is not on app.state")
    wang.token = make_token(secret, wang.device_id, wall_now_ms() - 1000)
    error_of(wang, wang.call("GET", "/v1/sync/pull"), 401, "unauthenticated")
    wang.token = make_token(b"x" * 32, wang.device_id, wall_now_ms() + 60_000)
    error_of(wang, wang.call("GET", "/v1/sync/pull"), 401, "unauthenticated")


def _challenge(device: WireDevice, device_id: str | None = None) -> str:
    response = device.call("POST", "/v1/auth/challenge", {"device_id": device_id or device.device_id}, auth=False)
    assert response.status_code == 200, response.text
    body = device.decode(response)
    assert body["expires_at"].endswith("Z") and isinstance(body["server_time"], int)
    return body["nonce"]


def _token(device: WireDevice, nonce: str, *, device_id: str | None = None, key=None) -> httpx.Response:
    device_id = device_id or device.device_id
    from shared_schema.messages import token_message
    signature = base64.b64encode((key or device.key).sign(token_message(device_id, nonce))).decode()
    return device.call("POST", "/v1/auth/token", {"device_id": device_id, "nonce": nonce, "signature": signature},
                       auth=False)


def test_a_challenge_is_single_use_and_only_for_its_device(field):
    msgpack = False
    _user(field)
    wang = field.device("wang", msgpack=msgpack)
    other = field.device("wang", msgpack=msgpack)
    nonce = _challenge(wang)
    # Another device signing the nonce issued to wang, for itself.
    error_of(other, _token(other, nonce), 401, "unauthenticated")
    first = _token(wang, nonce)
    assert first.status_code == 200, first.text
    reply = wang.decode(first)
    assert reply["expires_at"].endswith("Z")
    error_of(wang, _token(wang, nonce), 401, "unauthenticated")  # replayed
    error_of(wang, _token(wang, "never-issued"), 401, "unauthenticated")
    # Tokens live 15 minutes (section 3).
    expires = datetime.datetime.fromisoformat(reply["expires_at"]).timestamp() * 1000
    assert abs(expires - wall_now_ms() - 15 * 60_000) < 60_000, reply
    # A nonce past its 60 s is refused.
    old = _challenge(wang)

    async def age() -> None:
        async with field.sessionmaker() as session, session.begin():
            await session.execute(update(AuthChallenge).where(AuthChallenge.nonce == old).values(
                expires_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)))

    run(field.client, age)
    error_of(wang, _token(wang, old), 401, "unauthenticated")
    error_of(wang, wang.call("POST", "/v1/auth/challenge", {"device_id": str(uuid.uuid4())}, auth=False),
             404, "not_found")


def test_a_code_is_spent_by_its_first_use_and_read_as_people_type_it(field):
    msgpack = True
    _user(field)
    code = field.code("wang")
    typed = "  " + code.lower().replace("-", " ").replace("0", "o").replace("1", "l") + " "
    first = WireDevice(field.client, msgpack=msgpack)
    first.enroll(typed)
    second = WireDevice(field.client, msgpack=msgpack)
    body = {"code": code, "public_key": second.public_key_b64(), "label": "p", "app_version": "1"}
    error_of(second, second.call("POST", "/v1/devices/enroll", body, auth=False), 403, "forbidden")
    expired = run(field.client, __import__("server.devices.service", fromlist=["x"]).create_enrollment_code,
                  field.sessionmaker, "wang", -1)
    body["code"] = expired
    error_of(second, second.call("POST", "/v1/devices/enroll", body, auth=False), 403, "forbidden")


@BOTH
@pytest.mark.parametrize("wipe", [False, True])
def test_a_retired_or_revoked_device_gets_410_everywhere_and_its_user_enrolls_a_new_one(field, msgpack, wipe):
    from server.devices import service as devices
    a = field.grid("所前社区第1网格")
    field.user("wang", ["所前社区第1网格"])
    wang = field.device("wang", msgpack=msgpack)
    photo = b"a photo of the drain"
    digest = hashlib.sha256(photo).hexdigest()
    wang.call("PATCH", f"/v1/blobs/{digest}", content=photo,
              headers={"Upload-Offset": "0", "Upload-Length": str(len(photo))})
    wang.push([wang.mutation("visit", fields=visit(a, photos=[digest]))])
    wang.pull_all()
    nonce = _challenge(wang)
    if wipe:
        run(field.client, devices.revoke, field.sessionmaker, wang.device_id, wipe=True)
    else:
        run(field.client, devices.retire, field.sessionmaker, wang.device_id)
    calls = [
        ("GET", "/v1/sync/pull", None, {}),
        ("POST", "/v1/sync/push", {"mutations": [wang.mutation("household", fields=household(a))]}, {}),
        ("HEAD", f"/v1/blobs/{digest}", None, {}),
        ("GET", f"/v1/blobs/{digest}", None, {}),
        ("PATCH", f"/v1/blobs/{'0' * 64}", None, {"Upload-Offset": "0", "Upload-Length": "1"}),
    ]
    for method, path, body, headers in calls:
        response = wang.call(method, path, body, headers=headers, content=b"x" if method == "PATCH" else None)
        if method == "HEAD":
            assert response.status_code == 410 and response.headers.get("server-time"), (path, response.status_code)
            continue
        error = error_of(wang, response, 410, "device_revoked")
        assert error.get("wipe") is wipe, error
    for response in (wang.call("POST", "/v1/auth/challenge", {"device_id": wang.device_id}, auth=False),
                     _token(wang, nonce)):
        assert error_of(wang, response, 410, "device_revoked").get("wipe") is wipe
    # The same user, a new phone: enrolls, syncs everything; the old one stays shut out.
    new = field.device("wang", msgpack=msgpack)
    assert {r["id"] for r in new.pull_all()} == set(wang.records)
    assert new.call("GET", f"/v1/blobs/{digest}").content == photo
    assert wang.call("GET", "/v1/sync/pull").status_code == 410


# ---------------------------------------------------------------------------------------------
# Section 6: paging


def test_a_limit_outside_1_to_1000_is_422_invalid(phone):
    _, wang, li = phone
    for limit in ["0", "1001", "-1", "1.5", "", "abc", " 5", "1e3"]:
        for device in (wang, li):
            error_of(device, device.call("GET", "/v1/sync/pull", params={"limit": limit},
                                         headers={"Accept": "application/msgpack"} if device.msgpack else {}),
                     422, "invalid")


def test_limits_1_and_1000_page_and_every_record_arrives_at_its_latest_version(phone):
    grid, wang, li = phone
    made = wang.push([wang.mutation("household", fields=household(grid)) for _ in range(6)])["results"]
    ids = [r["record"]["id"] for r in made]
    pages = 0
    seen: dict[str, int] = {}
    cursor = None
    while True:
        params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        page = li.decode(li.call("GET", "/v1/sync/pull", params=params))
        assert len(page["changes"]) <= 1
        pages += 1
        for r in page["changes"]:
            seen[r["id"]] = r["version"]
        if pages == 3:  # another device writes between pages: an edit of a record sent and one not
            wang.push([wang.mutation("household", ids[0], {"notes": "改"}),
                       wang.mutation("household", ids[5], {"notes": "改"})])
        cursor = page["cursor"]
        if not page["more"]:
            break
    assert seen[ids[0]] == 2 and seen[ids[5]] == 2 and set(ids) <= set(seen)
    page = li.decode(li.call("GET", "/v1/sync/pull", params={"cursor": cursor, "limit": "1000"}))
    assert page["changes"] == [] and page["more"] is False and page["cursor"]


@pytest.mark.slow
def test_two_processes_page_while_a_phone_writes_and_hold_the_union_cap_under_concurrent_pushes(tmp_path, backend):
    """On PostgreSQL with two server processes (SQLite: one): G4 with pages of 7 while a phone
    writes; then two phones' unions that together pass the cap, pushed at once: one is refused
    naming the field, and the stored set holds at most the cap."""
    from tests.support.servers import LiveServer
    server = LiveServer(tmp_path / "live", backend, workers=2 if backend else 1).start()
    try:
        grid = server.cli("grid", "add", "G网格", "--community", "所前社区").stdout.strip()
        server.cli("user", "add", "wang", "--role", "grid_worker", "--grid", "G网格")
        server.cli("user", "add", "li", "--role", "red_steward", "--grid", "G网格")
        clients = [httpx.Client(base_url=server.url, timeout=30) for _ in range(2)]
        wang = WireDevice(clients[0])
        wang.enroll(server.cli("enrollment", "create", "--user", "wang").stdout.strip().splitlines()[-1])
        wang.sign_in()
        # Six phones race li's one code, through both processes: one device is made.
        code = server.cli("enrollment", "create", "--user", "li").stdout.strip().splitlines()[-1]
        racers = [WireDevice(clients[1], msgpack=True) for _ in range(6)]
        replies: dict[int, httpx.Response] = {}

        def enroll(k: int) -> None:
            replies[k] = racers[k].call("POST", "/v1/devices/enroll", {
                "code": code, "public_key": racers[k].public_key_b64(), "label": "p", "app_version": "1"}, auth=False)

        threads = [threading.Thread(target=enroll, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r.status_code for r in replies.values()) == [201] + [403] * 5
        [won] = [k for k, r in replies.items() if r.status_code == 201]
        li = racers[won]
        li.enrollment = li.decode(replies[won])
        li.device_id = li.enrollment["device_id"]
        li.clock = HybridClock(node=li.device_id)
        li.sign_in()
        listed = [line.split("\t") for line in server.cli("device", "list").stdout.splitlines() if "\t" in line]
        assert [row[0] for row in listed if row[1] == "li"] == [li.device_id]
        devices = [wang, li]
        stop = threading.Event()
        written: dict[str, int] = {}

        def write() -> None:
            ids: list[str] = []
            while not stop.is_set() and len(written) < 60:
                batch = [wang.mutation("household", fields=household(grid)) for _ in range(5)]
                if ids:
                    batch.append(wang.mutation("household", ids[-1], {"notes": str(len(ids))},
                                               base_version=written[ids[-1]]))
                for r in wang.push(batch)["results"]:
                    written[r["record"]["id"]] = r["version"]
                    ids.append(r["record"]["id"])

        writer = threading.Thread(target=write)
        writer.start()
        try:
            for _ in range(15):
                li.pull_all(limit=7)
        finally:
            stop.set()
            writer.join()
        li.pull_all(limit=7)
        held = {i: r["version"] for i, r in li.records.items() if r["entity"] == "household"}
        assert held == written

        [made] = wang.push([wang.mutation("visit", fields=visit(grid, photos=[sha(i) for i in range(10)]))])["results"]
        vid = made["record"]["id"]
        li.pull_all()
        results: dict[str, dict] = {}

        def add(device: WireDevice, first: int) -> None:
            photos = [sha(i) for i in range(10)] + [sha(first + i) for i in range(12)]
            [results[device.device_id]] = device.push(
                [device.mutation("visit", vid, {"photos": photos}, base_version=1)])["results"]

        threads = [threading.Thread(target=add, args=(d, 100 * (k + 1))) for k, d in enumerate(devices)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r["status"] for r in results.values()) == ["applied", "rejected"], results
        [refused] = [r for r in results.values() if r["status"] == "rejected"]
        assert refused["error"]["code"] == "invalid" and "photos" in refused["error"]["message"]
        stored = {r["id"]: r for r in li.pull_all()}[vid]
        assert len(stored["fields"]["photos"]) == 22 and stored["version"] == 2
        for client in clients:
            client.close()
    finally:
        server.kill()


# ---------------------------------------------------------------------------------------------
# Section 7: blobs


def _upload(device: WireDevice, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    response = device.call("PATCH", f"/v1/blobs/{digest}", content=data,
                           headers={"Upload-Offset": "0", "Upload-Length": str(len(data))})
    assert response.status_code == 201, response.status_code
    return digest


@pytest.fixture
def blob(phone):
    grid, wang, li = phone
    data = bytes(range(100))
    digest = _upload(wang, data)
    [made] = wang.push([wang.mutation("visit", fields=visit(grid, photos=[digest]))])["results"]
    assert made["status"] == "applied"
    return data, digest, made["record"], wang, li


RANGES = [("bytes=0-0", 0, 1), ("bytes=10-19", 10, 20), ("bytes=-3", 97, 100), ("bytes=95-", 95, 100),
          ("bytes=90-500", 90, 100), ("bytes=-500", 0, 100), ("bytes=99-99", 99, 100), ("bytes=0-", 0, 100)]
# Beyond the end, reversed, empty, another unit, several ranges: section 7's 'unusable Range'.
UNUSABLE_RANGES = ["bytes=100-", "bytes=100-200", "bytes=5-2", "bytes=-0", "bytes=-", "items=0-1", "bytes=0-1,4-5",
                   "bytes= 0-1", "bytes=0-1, 4-5"]


def test_range_forms_answer_206_and_unusable_ones_400_malformed(blob):
    data, digest, _, wang, li = blob
    for device in (wang, li):
        whole = device.call("GET", f"/v1/blobs/{digest}")
        assert whole.status_code == 200 and whole.content == data
        for header, start, end in RANGES:
            response = device.call("GET", f"/v1/blobs/{digest}", headers={"Range": header})
            assert response.status_code == 206, (header, response.status_code, response.content[:200])
            assert response.content == data[start:end]
            assert response.headers["content-range"] == f"bytes {start}-{end - 1}/100"
            assert response.headers.get("server-time", "").isdigit()
        for header in UNUSABLE_RANGES:
            error_of(device, device.call("GET", f"/v1/blobs/{digest}", headers={"Range": header}), 400, "malformed")


def test_a_blob_no_record_in_scope_refers_to_is_not_read(field, blob):
    data, digest, _, _, li = blob
    other_grid = field.grid("别的网格")
    field.user("zhao", ["别的网格"])
    zhao = field.device("zhao", msgpack=li.msgpack)
    lone = _upload(zhao, b"uploaded but never referred to")
    for device, name in ((zhao, digest), (zhao, lone), (li, lone)):
        response = device.call("GET", f"/v1/blobs/{name}")
        assert response.status_code in (403, 404), response.status_code
        error_of(device, response, response.status_code, "not_found" if response.status_code == 404 else "forbidden")
    assert li.call("GET", f"/v1/blobs/{digest}").content == data
    assert other_grid


def test_a_photo_taken_off_every_record_is_no_longer_read(blob):
    """Section 7: 'A device may read a blob only if a record in its scope refers to it.' The
    server kept the first reference forever: a photo taken off its record by an edit that had
    seen it (a picture of the wrong household), or the photo of a deleted visit, stayed readable
    by every device of the grid that knew its hash."""
    data, digest, record, wang, li = blob
    grid = record["fields"]["grid_id"]
    [other] = wang.push([wang.mutation("visit", fields=visit(grid, photos=[digest]))])["results"]
    [edit] = wang.push([wang.mutation("visit", record["id"], {"photos": []})])["results"]
    assert edit["status"] == "applied" and edit["record"]["fields"].get("photos", []) == []
    assert li.call("GET", f"/v1/blobs/{digest}").content == data  # the other visit still holds it
    [gone] = wang.push([wang.mutation("visit", other["record"]["id"], op="delete")])["results"]
    assert gone["status"] == "applied"
    error_of(li, li.call("GET", f"/v1/blobs/{digest}"), 404, "not_found")
    # Put back on a record (Changes 22 brings a deleted one back as well): readable again.
    [back] = wang.push([wang.mutation("visit", other["record"]["id"], {"notes": "恢复"})])["results"]
    assert back["status"] == "applied" and back["record"]["fields"]["photos"] == [digest]
    assert li.call("GET", f"/v1/blobs/{digest}", headers={"Range": "bytes=0-9"}).content == data[:10]


def test_a_blob_over_25_mib_is_413_and_an_upload_resumes_where_it_stands(phone):
    _, wang, _ = phone
    big = hashlib.sha256(b"big").hexdigest()
    response = wang.call("PATCH", f"/v1/blobs/{big}", content=b"x",
                         headers={"Upload-Offset": "0", "Upload-Length": str(25 * 1024 * 1024 + 1)})
    error_of(wang, response, 413, "too_large")
    assert wang.call("HEAD", f"/v1/blobs/{big}").status_code == 404
    at_limit = wang.call("PATCH", f"/v1/blobs/{big}", content=b"x",
                         headers={"Upload-Offset": "0", "Upload-Length": str(25 * 1024 * 1024)})
    assert at_limit.status_code == 204 and at_limit.headers["upload-offset"] == "1"

    data = bytes(range(256)) * 40
    digest = hashlib.sha256(data).hexdigest()
    length = {"Upload-Length": str(len(data))}
    first = wang.call("PATCH", f"/v1/blobs/{digest}", content=data[:4000], headers={"Upload-Offset": "0", **length})
    assert first.status_code == 204 and first.headers["upload-offset"] == "4000"
    assert first.headers.get("server-time", "").isdigit()
    head = wang.call("HEAD", f"/v1/blobs/{digest}")
    assert head.status_code == 200 and head.headers["upload-offset"] == "4000"
    wrong = wang.call("PATCH", f"/v1/blobs/{digest}", content=data[100:200], headers={"Upload-Offset": "100", **length})
    error_of(wang, wrong, 409, "conflict")
    assert wrong.headers["upload-offset"] == "4000"
    past = wang.call("PATCH", f"/v1/blobs/{digest}", content=data[4000:] + b"!", headers={"Upload-Offset": "4000",
                                                                                        **length})
    error_of(wang, past, 400, "malformed")
    done = wang.call("PATCH", f"/v1/blobs/{digest}", content=data[4000:], headers={"Upload-Offset": "4000", **length})
    assert done.status_code == 201, done.status_code
    head = wang.call("HEAD", f"/v1/blobs/{digest}")
    assert head.status_code == 200 and head.headers["upload-length"] == str(len(data))
    assert "upload-offset" not in head.headers
    again = wang.call("PATCH", f"/v1/blobs/{digest}", content=data, headers={"Upload-Offset": "0", **length})
    assert again.status_code == 200


def test_an_upload_that_does_not_hash_to_its_name_is_422_and_discarded(phone):
    _, wang, _ = phone
    name = hashlib.sha256(b"the real bytes").hexdigest()
    length = {"Upload-Length": "9"}
    assert wang.call("PATCH", f"/v1/blobs/{name}", content=b"fake", headers={"Upload-Offset": "0", **length}
                     ).status_code == 204
    error_of(wang, wang.call("PATCH", f"/v1/blobs/{name}", content=b"bytes", headers={"Upload-Offset": "4", **length}),
             422, "invalid")
    assert wang.call("HEAD", f"/v1/blobs/{name}").status_code == 404


def test_an_upload_resumed_with_another_length_is_refused(phone):
    """Section 7 does not say; a resumed chunk naming another Upload-Length than the upload began
    with must not complete the blob at a length the first chunks did not declare."""
    _, wang, _ = phone
    data = b"0123456789abcdef"
    digest = hashlib.sha256(data).hexdigest()
    assert wang.call("PATCH", f"/v1/blobs/{digest}", content=data[:4],
                     headers={"Upload-Offset": "0", "Upload-Length": "100"}).status_code == 204
    done = wang.call("PATCH", f"/v1/blobs/{digest}", content=data[4:],
                     headers={"Upload-Offset": "4", "Upload-Length": str(len(data))})
    # Either refused or completed correctly: never a 500.
    assert done.status_code in (201, 400, 409), done.status_code


# ---------------------------------------------------------------------------------------------
# Section 2: the error format, the reply's format, Sync-Protocol on every call


def _every_call(device: WireDevice, grid: str) -> list[tuple[str, str, object, dict]]:
    digest = "0" * 64
    return [
        ("POST", "/v1/devices/enroll", {"code": "AAAA-AAAA-AAAA", "public_key": device.public_key_b64(),
                                        "label": "p", "app_version": "1"}, {}),
        ("POST", "/v1/auth/challenge", {"device_id": device.device_id}, {}),
        ("POST", "/v1/auth/token", {"device_id": device.device_id, "nonce": "n", "signature": "AA=="}, {}),
        ("GET", "/v1/sync/pull", None, {}),
        ("POST", "/v1/sync/push", {"mutations": [device.mutation("household", fields=household(grid))]}, {}),
        ("GET", f"/v1/blobs/{digest}", None, {}),
        ("PATCH", f"/v1/blobs/{digest}", None, {"Upload-Offset": "0", "Upload-Length": "1"}),
    ]


@pytest.mark.parametrize("which", ["json", "msgpack"])
def test_every_v1_call_checks_sync_protocol_and_answers_in_the_error_format(phone, which):
    grid, wang, li = phone
    device = li if which == "msgpack" else wang
    for sync_protocol in (None, "", "one", "2", "0"):
        _check_sync_protocol(device, grid, sync_protocol)
    head = device.call("HEAD", "/v1/blobs/" + "0" * 64, headers={"Sync-Protocol": "x"})
    assert head.status_code == 400 and head.headers.get("server-time", "").isdigit()


def _check_sync_protocol(wang: WireDevice, grid: str, sync_protocol: str | None) -> None:
    for method, path, body, headers in _every_call(wang, grid):
        sent = {**headers, "Sync-Protocol": sync_protocol} if sync_protocol is not None else headers
        if sync_protocol is None:
            request = wang.client.build_request(method, path, headers={
                "Authorization": f"Bearer {wang.token}", **headers,
                **({"Content-Type": "application/msgpack" if wang.msgpack else "application/json"} if body else {}),
                **({"Accept": "application/msgpack"} if wang.msgpack else {})},
                content=(msgspec.msgpack.encode(body) if wang.msgpack else msgspec.json.encode(body)) if body
                else (b"x" if method == "PATCH" else None))
            response = wang.client.send(request)
        else:
            response = wang.call(method, path, body, headers=sent, content=b"x" if method == "PATCH" else None)
        if sync_protocol == "0":
            error = error_of(wang, response, 426, "upgrade_required")
            assert error["min_protocol"] == 1
            continue
        error = error_of(wang, response, 400, "malformed")
        if sync_protocol == "2":
            assert error["detail"].get("supported") in (1, [1]), (path, error)


ACCEPTS = [("application/json", "application/msgpack", "application/msgpack"),
           ("application/msgpack", "application/json", "application/json"),
           ("application/msgpack", None, "application/msgpack"),
           ("application/json", None, "application/json"),
           ("application/msgpack", "*/*", "application/msgpack")]


def test_replies_and_errors_follow_accept_else_content_type(phone):
    grid, wang, _ = phone
    for content_type, accept, reply in ACCEPTS:
        _check_reply_format(wang, grid, content_type, accept, reply)


# Accept as HTTP weighs it: `q=0` refuses a type, the heavier one wins; the msgpack types a body may
# be labelled with are read in Accept too.
WEIGHED_ACCEPTS = [
    ("application/msgpack", "application/msgpack;q=0, application/json", "application/json"),
    ("application/msgpack", "application/msgpack;q=0.2, application/json;q=0.9", "application/json"),
    ("application/msgpack", "application/msgpack;q=0", "application/json"),
    ("application/json", "application/vnd.msgpack", "application/msgpack"),
    ("application/json", "application/json;q=0.5, application/msgpack", "application/msgpack"),
    ("application/json", "application/json;q=0", "application/msgpack"),
]


def test_replies_follow_the_weights_of_accept(phone):
    """Section 2: 'replies follow the request's Accept'. A client that refused msgpack (q=0) or
    weighed JSON higher got msgpack whenever the header named msgpack at all, and one asking for
    application/vnd.msgpack, a label the server reads on bodies, got JSON."""
    grid, wang, _ = phone
    for content_type, accept, reply in WEIGHED_ACCEPTS:
        _check_reply_format(wang, grid, content_type, accept, reply)


def _check_reply_format(wang: WireDevice, grid: str, content_type: str, accept: str | None, reply: str) -> None:
    encode = msgspec.msgpack.encode if "msgpack" in content_type else msgspec.json.encode
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    ok = wang.call("POST", "/v1/sync/push", headers=headers,
                   content=encode({"mutations": [wang.mutation("household", fields=household(grid))]}))
    assert ok.status_code == 200 and ok.headers["content-type"].startswith(reply), ok.headers
    assert ok.headers.get("server-time", "").isdigit()
    for bad, status in ((encode({"mutations": 5}), 422), (b"\xc1\xc1{{", 400)):
        response = wang.call("POST", "/v1/sync/push", headers=headers, content=bad)
        assert response.status_code == status and response.headers["content-type"].startswith(reply)
        decoded = msgspec.msgpack.decode(response.content) if "msgpack" in reply else response.json()
        assert set(decoded) == {"error", "server_time"} and isinstance(decoded["error"]["detail"], dict)
    pull = wang.call("GET", "/v1/sync/pull", headers={"Accept": reply})
    assert pull.status_code == 200 and pull.headers["content-type"].startswith(reply)
    unauth = wang.call("GET", "/v1/sync/pull", headers={"Accept": reply, "Authorization": "Bearer nope"})
    assert unauth.status_code == 401 and unauth.headers["content-type"].startswith(reply)


ODD_CALLS = [("GET", "/v1/nowhere"), ("DELETE", "/v1/sync/pull"), ("PUT", "/v1/sync/push"),
             ("GET", "/v1/blobs/NOT-A-HASH"), ("POST", "/v1/devices/enroll"), ("POST", "/v1/sync/pull"),
             ("GET", "/v1/auth/token")]


def test_a_call_the_protocol_does_not_have_is_still_in_the_error_format(phone):
    _, wang, _ = phone
    for method, path in ODD_CALLS:
        response = wang.call(method, path, headers={"Content-Type": "application/json"}, content=b"")
        assert 400 <= response.status_code < 500, (method, path, response.status_code)
        body = response.json()
        assert set(body) == {"error", "server_time"} and isinstance(body["error"]["detail"], dict), body
        assert response.headers.get("server-time", "").isdigit()


