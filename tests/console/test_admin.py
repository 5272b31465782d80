"""The administrator's pages: users, grids, imports, enrollment codes and devices."""

from __future__ import annotations

import base64
import io
import re
import urllib.parse

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

from server.db.models import Grid, RecordRow, User
from tests.console.conftest import GRID_A, GRID_B, PASSWORD
from tests.support.device import WireDevice


def _user_id(site, name: str) -> str:
    async def get() -> str:
        async with site.sessionmaker() as db:
            return await db.scalar(select(User.id).where(User.name == name))

    return site.call(get)


def _count_households(site) -> int:
    async def count() -> int:
        async with site.sessionmaker() as db:
            return await db.scalar(select(func.count()).select_from(RecordRow).where(RecordRow.entity == "household"))

    return site.call(count)


# ---- users --------------------------------------------------------------------------------------


def test_an_admin_creates_a_supervisor_who_then_signs_in_to_their_grid(site):
    site.browser.login("admin")
    reply = site.browser.post(
        "/console/admin/users",
        {"name": "zhao", "role": "supervisor", "grids": [site.grid_b], "password": "a-long-password"},
    )
    assert reply.status_code == 303
    assert "zhao" in site.browser.get("/console/admin/users").text
    assert site.browser.login("zhao", "a-long-password").status_code == 303
    assert "我负责的 1 个网格" in site.browser.get("/console/").text


@pytest.mark.parametrize(
    "form",
    [
        {"name": "", "role": "supervisor", "password": "a-long-password"},
        {"name": "zhao", "role": "emperor", "password": "a-long-password"},
        {"name": "zhao", "role": "supervisor", "password": "short"},
        {"name": "sup_a", "role": "supervisor", "password": "a-long-password"},  # exists already
        {"name": "SUP_A", "role": "supervisor", "password": "a-long-password"},  # the same login to a person
        {"name": "zhao\x00", "role": "supervisor", "password": "a-long-password"},
        {"name": "\u202ezhao", "role": "supervisor", "password": "a-long-password"},  # right-to-left override
        {"name": "z" * 101, "role": "supervisor", "password": "a-long-password"},  # refused, not cut to 100
        {"name": "zhao", "role": "supervisor", "password": "p" * 1001},  # longer than the login form reads
    ],
)
def test_a_bad_new_user_is_refused_with_the_reason(site, form):
    site.browser.login("admin")
    reply = site.browser.post("/console/admin/users", form)
    assert reply.status_code == 400 and 'class="error"' in reply.text
    assert "zzzzzzzzzz" not in site.browser.get("/console/admin/users").text


def test_a_wipe_order_is_never_taken_back(site):
    site.browser.login("admin")
    device = f"/console/admin/devices/{site.phone_a.device_id}"
    assert site.browser.post(device, {"action": "retire"}).status_code == 303
    assert site.browser.post(device, {"action": "revoke", "wipe": "1"}).status_code == 303  # further: allowed
    for weaker in ({"action": "revoke", "wipe": "0"}, {"action": "retire"}):
        reply = site.browser.post(device, weaker)
        assert reply.status_code == 303 and "error=device_shut_out" in reply.headers["location"]
    assert "不能撤回" in site.browser.get(reply.headers["location"]).text
    refused = site.phone_a.call("GET", "/v1/sync/pull")
    assert refused.status_code == 410 and refused.json()["error"]["wipe"] is True


def test_an_admin_changes_role_grids_and_resets_a_password(site):
    uid = _user_id(site, "sup_a")
    site.browser.login("admin")
    assert site.browser.get(f"/console/admin/users/{uid}").status_code == 200
    reply = site.browser.post(
        f"/console/admin/users/{uid}",
        {"action": "save", "role": "supervisor", "active": "1", "grids": [site.grid_a, site.grid_b]},
    )
    assert reply.status_code == 303
    bad = site.browser.post(
        f"/console/admin/users/{uid}", {"action": "password", "password": "new-password-1", "password2": "different-1"}
    )
    assert bad.status_code == 400
    assert (
        site.browser.post(
            f"/console/admin/users/{uid}",
            {"action": "password", "password": "new-password-1", "password2": "new-password-1"},
        ).status_code
        == 303
    )
    assert site.browser.login("sup_a", PASSWORD).status_code == 401
    assert site.browser.login("sup_a", "new-password-1").status_code == 303
    assert "我负责的 2 个网格" in site.browser.get("/console/").text


def test_a_deactivated_supervisor_can_no_longer_sign_in(site):
    uid = _user_id(site, "sup_a")
    site.browser.login("admin")
    site.browser.post(f"/console/admin/users/{uid}", {"action": "save", "role": "supervisor", "grids": [site.grid_a]})
    assert site.browser.login("sup_a").status_code == 401


def test_an_admin_cannot_lock_themselves_out(site):
    uid = _user_id(site, "admin")
    site.browser.login("admin")
    reply = site.browser.post(f"/console/admin/users/{uid}", {"action": "save", "role": "supervisor", "active": "1"})
    assert reply.status_code == 400
    assert site.browser.get("/console/admin/users").status_code == 200


def test_an_unknown_user_is_not_found(site):
    site.browser.login("admin")
    assert site.browser.get("/console/admin/users/00000000-0000-0000-0000-000000000000").status_code == 404


# ---- grids and imports --------------------------------------------------------------------------


def test_an_admin_adds_a_grid_and_a_duplicate_is_refused(site):
    site.browser.login("admin")
    assert (
        site.browser.post("/console/admin/grids", {"name": "大西门社区第1网格", "community": "大西门社区"}).status_code
        == 303
    )
    page = site.browser.get("/console/admin/grids")
    assert "大西门社区第1网格" in page.text and "大西门社区" in page.text
    dup = site.browser.post("/console/admin/grids", {"name": "大西门社区第1网格", "community": "大西门社区"})
    assert dup.status_code == 400 and "已有名为“大西门社区第1网格”的网格" in dup.text  # in the user's language
    site.browser.get("/console/lang/en")
    dup = site.browser.post("/console/admin/grids", {"name": "大西门社区第1网格", "community": "大西门社区"})
    assert dup.status_code == 400 and "A grid named “大西门社区第1网格” exists already." in dup.text
    assert site.browser.post("/console/admin/grids", {"name": "", "community": ""}).status_code == 400


def _upload(site, kind: str, name: str, data: bytes):
    return site.browser.client.post(
        "/console/admin/import",
        data={"kind": kind, "_csrf": site.browser.csrf()},
        files={"file": (name, data)},
        follow_redirects=False,
    )


def test_a_household_csv_imports_the_good_rows_and_reports_each_bad_one(site):
    site.browser.login("admin")
    text = (
        "网格,地址,楼栋,单元,房号,户主,电话,人数,标签\n"
        f"{GRID_A},台苑新村,3幢,2单元,301,顾先生,13800000001,3,独居老人、党员户\n"
        f"{GRID_B},水木花都,1幢,1单元,101,张大爷,13800000002,2,\n"
        "不存在的网格,某地址,,,,,,,\n"
        f"{GRID_A},,,,,,,,\n"
        f"{GRID_A},台苑新村,3幢,2单元,302,李女士,not-a-phone,1,\n"
        f"{GRID_A},台苑新村,3幢,2单元,303,王先生,,many,\n"
        f"{GRID_A},台苑新村,3幢,2单元,301,顾先生,13800000001,3,\n"  # the first row again
    )
    before = _count_households(site)
    reply = _upload(site, "households", "homes.csv", text.encode("utf-8-sig"))
    assert reply.status_code == 200
    assert "导入 2 行,拒绝 5 行" in reply.text
    lines = re.findall(r'<tr class="bad"><td class="n">(\d+)</td><td>([^<]*)</td>', reply.text)
    assert [int(n) for n, _ in lines] == [4, 5, 6, 7, 8]
    reasons = dict(lines)
    assert "没有名为“不存在的网格”的网格" in reasons["4"] and "address" in reasons["5"] and "phone" in reasons["6"]
    assert "members" in reasons["7"] and "该户已存在" in reasons["8"]
    link = re.search(r'href="data:text/csv;base64,([^"]+)" download', reply.text).group(1)
    rejected = base64.b64decode(link).decode("utf-8-sig").splitlines()
    assert len(rejected) == 6 and rejected[0].startswith("行号,原因") and "not-a-phone" in rejected[3]
    assert _count_households(site) == before + 2


def test_grids_import_from_xlsx(site):
    book = Workbook()
    sheet = book.active
    sheet.append(["name", "community"])
    sheet.append(["皇家湾社区第1网格", "皇家湾社区"])
    sheet.append(["皇家湾社区第2网格", "皇家湾社区"])
    sheet.append([GRID_A, "所前社区"])  # exists
    sheet.append(["", "皇家湾社区"])
    buffer = io.BytesIO()
    book.save(buffer)
    site.browser.login("admin")
    reply = _upload(site, "grids", "grids.xlsx", buffer.getvalue())
    assert reply.status_code == 200 and "导入 2 行,拒绝 2 行" in reply.text

    async def names() -> set[str]:
        async with site.sessionmaker() as db:
            return set((await db.scalars(select(Grid.name))).all())

    assert {"皇家湾社区第1网格", "皇家湾社区第2网格"} <= site.call(names)


@pytest.mark.parametrize(
    "kind, name, data",
    [
        ("households", "empty.csv", b""),
        ("households", "broken.xlsx", b"PK\x03\x04 not really a zip"),
        ("households", "latin.csv", b"\xff\xfe\x00garbage\x81\x82"),
        ("volcanoes", "x.csv", b"a,b\n1,2\n"),
    ],
)
def test_an_unreadable_import_is_refused_whole(site, kind, name, data):
    site.browser.login("admin")
    before = _count_households(site)
    reply = _upload(site, kind, name, data)
    assert reply.status_code == 400 and 'class="error"' in reply.text
    assert _count_households(site) == before


def test_a_supervisor_cannot_import(site):
    site.browser.login("sup_a")
    assert _upload(site, "grids", "g.csv", b"name,community\nx,y\n").status_code == 403


# ---- enrollment and devices ----------------------------------------------------------------------


def test_an_enrollment_code_comes_with_a_qr_image_and_enrolls_a_phone(site):
    site.browser.login("admin")
    assert "wang" in site.browser.get("/console/admin/enrollment").text
    reply = site.browser.post("/console/admin/enrollment", {"user": "wang", "server": "http://192.168.1.5:8000"})
    assert reply.status_code == 200 and "<svg" in reply.text
    code = re.search(r'<p class="code">([0-9A-Z-]+)</p>', reply.text).group(1)
    phone = WireDevice(site.field.client)
    phone.enroll(code)
    assert phone.device_id
    recent = site.browser.get("/console/admin/enrollment").text
    assert "最近的注册码" in recent and "已使用" in recent and code not in recent
    assert site.browser.post("/console/admin/enrollment", {"user": "sup_a"}).status_code == 400  # not a field user
    assert (
        site.browser.post("/console/admin/enrollment", {"user": "wang", "server": "javascript:alert(1)"}).status_code
        == 400
    )


def test_the_qr_image_holds_the_link_the_app_reads(site):
    from client.services.setup import parse_enrollment_text

    site.browser.login("admin")
    reply = site.browser.post("/console/admin/enrollment", {"user": "wang", "server": "http://10.0.0.2:8000"})
    code = re.search(r'<p class="code">([0-9A-Z-]+)</p>', reply.text).group(1)
    text = "fieldloop://enroll?" + urllib.parse.urlencode({"server": "http://10.0.0.2:8000", "code": code})
    parsed = parse_enrollment_text(text)
    assert parsed.code == code and parsed.server_url == "http://10.0.0.2:8000"


def test_a_revoked_phone_is_refused_on_its_next_sync_and_told_to_wipe(site):
    site.phone_a.pull_all()
    site.browser.login("admin")
    page = site.browser.get("/console/admin/devices")
    assert f"device-{site.phone_a.device_id}" in page.text and "test-1" in page.text
    reply = site.browser.post(f"/console/admin/devices/{site.phone_a.device_id}", {"action": "revoke", "wipe": "1"})
    assert reply.status_code == 303
    refused = site.phone_a.call("GET", "/v1/sync/pull")
    assert refused.status_code == 410 and refused.json()["error"]["wipe"] is True
    assert "已吊销" in site.browser.get("/console/admin/devices?status=revoked").text


def test_a_retired_phone_is_refused_without_a_wipe(site):
    site.browser.login("admin")
    site.browser.post(f"/console/admin/devices/{site.phone_b.device_id}", {"action": "retire"})
    refused = site.phone_b.call("GET", "/v1/sync/pull")
    assert refused.status_code == 410 and refused.json()["error"]["wipe"] is False


def test_device_actions_refuse_unknown_devices_and_actions(site):
    site.browser.login("admin")
    assert (
        site.browser.post(
            "/console/admin/devices/00000000-0000-0000-0000-000000000000", {"action": "retire"}
        ).status_code
        == 404
    )
    reply = site.browser.post(f"/console/admin/devices/{site.phone_a.device_id}", {"action": "explode"})
    assert reply.status_code == 303 and "error=bad_action" in reply.headers["location"]
    assert site.phone_a.call("GET", "/v1/sync/pull").status_code == 200


def test_a_supervisor_cannot_revoke_a_phone(site):
    site.browser.login("sup_a")
    reply = site.browser.post(f"/console/admin/devices/{site.phone_a.device_id}", {"action": "revoke", "wipe": "1"})
    assert reply.status_code == 403
    assert site.phone_a.call("GET", "/v1/sync/pull").status_code == 200


@pytest.mark.parametrize("path", ["/console/admin/users", "/console/admin/grids", "/console/admin/devices"])
def test_admin_lists_export(site, path):
    site.browser.login("admin")
    assert site.browser.get(f"{path}?format=csv").headers["content-type"].startswith("text/csv")
    assert site.browser.get(f"{path}?format=xlsx").content[:2] == b"PK"
