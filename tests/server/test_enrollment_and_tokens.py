"""Protocol section 3 and G6: only enrolled, not revoked devices sync; tokens are short-lived."""

from __future__ import annotations

import base64

from server.devices.tokens import make_token
from tests.conftest import run
from tests.support.device import WireDevice


def test_enrollment_returns_device_user_and_grids(field):
    grid = field.grid("所前社区第1网格")
    field.user("wang", ["所前社区第1网格"], role="red_steward")
    device = WireDevice(field.client)
    reply = device.enroll(field.code("wang"))
    assert reply["user"]["name"] == "wang" and reply["user"]["role"] == "red_steward"
    assert [g["id"] for g in reply["grids"]] == [grid]
    assert isinstance(reply["server_time"], int)


def test_enrollment_code_is_single_use(field):
    field.grid("g1")
    field.user("wang", ["g1"])
    code = field.code("wang")
    WireDevice(field.client).enroll(code)
    second = WireDevice(field.client)
    response = second.call("POST", "/v1/devices/enroll", {"code": code, "public_key": second.public_key_b64()},
                           auth=False)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_a_code_is_read_as_people_type_it(field):
    # Lower case, spaces for dashes, fullwidth characters from a Chinese keyboard, and O, I, L
    # for the 0 and 1 they look like (Crockford's base32 leaves those letters out for that).
    field.grid("g1")
    field.user("wang", ["g1"])
    for spoil in (str.lower, lambda c: c.replace("-", " "), lambda c: c.translate(_FULLWIDTH),
                  lambda c: c.replace("0", "O").replace("1", "l")):
        code = field.code("wang")
        while "0" not in code or "1" not in code:  # one with both, so the look-alikes are tried
            code = field.code("wang")
        WireDevice(field.client).enroll(spoil(code))


_FULLWIDTH = {ord(c): ord(c) + 0xFEE0 for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-"}


def test_enrollment_with_a_bad_public_key_is_invalid_and_spends_nothing(field):
    field.grid("g1")
    field.user("wang", ["g1"])
    code = field.code("wang")
    device = WireDevice(field.client)
    bad = device.call("POST", "/v1/devices/enroll", {"code": code, "public_key": base64.b64encode(b"short").decode()},
                      auth=False)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid"
    device.enroll(code)  # the code still works


def test_supervisors_get_no_enrollment_code(field):
    from server.accounts.service import AccountError

    field.grid("g1")
    field.user("boss", ["g1"], role="supervisor")
    try:
        field.code("boss")
    except AccountError as exc:
        assert "grid workers and red stewards" in str(exc)
    else:
        raise AssertionError("a supervisor got an enrollment code")


def test_a_replayed_challenge_is_refused(field):
    field.grid("g1")
    field.user("wang", ["g1"])
    device = WireDevice(field.client)
    device.enroll(field.code("wang"))
    nonce = device.decode(device.call("POST", "/v1/auth/challenge", {"device_id": device.device_id},
                                      auth=False))["nonce"]
    from shared_schema.messages import token_message

    signature = base64.b64encode(device.key.sign(token_message(device.device_id, nonce))).decode()
    body = {"device_id": device.device_id, "nonce": nonce, "signature": signature}
    assert device.call("POST", "/v1/auth/token", body, auth=False).status_code == 200
    replay = device.call("POST", "/v1/auth/token", body, auth=False)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "unauthenticated"


def test_a_signature_by_another_key_is_refused(field):
    field.grid("g1")
    field.user("wang", ["g1"])
    device = WireDevice(field.client)
    device.enroll(field.code("wang"))
    thief = WireDevice(field.client)
    thief.device_id = device.device_id
    nonce = thief.decode(thief.call("POST", "/v1/auth/challenge", {"device_id": device.device_id}, auth=False))["nonce"]
    from shared_schema.messages import token_message

    signature = base64.b64encode(thief.key.sign(token_message(device.device_id, nonce))).decode()
    response = thief.call("POST", "/v1/auth/token",
                          {"device_id": device.device_id, "nonce": nonce, "signature": signature}, auth=False)
    assert response.status_code == 401


def test_expired_and_forged_tokens_are_refused(field):
    field.grid("g1")
    field.user("wang", ["g1"])
    device = field.device("wang")
    secret = field.client.app.state.token_secret
    device.token = make_token(secret, device.device_id, 1000)  # expired in 1970
    expired = device.call("GET", "/v1/sync/pull")
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    device.token = make_token(b"x" * 32, device.device_id, 2**42)
    assert device.call("GET", "/v1/sync/pull").status_code == 401
    device.token = None
    assert device.call("GET", "/v1/sync/pull").status_code == 401


def test_revoked_device_gets_410_with_wipe_even_with_a_live_token(field):
    from server.devices import service as devices

    field.grid("g1")
    field.user("wang", ["g1"])
    device = field.device("wang")
    run(field.client, devices.revoke, field.sessionmaker, device.device_id, wipe=True)
    for method, path, body in [("GET", "/v1/sync/pull", None), ("POST", "/v1/sync/push", {"mutations": []})]:
        response = device.call(method, path, body)
        assert response.status_code == 410
        assert response.json()["error"] == {
            "code": "device_revoked", "message": response.json()["error"]["message"], "detail": {}, "wipe": True}
    challenge = device.call("POST", "/v1/auth/challenge", {"device_id": device.device_id}, auth=False)
    assert challenge.status_code == 410


def test_retired_device_gets_410_without_wipe(field):
    from server.devices import service as devices

    field.grid("g1")
    field.user("wang", ["g1"])
    device = field.device("wang")
    run(field.client, devices.retire, field.sessionmaker, device.device_id)
    response = device.call("GET", "/v1/sync/pull")
    assert response.status_code == 410 and response.json()["error"]["wipe"] is False


def test_requests_without_the_protocol_header_or_with_an_old_one_are_refused(field):
    field.grid("g1")
    field.user("wang", ["g1"])
    device = field.device("wang")
    old = device.call("GET", "/v1/sync/pull", headers={"Sync-Protocol": "0"})
    assert old.status_code == 426
    assert old.json()["error"]["code"] == "upgrade_required" and old.json()["error"]["min_protocol"] == 1
    missing = field.client.get("/v1/sync/pull", headers={"Authorization": f"Bearer {device.token}"})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "malformed"


def test_a_label_with_a_nul_byte_is_refused_not_a_500(field):
    # PostgreSQL's text cannot hold NUL; a phone must get a clear 4xx, and nothing is enrolled.
    field.grid("g1")
    field.user("wang", ["g1"])
    code = field.code("wang")
    device = WireDevice(field.client)
    for body in ({"label": "phone\x00"}, {"app_version": "1.0\x00"}):
        response = device.call("POST", "/v1/devices/enroll",
                               {"code": code, "public_key": device.public_key_b64(), **body}, auth=False)
        assert response.status_code == 422 and response.json()["error"]["code"] == "invalid", response.text
    assert device.enroll(code)["device_id"]  # the code was not spent


def test_a_wipe_and_a_retire_ordered_at_once_end_in_a_wipe(field):
    """Two administrators: one revokes a lost phone with wipe while the other retires it. Whatever the
    order, the phone ends revoked with wipe (a shut-out only moves further), never 'retired' with the
    wipe flag, a state no reply knows."""
    import asyncio

    from server.devices import service as devices

    field.grid("g1")
    field.user("wang", ["g1"])
    phones = [field.device("wang") for _ in range(6)]

    async def both_at_once(device_id: str) -> None:
        await asyncio.gather(devices.revoke(field.sessionmaker, device_id, wipe=True),
                             devices.retire(field.sessionmaker, device_id), return_exceptions=True)

    async def states() -> set[tuple[str, bool]]:
        return {(d.status, bool(d.wipe)) for d, _ in await devices.list_devices(field.sessionmaker)}

    for phone in phones:
        run(field.client, both_at_once, phone.device_id)
    assert run(field.client, states) == {("revoked", True)}
    for phone in phones:
        response = phone.call("GET", "/v1/sync/pull")
        assert response.status_code == 410 and response.json()["error"]["wipe"] is True
