"""End to end in a real browser: Debian's chromium driven by Playwright against ``fieldloop serve``,
with phones simulated by the real sync engine (sync.client) over TCP.

A supervisor reviews a visit a phone synced and the phone receives the review; resolves a
conflict; takes a case round the whole loop; an administrator revokes a phone and its next sync
is refused. Screenshots go to test-artifacts/console/.
"""

from __future__ import annotations

import datetime
import io
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from sync.client import AesGcmCipher, DeviceIdentity, HttpTransport, LocalStore, SyncEngine
from sync.errors import DeviceRevoked
from tests.support.servers import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("FIELDLOOP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "console-pass-1"
GRID = "所前社区第1网格"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> LiveServer:
    live = LiveServer(tmp_path_factory.mktemp("console-e2e") / "data")
    live.start()
    live.cli("grid", "add", GRID, "--community", "所前社区")
    live.cli("user", "add", "admin", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    live.cli("user", "add", "zhou", "--role", "supervisor", "--grid", GRID, "--password-stdin", stdin=PASSWORD + "\n")
    live.cli("user", "add", "wang", "--role", "grid_worker", "--grid", GRID)
    yield live
    live.kill()


def phone(server: LiveServer, path: Path, user: str, label: str) -> SyncEngine:
    code = server.cli("enrollment", "create", "--user", user).stdout.strip().splitlines()[-1]
    store = LocalStore(path, AesGcmCipher(AesGcmCipher.generate_key()))
    engine = SyncEngine(store, HttpTransport(server.url, timeout=10.0), DeviceIdentity(store), sleep=lambda _s: None)
    engine.enroll(code, label=label, app_version="1.0.0")
    return engine


@pytest.fixture(scope="module")
def browser_page(artifacts_dir: Path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    shots = artifacts_dir / "console"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1366, "height": 900}, locale="zh-CN")
        page = context.new_page()
        page.set_default_timeout(30000)
        page.on("dialog", lambda dialog: dialog.accept())
        page.errors = []  # type: ignore[attr-defined]
        page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.shots = shots  # type: ignore[attr-defined]
        yield page
        context.close()
        browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(page.shots / f"{name}.png"), full_page=True)


def login(page, server: LiveServer, name: str) -> None:
    page.goto(f"{server.url}/console/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/console/")


def logout(page) -> None:
    page.click("form[action='/console/logout'] button")
    page.wait_for_url(re.compile(r".*/console/login$"))


def photo_bytes() -> bytes:
    image = Image.new("RGB", (1200, 900), (225, 232, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle((420, 80, 520, 860), fill=(120, 120, 120))  # a drainpipe down a wall
    draw.rectangle((420, 430, 520, 470), fill=(200, 40, 40))  # the crack
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def test_a_supervisor_and_an_admin_run_the_loop_in_a_real_browser(server, browser_page, tmp_path):
    try:
        run_the_loop(server, browser_page, tmp_path)
    except Exception:
        shot(browser_page, "zz-failure")
        print("browser console errors:", browser_page.errors)
        raise


def run_the_loop(server, page, tmp_path) -> None:
    a = phone(server, tmp_path / "a" / "store.db", "wang", "王的手机")
    b = phone(server, tmp_path / "b" / "store.db", "wang", "王的平板")
    grid = a.enrolled_grids()[0]["id"]

    # ---- the phones work offline, then sync ----
    home = a.create(
        "household",
        {
            "grid_id": grid,
            "address": "台苑新村3幢2单元301室",
            "head_name": "顾先生",
            "phone": "13800000001",
            "members": 2,
            "tags": ["独居老人"],
        },
    )
    sha = a.add_photo(photo_bytes())
    visit = a.create(
        "visit",
        {
            "grid_id": grid,
            "household_id": home,
            "method": "inquiry",
            "visited_at": "2026-11-24T09:30:00+08:00",
            "topics": ["落水管"],
            "notes": "顾先生反映3幢落水管破裂,雨天外墙渗水。<b>已拍照</b>",
            "photos": [sha],
            "follow_up_on": datetime.date.today().isoformat(),
        },
    )
    walk_in = a.create(
        "visit",
        {
            "grid_id": grid,
            "household_id": home,
            "method": "sit",
            "visited_at": "2026-11-24T15:00:00+08:00",
            "notes": "顾先生来工作室咨询停车问题",
        },
    )
    case = a.create(
        "case",
        {
            "grid_id": grid,
            "household_id": home,
            "category": "drainage",
            "title": "3幢落水管破裂",
            "description": "落水管老化破裂,外墙渗水",
            "status": "reported",
        },
    )
    a.sync()
    b.sync()
    # both phones change the household's phone number offline; the later stamp wins (which one
    # that is depends on the two clocks, so the test reads it from the page)
    a.edit("household", home, {"phone": "13800000002"})
    b.edit("household", home, {"phone": "13900000003"})
    a.sync()
    b.sync()

    # ---- sign in: Chinese first ----
    page.goto(f"{server.url}/console/")
    assert "/console/login" in page.url
    shot(page, "01-login")
    login(page, server, "zhou")
    shot(page, "02-dashboard")
    assert "智慧数据大屏" in page.content()

    # ---- review the visit; the review reaches the phone ----
    page.click("nav.nav a[href='/console/visits']")
    page.click(f"a[href='/console/visits/{visit}']")
    thumb = f"img[src='/console/photos/{visit}/{sha}']"
    page.locator(thumb).scroll_into_view_if_needed()
    # the server-made thumbnail really decodes as an image
    page.wait_for_function(
        "sel => { const i = document.querySelector(sel); return i && i.complete && i.naturalWidth > 0; }", arg=thumb
    )
    assert "<b>已拍照</b>" in page.inner_text(".notes")  # shown as text, not markup
    page.fill("textarea[name=comment]", "记录完整,照片清楚。请跟踪复诊。")
    page.click("button[value=approved]")
    page.wait_for_selector("p.ok")
    shot(page, "03-visit-approved")
    a.sync()
    review = a.store.get("visit", visit).fields["review"]
    assert review["verdict"] == "approved" and review["reviewer"] == "zhou"
    assert review["comment"] == "记录完整,照片清楚。请跟踪复诊。"

    # a quick approve from the list, in place (htmx)
    page.click("nav.nav a[href='/console/visits']")
    page.click(f"tr:has(a[href='/console/visits/{walk_in}']) button.quick")
    page.wait_for_selector(f"tr:has(a[href='/console/visits/{walk_in}']) td.review-cell .badge.approved")
    shot(page, "03b-visits-quick-approve")
    a.sync()
    assert a.store.get("visit", walk_in).fields["review"]["verdict"] == "approved"

    # ---- the conflict: take the value that lost ----
    page.click("nav.nav a[href='/console/conflicts']")
    page.click("table.list >> text=查看")
    kept = page.inner_text(".side.kept pre").strip()
    lost = page.inner_text(".side.lost pre").strip()
    assert {kept, lost} == {"13800000002", "13900000003"}
    shot(page, "04-conflict")
    page.click("button[value=take]")
    page.wait_for_url(re.compile(r".*/console/conflicts\?resolved=\d+"))
    a.sync()
    b.sync()
    assert a.store.get("household", home).fields["phone"] == lost
    assert b.store.get("household", home).fields["phone"] == lost
    page.click("nav.tabs >> text=已处理")
    page.wait_for_selector("td:has-text('已改用落选值')")

    # ---- the case round the closed loop ----
    page.click("nav.nav a[href='/console/cases']")
    shot(page, "05-case-board")
    page.click(f"a.casecard[href='/console/cases/{case}']")
    page.click("button:has-text('受理')")
    page.wait_for_selector("p.ok")
    page.fill("input[name=department]", "住建局")
    page.fill("input[name=due]", (datetime.date.today() + datetime.timedelta(days=3)).isoformat())
    page.click("button:has-text('分流到部门')")
    page.wait_for_selector("p.ok")
    shot(page, "06-case-dispatched")
    a.sync()
    assert a.store.get("case", case).fields["status"] == "dispatched"
    assert a.store.get("case", case).fields["department"] == "住建局"
    a.edit("case", case, {"status": "resolved", "feedback": "住建局已更换落水管,外墙不再渗水。"})
    a.sync()
    page.reload()
    assert "住建局已更换落水管" in page.inner_text(".feedback")
    page.check("input[name=rating][value='5']")
    page.click("button[value=close]")
    page.wait_for_selector("p.ok")
    shot(page, "07-case-closed")
    a.sync()
    assert a.store.get("case", case).fields["status"] == "closed"
    assert a.store.get("case", case).fields["rating"] == 5
    page.click("text=变更记录")
    shot(page, "08-case-change-log")
    assert page.locator("table.changes tbody tr").count() >= 5

    # ---- English, and the board on a tablet ----
    page.click("text=English")
    page.wait_for_selector("h1:has-text('Change log')")
    page.goto(f"{server.url}/console/")
    page.wait_for_selector(".kpi.rate span:has-text('Closure rate')")
    shot(page, "09-dashboard-en")
    page.set_viewport_size({"width": 768, "height": 1024})
    page.goto(f"{server.url}/console/cases")
    shot(page, "10-board-tablet-en")
    page.click("text=中文")
    page.wait_for_selector("text=事件闭环")
    page.set_viewport_size({"width": 1366, "height": 900})
    logout(page)

    # ---- the administrator revokes the tablet; its next sync is refused ----
    login(page, server, "admin")
    page.click("nav.nav a[href='/console/admin/devices']")
    row = page.locator("tr", has_text="王的平板")
    row.locator("button:has-text('吊销并清除')").click()
    page.wait_for_url(re.compile(r".*/console/admin/devices\?done=revoke"))
    shot(page, "11-devices-revoked")
    assert "已吊销" in page.locator("tr", has_text="王的平板").inner_text()
    with pytest.raises(DeviceRevoked) as refused:
        b.sync()
    assert refused.value.wipe is True
    a.sync()  # the other phone is untouched

    page.click("nav.nav a[href='/console/admin/enrollment']")
    page.select_option("select[name=user]", "wang")
    page.click("button:has-text('生成注册码')")
    page.wait_for_selector(".qr svg")
    shot(page, "12-enrollment-qr")
    # no script error and nothing blocked by the content security policy, on any page visited
    blocked = [e for e in page.errors if "Content Security Policy" in e or "Refused" in e or "Error" in e]
    assert blocked == [], page.errors
    for engine in (a,):
        engine.store.close()
        engine.transport.close()


def test_the_demo_login_opens_a_console_full_of_data(tmp_path_factory, browser_page):
    """``fieldloop demo`` prints a login; that login opens believable pages, each quickly."""
    page = browser_page
    live = LiveServer(tmp_path_factory.mktemp("console-demo") / "data")
    printed = live.cli("demo").stdout
    match = re.search(r"console login: (\S+) / (\S+)", printed)
    assert match, printed
    name, password = match.groups()
    live.start()
    try:
        page.context.clear_cookies()
        page.goto(f"{live.url}/console/login")
        page.fill("input[name=name]", name)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live.url}/console/")
        received = int(page.inner_text(".kpi >> nth=0 >> .num"))
        assert received > 50
        shot(page, "20-demo-dashboard")
        timings = {}
        for path, name_ in (
            ("/console/cases", "21-demo-case-board"),
            ("/console/visits", "22-demo-visits"),
            ("/console/households", "23-demo-households"),
            ("/console/admin/devices", "24-demo-devices"),
        ):
            started = datetime.datetime.now()
            page.goto(live.url + path)
            timings[path] = (datetime.datetime.now() - started).total_seconds() * 1000
            shot(page, name_)
        assert page.locator("table.list tbody tr").count() >= 1
        print("browser load times (ms):", {k: round(v) for k, v in timings.items()})
    finally:
        live.kill()


def test_a_quick_approve_refused_because_a_colleague_flagged_the_visit_says_so_in_place(server, browser_page, tmp_path):
    """The list's quick approve (htmx) of a visit another supervisor flagged after the list was
    opened: the refusal must show in the cell, not leave a button that seems to do nothing."""
    import httpx

    from server.console.i18n import catalog

    server.cli("user", "add", "qian", "--role", "supervisor", "--grid", GRID, "--password-stdin", stdin=PASSWORD + "\n")
    worker = phone(server, tmp_path / "store.db", "wang", "王的手机")
    grid = worker.enrolled_grids()[0]["id"]
    home = worker.create("household", {"grid_id": grid, "address": "台苑新村5幢1单元101室", "head_name": "钱先生"})
    visit = worker.create(
        "visit",
        {"grid_id": grid, "household_id": home, "method": "inquiry", "visited_at": "2026-11-21T10:00:00+08:00"},
    )
    worker.sync()
    page = browser_page
    page.context.clear_cookies()
    login(page, server, "zhou")
    page.goto(f"{server.url}/console/visits")
    row = f"tr:has(a[href='/console/visits/{visit}'])"
    page.wait_for_selector(f"{row} button.quick")

    with httpx.Client(base_url=server.url, follow_redirects=False) as colleague:
        colleague.get("/console/login")
        csrf = colleague.cookies.get("fl_csrf")
        signed_in = colleague.post("/console/login", data={"name": "qian", "password": PASSWORD, "_csrf": csrf})
        assert signed_in.status_code == 303
        flagged = colleague.post(
            f"/console/visits/{visit}/review",
            data={"verdict": "flagged", "comment": "地址不全", "version": "1", "_csrf": colleague.cookies.get("fl_csrf")},
        )
        assert flagged.status_code == 303

    page.click(f"{row} button.quick")
    page.wait_for_selector(f"{row} td.review-cell .error")
    assert page.inner_text(f"{row} td.review-cell .error") == catalog("zh")["error.action.changed_meanwhile"]
    shot(page, "08-quick-approve-refused")
    worker.sync()
    assert worker.store.get("visit", visit).fields["review"]["verdict"] == "flagged"
