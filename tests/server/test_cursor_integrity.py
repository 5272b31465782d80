"""Pull cursors are the server's own (protocol section 6, Changes 6; G4, G5): a cursor a device
forged, altered, or got from another user is ``400 malformed`` and pulls nothing, while an issued
cursor goes on working page after page, at another server process on the same database and
after a restart.

The server believes what a cursor says: which grids the device held (their records come back as
tombstones when they leave the scope) and how far it has pulled. Unsigned, a device could ask
for another grid's tombstones, or move its cursor past the head and skip every later change.
"""

from __future__ import annotations

import base64

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

from server.app import create_app
from server.records.feed import Cursor, cursor_key, encode_cursor
from tests.server.test_guarantees_live import enroll, households
from tests.support.device import WireDevice
from tests.support.servers import LiveServer


def household(grid: str, **extra) -> dict:
    return {"grid_id": grid, "address": "所前社区3幢2单元301室", "head_name": "顾先生", **extra}


def unsigned(body: dict) -> str:
    """A cursor as the server made them before it signed them: base64url of msgpack ``{s, g, c}``."""
    return base64.urlsafe_b64encode(msgspec.msgpack.encode(body)).rstrip(b"=").decode()


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pull(device: WireDevice, cursor: str, limit: int = 500) -> httpx.Response:
    return device.call("GET", "/v1/sync/pull", params={"cursor": cursor, "limit": str(limit)})


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    if response.headers.get("content-type", "").startswith("application/msgpack"):
        reply = msgspec.msgpack.decode(response.content)
    else:
        reply = response.json()
    assert reply["error"]["code"] == "malformed" and reply["error"]["detail"] == {"path": "cursor"}
    assert "changes" not in reply and "cursor" not in reply


@pytest.fixture
def two_grids(field):
    """Grid A held by wang (and li), grid B by zhao, each with records; B has a deleted one."""
    mine, other = field.grid("g-mine"), field.grid("g-other")
    users = {"wang": field.user("wang", ["g-mine"]), "li": field.user("li", ["g-mine"]),
             "zhao": field.user("zhao", ["g-other"])}
    wang, zhao = field.device("wang"), field.device("zhao")
    wang.push([wang.mutation("household", fields=household(mine)) for _ in range(5)])
    zhao.push([zhao.mutation("household", fields=household(other)) for _ in range(3)])
    [foreign, *_] = zhao.records
    zhao.push([zhao.mutation("household", foreign, op="delete")])
    return mine, other, users, wang, zhao


def test_a_forged_cursor_widening_the_grids_is_refused_and_pulls_nothing(field, two_grids):
    mine, other, users, wang, _ = two_grids
    # What the probe sent: as if wang's scope had held grid B, so that B's records would come
    # back as tombstones (ids, versions, stamps) when it "left".
    assert_refused(pull(wang, unsigned({"s": 0, "g": [mine, other]})))
    assert_refused(pull(wang, unsigned({"s": 10**6, "g": [mine, other], "c": [[], [other], 0]})))
    # The same body signed with any key but the server's, or by the server for another user.
    widened = Cursor(s=0, g=[mine, other])
    assert_refused(pull(wang, encode_cursor(widened, cursor_key(b"x" * 32), users["wang"])))
    key = cursor_key(field.client.app.state.token_secret)
    assert_refused(pull(wang, encode_cursor(widened, key, users["zhao"])))
    # An issued cursor's MAC put on the widened body.
    issued = unb64(wang.call("GET", "/v1/sync/pull", params={"limit": "1"}).json()["cursor"])
    assert_refused(pull(wang, b64(msgspec.msgpack.encode(widened) + issued[-16:])))
    # and what wang may pull is its own grid, nothing of B
    pulled = wang.pull_all()
    assert {r["fields"].get("grid_id", r["id"]) for r in pulled} == {mine}


def test_a_cursor_past_the_head_is_refused(field, two_grids):
    mine, _, users, wang, _ = two_grids
    # Accepted, it would answer an empty page with a cursor past every later change (G4).
    assert_refused(pull(wang, unsigned({"s": 10**12})))
    assert_refused(pull(wang, unsigned({"s": 10**12, "g": [mine]})))
    issued = unb64(wang.call("GET", "/v1/sync/pull", params={"limit": "1"}).json()["cursor"])
    ahead = msgspec.msgpack.encode(Cursor(s=10**12, g=[mine]))
    assert_refused(pull(wang, b64(ahead + issued[-16:])))
    # The server's own encoding of that cursor, for the right user: the one way it is taken.
    key = cursor_key(field.client.app.state.token_secret)
    signed = pull(wang, encode_cursor(Cursor(s=10**12, g=[mine]), key, users["wang"]))
    assert signed.status_code == 200 and signed.json()["changes"] == []


def test_an_issued_cursor_altered_anywhere_is_refused(two_grids):
    _, _, _, wang, _ = two_grids
    page = wang.call("GET", "/v1/sync/pull", params={"limit": "2"}).json()
    assert page["more"]
    text = page["cursor"]
    raw = unb64(text)
    for i in range(len(raw)):
        altered = bytearray(raw)
        altered[i] ^= 0x01
        assert_refused(pull(wang, b64(bytes(altered))))
    # Cut, lengthened, or spelled otherwise (the decoder would skip "!" and take "+" for "-").
    standard_alphabet = text.replace("-", "+").replace("_", "/")
    for altered_text in [text[:-1], text[1:], text + "A", text + "AA", text + "=", text + "!", "!" + text,
                         text + "+", *([standard_alphabet] if standard_alphabet != text else []),
                         b64(raw[:-1]), b64(raw[:16]), b64(raw[-16:]), b64(raw + b"\0"), "not-a-cursor!!"]:
        assert_refused(pull(wang, altered_text))
    # and the cursor as issued still works
    assert pull(wang, text).status_code == 200


def test_a_cursor_issued_to_another_user_is_refused(field, two_grids):
    _, _, _, wang, zhao = two_grids
    li = field.device("li")  # the same grid as wang: only the binding to the user stops it
    text = wang.call("GET", "/v1/sync/pull", params={"limit": "2"}).json()["cursor"]
    assert_refused(pull(li, text))
    assert_refused(pull(zhao, text))
    assert pull(wang, text).status_code == 200


def test_a_users_cursor_carries_over_to_their_other_device(field, two_grids):
    _, _, _, wang, _ = two_grids
    assert len(wang.pull_all(limit=2)) == 6  # the grid record and five households
    phone = field.device("wang")  # re-enrolled: a new device of the same user
    phone.cursor = wang.cursor
    m = wang.mutation("household", fields=household(wang.grid_ids()[0]))
    wang.push([m])
    assert [r["id"] for r in phone.pull_all()] == [m["id"]]


def test_an_issued_cursor_works_across_pages_and_at_another_server_process(settings, two_grids):
    mine, _, _, wang, _ = two_grids
    expected = [r["id"] for r in wang.records.values() if r["entity"] == "household"]
    page = wang.call("GET", "/v1/sync/pull", params={"limit": "2"}).json()
    received = [r["id"] for r in page["changes"]]
    assert page["more"]
    # Another process on the same database (or this one after a restart) reads the same secret
    # from it, so it takes the cursors this one issued, and the tokens.
    with TestClient(create_app(settings, migrate=False), timeout=30) as other:
        wang.client = other
        wang.cursor = page["cursor"]
        received += [r["id"] for r in wang.pull_all(limit=2)]
    assert sorted(received) == sorted([mine, *expected])
    assert len(received) == len(set(received))


@pytest.mark.slow
def test_an_issued_cursor_works_after_the_server_restarts(live_server: LiveServer):
    grid = live_server.cli("grid", "add", "g1", "--community", "c").stdout.strip()
    phone = enroll(live_server, "wang", "g1")
    pushed = [r["record"]["id"] for r in phone.push(households(phone, grid, 7))["results"]]
    page = phone.decode(phone.call("GET", "/v1/sync/pull", params={"limit": "3"}))
    received = [r["id"] for r in page["changes"]]
    live_server.stop()
    live_server.start()
    phone.client = httpx.Client(base_url=live_server.url, timeout=30)
    phone.sign_in()
    phone.cursor = page["cursor"]
    received += [r["id"] for r in phone.pull_all(limit=3)]
    assert sorted(received) == sorted([grid, *pushed])
    assert_refused(pull(phone, unsigned({"s": 0, "g": [grid, "0190a000-0000-7000-8000-000000000009"]})))
