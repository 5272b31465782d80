"""Defects an outside probe found by holding the running server to docs/protocol.md alone
(2026-12-02, fifth session), on both databases: numbers written in other digits, a base_version
for a record never stored, a server field sent with a value that does not fit, a client that
hangs up in the middle of its body, Ed25519 public keys anyone can sign for, and times at UTC
offsets no zone has."""

from __future__ import annotations

import base64
import hashlib
import socket
import time
import uuid

import msgspec
import pytest

from tests.support.device import WireDevice
from tests.support.servers import LiveServer


@pytest.fixture
def phone(field):
    grid = field.grid("所前社区第1网格")
    field.user("wang", ["所前社区第1网格"])
    return grid, field.device("wang")


def household(grid: str, **extra) -> dict:
    return {"grid_id": grid, "address": "台苑新村3幢", "head_name": "顾", **extra}


def _error(response) -> dict:  # noqa: ANN001
    body = response.json()
    assert isinstance(body["server_time"], int)
    return body["error"]


# Superscripts pass str.isdigit and then fail int() (a 500); other scripts' digits pass both.
OTHER_DIGITS = ["²", "¹", "５", "١", "1" * 5000]


@pytest.mark.parametrize("value", OTHER_DIGITS)
def test_sync_protocol_in_other_digits_is_400_malformed(phone, value):
    _, wang = phone
    response = wang.call("GET", "/v1/sync/pull", headers={"Sync-Protocol": value.encode("utf-8")})
    assert response.status_code == 400, response.text
    assert _error(response)["code"] == "malformed"


@pytest.mark.parametrize("value", OTHER_DIGITS)
def test_a_pull_limit_in_other_digits_is_422_invalid(phone, value):
    _, wang = phone
    response = wang.call("GET", "/v1/sync/pull", params={"limit": value})
    assert response.status_code == 422, response.text
    assert _error(response)["code"] == "invalid"


@pytest.mark.parametrize("header", ["Upload-Offset", "Upload-Length"])
@pytest.mark.parametrize("value", OTHER_DIGITS)
def test_upload_headers_in_other_digits_are_400_malformed_and_keep_nothing(phone, header, value):
    _, wang = phone
    data = b"a chunk of a photo"
    sha = hashlib.sha256(data).hexdigest()
    headers = {"Upload-Offset": b"0", "Upload-Length": str(len(data)).encode(), header: value.encode("utf-8")}
    response = wang.call("PATCH", f"/v1/blobs/{sha}", headers=headers, content=data)
    assert response.status_code == 400, response.text
    assert _error(response)["code"] == "malformed"
    assert wang.call("HEAD", f"/v1/blobs/{sha}").status_code == 404


def test_a_range_in_other_digits_is_400_malformed(phone):
    grid, wang = phone
    data = b"0123456789" * 10
    sha = hashlib.sha256(data).hexdigest()
    upload = wang.call("PATCH", f"/v1/blobs/{sha}", content=data,
                       headers={"Upload-Offset": "0", "Upload-Length": str(len(data))})
    assert upload.status_code == 201
    wang.push([wang.mutation("visit", fields={"grid_id": grid, "household_id": str(uuid.uuid4()), "method": "sit",
                                              "photos": [sha], "visited_at": "2026-12-02T10:00:00+08:00"})])
    assert wang.call("GET", f"/v1/blobs/{sha}", headers={"Range": "bytes=1-2"}).content == b"12"
    response = wang.call("GET", f"/v1/blobs/{sha}", headers={"Range": "bytes=١-٢".encode("utf-8")})
    assert response.status_code == 400, response.status_code
    assert _error(response)["code"] == "malformed"


@pytest.mark.parametrize("op", ["upsert", "delete"])
def test_a_base_version_above_zero_for_a_record_never_stored_is_rejected_invalid(field, phone, op):
    """Section 5: a base_version ahead of the record's version is invalid; a record never stored
    has had no version a device could have seen."""
    grid, wang = phone
    m = wang.mutation("household", fields=household(grid) if op == "upsert" else {}, op=op, base_version=3)
    [result] = wang.push([m])["results"]
    assert result["status"] == "rejected" and result["error"]["code"] == "invalid"
    assert "record" not in result
    assert m["id"] not in {r["id"] for r in wang.pull_all()}
    # The same record made as new (base_version 0) is applied.
    [fresh] = wang.push([wang.mutation("household", m["id"], household(grid), base_version=0)])["results"]
    assert fresh["status"] == "applied" and fresh["version"] == 1


@pytest.mark.parametrize(("entity", "fields"), [
    ("visit", {"review": {"verdict": "not a verdict"}}),
    ("visit", {"review": 7}),
    ("case", {"rating": "five"}),
    ("case", {"due_at": "not a time"}),
    ("case", {"department": ["a", "list"]}),
])
def test_a_server_field_is_read_only_field_whatever_its_value(phone, entity, fields):
    """Section 4: a device that sends a `server` field is rejected with read_only_field; a value
    that would not fit must not turn it into `invalid` (the device would show the wrong reason)."""
    grid, wang = phone
    if entity == "visit":
        create = {"grid_id": grid, "household_id": str(uuid.uuid4()), "method": "sit",
                  "visited_at": "2026-12-02T10:00:00+08:00"}
    else:
        create = {"grid_id": grid, "category": "noise", "title": "楼上噪音", "status": "reported"}
    record_id = str(uuid.uuid4())
    [made] = wang.push([wang.mutation(entity, record_id, create)])["results"]
    assert made["status"] == "applied"
    [edit, new] = wang.push([
        wang.mutation(entity, record_id, fields, base_version=1),
        wang.mutation(entity, fields={**create, **fields}),
    ])["results"]
    for result in (edit, new):
        assert result["status"] == "rejected", result
        assert result["error"]["code"] == "read_only_field", result


def _send_part_and_hang_up(server: LiveServer, device: WireDevice, body: bytes, cut: int) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall((f"POST /v1/sync/push HTTP/1.1\r\nHost: 127.0.0.1\r\nSync-Protocol: 1\r\n"
                   f"Authorization: Bearer {device.token}\r\nContent-Type: application/msgpack\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:cut])
        time.sleep(0.3)


@pytest.mark.slow
def test_a_push_cut_off_mid_body_is_no_server_fault_and_its_retry_applies_once(live_server: LiveServer):
    """A phone that loses the network halfway through its body: nothing is applied, the server
    logs no fault (it logged a 500 with a traceback), and the same push again applies once."""
    import httpx

    from tests.server.test_guarantees_live import enroll

    grid = live_server.cli("grid", "add", "所前社区第1网格", "--community", "所前社区").stdout.strip()
    wang = enroll(live_server, "wang", "所前社区第1网格", client=httpx.Client(base_url=live_server.url, timeout=30))
    mutations = [wang.mutation("household", fields=household(grid, notes="x" * 2000)) for _ in range(50)]
    body = msgspec.msgpack.encode({"mutations": mutations})
    for cut in (10, len(body) // 2, len(body) - 1):
        _send_part_and_hang_up(live_server, wang, body, cut)
    time.sleep(0.5)
    results = wang.push(mutations)["results"]
    assert [r["status"] for r in results] == ["applied"] * 50
    assert {r["version"] for r in results} == {1}
    assert {r["version"] for r in wang.push(mutations)["results"]} == {1}
    log = live_server.log_path.read_text()
    assert "server fault" not in log and "Traceback" not in log, log[-3000:]


# Ed25519 public keys of small order (RFC 8032 encodings; the last three are the same points with
# the sign bit set or y not reduced). For the identity, R = identity and S = 0 is a valid
# signature of every message: OpenSSL verifies it.
WEAK_KEYS = [
    "01" + "00" * 31,
    "00" * 32,
    "ec" + "ff" * 30 + "7f",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "ee" + "ff" * 30 + "7f",
    "01" + "00" * 30 + "80",
    # A real key plus a point of order 8: of mixed order, outside the prime-order subgroup where
    # every key a real key pair makes lies.
    "cde1e6558ffd60240cd4ae36134f0c494e314172a71dca9e3cbf23a6670d5c6b",
]
FORGED_FOR_IDENTITY = base64.b64encode(bytes.fromhex("01" + "00" * 63)).decode()


@pytest.mark.parametrize("weak", WEAK_KEYS)
def test_a_public_key_of_small_order_is_refused_at_enrollment_and_the_code_kept(field, weak):
    """G6: with such a key anyone who learns the device's id could sign in as it."""
    field.grid("所前社区第1网格")
    field.user("wang", ["所前社区第1网格"])
    code = field.code("wang")
    device = WireDevice(field.client)
    response = device.call("POST", "/v1/devices/enroll", {
        "code": code, "public_key": base64.b64encode(bytes.fromhex(weak)).decode(), "label": "phone",
        "app_version": "1"}, auth=False)
    assert response.status_code == 422, response.text
    assert _error(response)["code"] == "invalid"
    device.enroll(code)  # the code was not spent


def test_a_device_stored_with_a_small_order_key_gets_no_token_for_a_forged_signature(field):
    from sqlalchemy import update

    from server.db.models import Device
    from tests.conftest import run

    field.grid("所前社区第1网格")
    field.user("wang", ["所前社区第1网格"])
    wang = field.device("wang")

    async def weaken() -> None:
        async with field.sessionmaker() as session, session.begin():
            await session.execute(update(Device).where(Device.id == wang.device_id)
                                  .values(public_key=bytes.fromhex(WEAK_KEYS[0])))

    run(field.client, weaken)
    nonce = wang.decode(wang.call("POST", "/v1/auth/challenge", {"device_id": wang.device_id}, auth=False))["nonce"]
    response = wang.call("POST", "/v1/auth/token", {"device_id": wang.device_id, "nonce": nonce,
                                                    "signature": FORGED_FOR_IDENTITY}, auth=False)
    assert response.status_code == 401, response.text
    assert _error(response)["code"] == "unauthenticated"


@pytest.mark.parametrize(("moment", "taken"), [
    ("2026-12-02T10:00:00+14:00", True),
    ("2026-12-02T10:00:00-12:00", True),
    ("1900-01-01T00:00:00+14:00", True),
    ("2999-12-31T23:59:59-12:00", True),
    ("2026-12-02T10:00:00+14:01", False),
    ("2026-12-02T10:00:00-12:01", False),
    ("2026-12-02T10:00:00+15:00", False),
    ("2026-12-02T10:00:00+23:59", False),
    ("2026-12-02T10:00:00-23:59", False),
])
def test_entity_times_carry_an_offset_of_a_real_zone(phone, moment, taken):
    """A visit at +23:59 was a 500 on PostgreSQL (its timestamptz, which the console's index of
    visits by time casts each one to, ends below 16 hours); the zones there are span -12:00 to
    +14:00, and each of those is stored and read back."""
    grid, wang = phone
    fields = {"grid_id": grid, "household_id": str(uuid.uuid4()), "method": "sit", "visited_at": moment}
    [result] = wang.push([wang.mutation("visit", fields=fields)])["results"]
    if taken:
        assert result["status"] == "applied", result
        pulled = {r["id"]: r for r in wang.pull_all()}
        assert pulled[result["record"]["id"]]["fields"]["visited_at"] == result["record"]["fields"]["visited_at"]
    else:
        assert result["status"] == "rejected" and result["error"]["code"] == "invalid", result
        assert "visited_at" in result["error"]["message"]


def _push_body(grid: str) -> dict:
    return {"mutations": [{"mid": str(uuid.uuid4()), "entity": "household", "id": str(uuid.uuid4()), "op": "upsert",
                           "base_version": 0, "hlc": f"{int(time.time() * 1000):013d}-0000-probe",
                           "fields": household(grid)}]}


@pytest.mark.parametrize(("content_type", "encode", "cut"), [
    # JSON under the msgpack label: `{` is the msgpack integer 123, then bytes that are no msgpack.
    ("application/msgpack", msgspec.json.encode, None),
    # Truncated bodies whose first value is already of the wrong type for a push.
    ("application/json", lambda body: msgspec.json.encode([body]), -3),
    ("application/msgpack", lambda body: msgspec.msgpack.encode([body]), -3),
])
def test_a_body_not_whole_in_its_format_is_400_malformed_whatever_its_first_value(field, phone, content_type,
                                                                                   encode, cut):
    grid, wang = phone
    body = encode(_push_body(grid))[:cut]
    response = wang.call("POST", "/v1/sync/push", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert wang.decode(response)["error"]["code"] == "malformed"  # a reply in the request's type
    assert [r["entity"] for r in wang.pull_all()] == ["grid"]  # nothing of the push was written


@pytest.mark.parametrize("encode", [msgspec.json.encode, msgspec.msgpack.encode])
def test_a_whole_body_of_the_wrong_shape_is_still_422_invalid(phone, encode):
    grid, wang = phone
    content_type = "application/json" if encode is msgspec.json.encode else "application/msgpack"
    response = wang.call("POST", "/v1/sync/push", content=encode([_push_body(grid)]),
                         headers={"Content-Type": content_type})
    assert response.status_code == 422, response.text
    assert wang.decode(response)["error"]["code"] == "invalid"
