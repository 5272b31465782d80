"""The real app in a real (offscreen) window against a real server.

Each test leaves a screenshot in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import hashlib

import pytest

from client.services.setup import DataDir
from sync.client import AesGcmCipher, DeviceIdentity, HttpTransport, LocalStore, SyncEngine
from tests.client.conftest import PIN, Office, PhotoCamera, photo_bytes
from tests.support.servers import LiveServer

pytestmark = pytest.mark.ui

HOUSEHOLD = "0190a000-0000-7000-8000-00000000a401"


@pytest.fixture
def own_server(tmp_path):
    """A server of this test's own: it is stopped and started during the test."""
    live = LiveServer(tmp_path / "server-data", None)
    live.start()
    yield live
    live.kill()


@pytest.fixture
def own_office(own_server) -> Office:
    office = Office(own_server)
    office.prepare()
    office.write("household", HOUSEHOLD, {"grid_id": office.grid_id, "address": "所前社区长兴路 12 号", "building": "3",
                                          "unit": "2", "room": "401", "head_name": "顾建国", "phone": "13800001111",
                                          "members": 2, "tags": ["独居老人"]})
    return office


def enroll_in_window(driver, office: Office, user: str = "王阿姨", *, qr: bool = False) -> None:
    """Type the server and the code (or paste the console's QR text, which carries both), then set the PIN."""
    first = driver.screen
    assert first.name == "first_run"
    if qr:
        driver.type_into(first.code_input, f"fieldloop://enroll?server={office.server.url}&code={office.code(user)}")
    else:
        driver.type_into(first.server_input, office.server.url.replace("http://", ""))
        driver.type_into(first.code_input, office.code(user))
    driver.screenshot("first_run")
    driver.tap(first.enroll_button)
    driver.until(lambda: driver.screen.name == "pin" or not first.enroll_button.disabled, 30, "enrollment")
    assert driver.screen.name == "pin", first.error_label.text
    pin_screen = driver.screen
    driver.type_into(pin_screen.pin_input, PIN)
    driver.type_into(pin_screen.again_input, PIN)
    driver.tap(pin_screen.ok_button)
    driver.until(lambda: driver.screen.name == "home" or not pin_screen.ok_button.disabled, 30, "the PIN")
    assert driver.screen.name == "home", pin_screen.error_label.text


def sync_in_window(driver) -> None:
    """Tap "sync now" and wait until the background sync's result has reached the screen."""
    driver.app.go("sync")
    runner = driver.app.sync  # held: a wiped device drops its runner when the result arrives
    before = runner.last
    assert not driver.screen.sync_button.disabled
    driver.tap(driver.screen.sync_button)
    driver.until(lambda: runner.last is not before and not runner.running, what="sync to finish")
    driver.frames(3)


def server_device(office: Office, tmp_path, name: str) -> SyncEngine:
    """Another phone of the same grid, through the sync engine alone: how a test looks at the server."""
    office.add_user(name)
    store = LocalStore(tmp_path / f"{name}.sqlite", AesGcmCipher(AesGcmCipher.generate_key()))
    engine = SyncEngine(store, HttpTransport(office.server.url), DeviceIdentity(store))
    engine.enroll(office.code(name), label=name)
    return engine


def test_door_to_door_visit_with_two_photos_offline_then_synced(app_driver, own_office, tmp_path):
    photos = [photo_bytes(color=(30, 90, 160)), photo_bytes(color=(160, 90, 30))]
    driver = app_driver(camera=PhotoCamera(photos))
    enroll_in_window(driver, own_office)
    sync_in_window(driver)  # the grid's households come down
    assert driver.app.session.households.get(HOUSEHOLD) is not None

    own_office.server.stop()  # the stairwell: no signal from here on
    driver.app.go("households")
    search = driver.screen
    driver.type_into(search.search_input, "3-2-401")
    driver.until(lambda: [d["household_id"] for d in search.list_view.data] == [HOUSEHOLD], 5, "the search")
    driver.until(lambda: any(w.household_id == HOUSEHOLD for w in search.list_view.layout_manager.children),
                 5, "the row")
    driver.screenshot("households_search")
    row = next(w for w in search.list_view.layout_manager.children if w.household_id == HOUSEHOLD)
    driver.tap(row)
    assert driver.screen.name == "household"
    driver.tap(driver.screen.new_visit_button)
    form = driver.screen
    assert form.name == "visit"
    driver.scroll_and_tap(form.method_buttons["inquiry"])
    driver.scroll_and_tap(form.topic_buttons["elderly_care"])
    driver.scroll_to(form.notes_input)
    driver.type_into(form.notes_input, "老人独居，落水管漏水，已联系物业")
    driver.scroll_and_tap(form.photo_button)
    driver.tap(form.photo_button)
    assert form.photo_label.text == "照片：2张"
    driver.scroll_to(form.follow_buttons[7])
    driver.tap(form.follow_buttons[7])
    driver.scroll_to(form.save_button)
    driver.screenshot("visit_form_offline")
    driver.tap(form.save_button)
    assert driver.screen.name == "household", form.error_label.text

    driver.app.go("home")
    home = driver.screen
    assert home.pending_label.text == "待同步的修改：1条"
    sync_in_window(driver)
    assert driver.app.sync.last.state.value == "offline"
    assert "1条修改保存在手机上" in driver.screen.outcome_label.text
    driver.screenshot("sync_offline_pending")

    own_office.server.start()
    sync_in_window(driver)
    last = driver.app.sync.last
    assert last.state.value == "done" and last.pushed == 1 and last.photos_up == 2, last
    assert driver.app.session.pending_count() == 0
    driver.app.go("home")
    assert home.pending_label.text == "待同步的修改：0条"
    driver.screenshot("home_after_sync")

    # On the server: another phone of the grid pulls the visit and downloads both photos.
    other = server_device(own_office, tmp_path, "督导看看")
    other.sync()
    [visit] = other.store.records("visit")
    assert visit.fields["method"] == "inquiry" and visit.fields["household_id"] == HOUSEHOLD
    assert visit.fields["notes"] == "老人独居，落水管漏水，已联系物业"
    assert visit.fields["topics"] == ["elderly_care"]
    assert len(visit.fields["photos"]) == 2
    for sha in visit.fields["photos"]:
        blob = other.fetch_blob(sha)
        assert hashlib.sha256(blob).hexdigest() == sha and blob[:2] == b"\xff\xd8"  # a JPEG
    assert sorted(visit.fields["photos"]) == sorted(hashlib.sha256(driver.app.session.photo(s)).hexdigest()
                                                    for s in visit.fields["photos"])

    # The supervisor reviews the visit on the console; after the next sync the worker sees it on the visit.
    own_office.write("visit", visit.id, {"review": {"verdict": "approved", "comment": "记录清楚，按时复诊",
                                                    "reviewer": "督导老周"}})
    sync_in_window(driver)
    driver.app.go("visit", visit_id=visit.id)
    form = driver.screen
    assert any("审核：通过" in t and "按时复诊" in t
               for t in (w.text for w in form.body.children if hasattr(w, "text")))
    assert len(form.photo_strip.children) == 2  # both photos previewed, from the phone's own cache
    driver.screenshot("visit_reviewed_top")
    driver.scroll_to(form.photo_strip)
    driver.screenshot("visit_reviewed_with_photos")


def test_conflicting_edit_shows_the_merged_result_and_the_conflict_notice(app_driver, own_office, tmp_path):
    driver = app_driver()
    enroll_in_window(driver, own_office, qr=True)
    session = driver.app.session
    from client.services import visits

    sync_in_window(driver)
    visit_id = visits.save_visit(session, visits.new_visit(HOUSEHOLD))
    sync_in_window(driver)
    other = server_device(own_office, tmp_path, "网格员小李")
    other.sync()

    # In the window: open the visit from the household's history and change the notes (not synced yet).
    driver.app.go("household", household_id=HOUSEHOLD)
    driver.tap(driver.screen.visit_buttons[visit_id])
    form = driver.screen
    assert form.name == "visit" and form.draft.visit_id == visit_id
    driver.scroll_to(form.notes_input)
    driver.type_into(form.notes_input, "王阿姨记：老人血压高")
    driver.scroll_to(form.save_button)
    driver.tap(form.save_button)
    # Elsewhere, later: another worker changes the same notes and a topic, and syncs first.
    other.edit("visit", visit_id, {"notes": "小李记：老人已送医院", "topics": ["health"]})
    other.sync()

    sync_in_window(driver)
    last = driver.app.sync.last
    assert last.state.value == "done" and last.conflicts == 1, last
    sync_screen = driver.screen
    notices = [w.text for w in sync_screen.notices_box.children if hasattr(w, "markup") and w.markup]
    assert any("王阿姨记：老人血压高" in t and "小李记：老人已送医院" in t and "更晚" in t for t in notices), notices
    driver.screenshot("sync_conflict_notice")

    driver.app.go("visit", visit_id=visit_id)
    form = driver.screen
    assert form.notes_input.text == "小李记：老人已送医院"  # the merged record: the later edit kept
    assert form.topic_buttons["health"].state == "down"  # and the other side's topic merged in
    texts = [w.text for w in form.body.children if hasattr(w, "text")]
    assert any("您写的是「王阿姨记：老人血压高」" in t for t in texts), texts
    driver.scroll_to(form.body.children[-1])
    driver.screenshot("visit_merged_with_conflict")


def test_a_record_this_app_cannot_open_is_set_aside_said_and_opened_after_an_upgrade(
    app_driver, own_office, monkeypatch
):
    # The server holds a household this version of the app cannot read (here: an app that does
    # not know the new compound yet). Before, the phone refused every page holding it and the
    # whole grid's phones stopped syncing.
    from shared_schema.entities import FieldsInvalid, validate_fields
    from sync.client import server_replies

    new_household = "0190a000-0000-7000-8000-00000000a402"
    own_office.write("household", new_household, {"grid_id": own_office.grid_id, "address": "滨江新苑 1 幢",
                                                  "head_name": "陈新华"})

    def older_app(entity, fields):  # noqa: ANN001, ANN202
        if "滨江新苑" in str(fields.get("address", "")):
            raise FieldsInvalid("address: a compound this app does not know")
        return validate_fields(entity, fields)

    monkeypatch.setattr(server_replies, "validate_fields", older_app)
    driver = app_driver()
    enroll_in_window(driver, own_office)
    sync_in_window(driver)
    session = driver.app.session
    assert driver.app.sync.last.state.value == "done"
    assert session.households.get(HOUSEHOLD) is not None and session.get("household", new_household) is None
    sync_screen = driver.screen
    notices = [w.text for w in sync_screen.notices_box.children if hasattr(w, "markup") and w.markup]
    assert any("有1条记录本机暂时打不开" in t and "请升级应用" in t and "does not know" in t for t in notices), notices
    driver.screenshot("sync_record_set_aside")
    understood = next(w for w in sync_screen.notices_box.children if getattr(w, "text", "") == "知道了")
    driver.tap(understood)
    assert not [w for w in sync_screen.notices_box.children if hasattr(w, "markup") and w.markup]

    monkeypatch.setattr(server_replies, "validate_fields", validate_fields)  # the app is upgraded
    sync_in_window(driver)
    assert session.get("household", new_household).fields["head_name"] == "陈新华"
    assert session.store.set_aside_count() == 0


def test_revocation_with_wipe_empties_the_store_and_says_why(app_driver, own_office, tmp_path):
    data_dir = tmp_path / "lost-phone"
    driver = app_driver(data_dir=data_dir)
    enroll_in_window(driver, own_office)
    sync_in_window(driver)
    from client.services import diary

    diary.write_diary(driver.app.session, "顾先生反映楼下空调噪音")
    device_id = driver.app.session.account.device_id
    own_office.revoke(device_id, wipe=True)
    sync_in_window(driver)
    driver.until(lambda: driver.screen.name == "notice", 5, "the notice")
    assert driver.app.sync is None and driver.app.session is None
    assert "所有数据已经删除" in driver.screen.text_label.text
    driver.screenshot("revoked_wiped_notice")
    paths = DataDir(data_dir)
    assert not paths.store.exists() and not paths.vault.exists()
    leftovers = [p for p in data_dir.rglob("*") if p.is_file() and p.name != "settings.json"]
    assert leftovers == []
    assert b"\xe9\xa1\xbe" not in paths.settings.read_bytes()  # no trace of 顾 anywhere left
    driver.tap(driver.screen.next_button)
    assert driver.screen.name == "first_run"


def test_every_screen_in_a_day_of_work_then_restart_with_the_pin(app_driver, own_office, tmp_path):
    data_dir = tmp_path / "phone"
    driver = app_driver(data_dir=data_dir, camera=PhotoCamera([photo_bytes(1200, 900)]))
    enroll_in_window(driver, own_office)
    sync_in_window(driver)
    app = driver.app

    # Patrol: start, note a hazard, stop with notes.
    app.go("patrol")
    patrol = driver.screen
    driver.tap(patrol.toggle_button)
    assert app.patrols.current is not None
    hazard = next(b for b in patrol.body.walk() if getattr(b, "text", "") == "电瓶车进楼充电")
    driver.scroll_to(hazard)
    driver.tap(hazard)
    driver.type_into(patrol.notes_input, "3 幢楼道有电瓶车充电")
    driver.screenshot("patrol_running")
    driver.scroll_to(patrol.toggle_button)
    driver.tap(patrol.toggle_button)
    [record] = app.session.records("patrol")
    assert record.fields["hazards"] == ["ebike_charging"] and record.fields["ended_at"]

    # Diary.
    app.go("diary")
    diary_screen = driver.screen
    driver.type_into(diary_screen.text_input, "居民反映小区停车难，晚上车停到消防通道")
    save = next(b for b in diary_screen.body.children if getattr(b, "text", "") == "保存")
    driver.tap(save)
    assert "停车难" in " ".join(w.text for w in driver.screen.body.children if hasattr(w, "text"))
    driver.screenshot("diary")

    # Case: report one with a photo from the household's page.
    app.go("case_form", household_id=HOUSEHOLD)
    form = driver.screen
    driver.type_into(form.title_input, "3 幢落水管破裂")
    driver.type_into(form.description_input, "雨天漏水到一楼")
    form.category_spinner.text = "排水（落水管、下水道、化粪池）"
    photo = next(b for b in form.body.children if getattr(b, "text", "") == "拍照 / 添加照片")
    driver.tap(photo)
    driver.screenshot("case_form")
    driver.scroll_to(form.save_button)
    driver.tap(form.save_button)
    assert driver.screen.name == "cases", form.error_label.text
    [case] = app.session.records("case")
    assert case.fields["category"] == "drainage" and case.fields["household_id"] == HOUSEHOLD
    assert len(case.fields["photos"]) == 1
    driver.screenshot("cases_list")

    # Home shows it among my open cases; sync sends everything.
    app.go("home")
    assert "未办结的问题：1件" in " ".join(w.text for w in driver.screen.due_box.children)
    sync_in_window(driver)
    assert app.session.pending_count() == 0

    # The office accepts and dispatches the case (受理、分流); the worker resolves it with feedback (反馈).
    own_office.write("case", case.id, {"status": "accepted"})
    own_office.write("case", case.id, {"status": "dispatched", "department": "城建办"})
    sync_in_window(driver)
    app.go("cases")
    cases_screen = driver.screen
    feedback = cases_screen.feedback_inputs[case.id]
    driver.type_into(feedback, "物业已更换落水管，雨天复查无渗漏")
    driver.screenshot("case_dispatched_resolve")
    resolve = next(b for b in cases_screen.body.children if getattr(b, "text", "") == "已办结，提交反馈")
    driver.scroll_to(resolve)
    driver.tap(resolve)
    assert app.session.get("case", case.id).fields["status"] == "resolved"
    sync_in_window(driver)
    assert app.sync.last.rejected == 0 and app.session.pending_count() == 0

    # Settings in English, and sign-out warns while an edit waits.
    app.go("settings")
    english = next(b for b in driver.screen.body.walk() if getattr(b, "text", "") == "English")
    driver.tap(english)
    assert driver.screen.name == "settings" and driver.screen.title_label.text == "Settings"
    driver.screenshot("settings_english")
    english_home = app.screen("home")
    app.go("home")
    assert english_home.pending_label.text == "Edits waiting to sync: 0"
    chinese = "中文"
    app.go("settings")
    driver.tap(next(b for b in driver.screen.body.walk() if getattr(b, "text", "") == chinese))
    from client.services.diary import write_diary

    write_diary(app.session, "还没同步的一条")
    settings = driver.screen
    sign_out = next(b for b in settings.body.children if getattr(b, "text", "") == "退出并清除本机数据")
    driver.scroll_to(sign_out)
    driver.tap(sign_out)
    assert "1条修改没有同步" in settings.popup.content.children[-1].text
    driver.screenshot("sign_out_warning")
    driver.tap(settings.popup.content.children[-2])  # keep them
    assert app.setup.is_set_up()
    driver.stop()

    # Restart on the same folder: the PIN is asked; a wrong one is counted, the right one opens home.
    driver = app_driver(data_dir=data_dir)
    pin = driver.screen
    assert pin.name == "pin"
    driver.type_into(pin.pin_input, "999999")
    driver.tap(pin.ok_button)
    driver.until(lambda: not pin.ok_button.disabled, 30, "the PIN check")
    assert pin.error_label.text == "密码不对。还可以试4次。"
    driver.screenshot("pin_wrong")
    driver.type_into(pin.pin_input, PIN)
    driver.tap(pin.ok_button)
    driver.until(lambda: driver.screen.name == "home", 30, "the home screen")
    assert driver.app.session.pending_count() == 1


def test_five_thousand_households_scroll_in_a_recycleview(app_driver, own_office, tmp_path):
    driver = app_driver()
    enroll_in_window(driver, own_office)
    session = driver.app.session
    from bench.client_bench import make_records

    _, records = make_records(own_office.grid_id, 5000, 0)
    session.store.apply_pulled(records)
    session.refresh_households()
    driver.app.go("households")
    screen = driver.screen
    driver.frames(3)
    assert len(screen.list_view.data) == 5000
    rows = screen.list_view.layout_manager.children
    assert 5 < len(rows) < 40  # only the visible rows are widgets
    screen.list_view.scroll_y = 0  # to the bottom
    driver.frames(5)
    assert len(screen.list_view.layout_manager.children) < 40
    driver.screenshot("households_5000_bottom")
    driver.type_into(screen.search_input, "长兴路 独居")
    driver.until(lambda: 0 < len(screen.list_view.data) < 5000, 5, "the search")
    assert all("长兴路" in d["text"] and "独居" in d["text"] for d in screen.list_view.data)


def test_retired_device_says_so_stops_syncing_and_keeps_its_data(app_driver, own_office, tmp_path, monkeypatch):
    driver = app_driver()
    enroll_in_window(driver, own_office)
    sync_in_window(driver)
    own_office.server.cli("device", "retire", driver.app.session.account.device_id)
    sync_in_window(driver)
    driver.until(lambda: driver.screen.name == "notice", 5, "the notice")
    assert "已停用，不再同步" in driver.screen.text_label.text
    driver.screenshot("retired_notice")
    driver.tap(driver.screen.next_button)
    assert driver.screen.name == "home" and driver.app.session.households.get(HOUSEHOLD) is not None
    driver.app.go("sync")
    assert driver.screen.sync_button.disabled and not driver.app.start_sync()

    # Left in the background for more than five minutes: the PIN is asked again.
    import client.ui.app as app_module

    driver.app.on_pause()
    clock = app_module.time.monotonic() + app_module.RELOCK_AFTER_SECONDS + 1
    monkeypatch.setattr(app_module.time, "monotonic", lambda: clock)
    driver.app.on_resume()
    driver.frames(2)
    assert driver.screen.name == "pin" and driver.app.session is None
    # Android's back button on the PIN screen does not get past it.
    from kivy.core.window import Window

    Window.dispatch("on_keyboard", 27, 0, None, [])
    assert driver.screen.name == "pin"


def test_a_spent_code_is_refused_in_plain_words_and_nothing_is_kept(app_driver, own_office, tmp_path):
    driver = app_driver(data_dir=tmp_path / "phone")
    first = driver.screen
    driver.type_into(first.server_input, own_office.server.url)
    driver.type_into(first.code_input, "AAAA-BBBB-CCCC")
    driver.tap(first.enroll_button)
    driver.until(lambda: not first.enroll_button.disabled, 30, "the refusal")
    assert driver.screen.name == "first_run"
    assert first.error_label.text == "登记码无效或已用过。请向社区要一个新的。"
    driver.screenshot("enroll_refused")
    assert not driver.app.setup.is_set_up() and not (tmp_path / "phone" / "store.sqlite").exists()


def test_a_visit_left_by_back_language_relock_or_restart_keeps_its_notes_until_discarded(
        app_driver, own_office, tmp_path, monkeypatch):
    data_dir = tmp_path / "phone"
    driver = app_driver(data_dir=data_dir, camera=PhotoCamera([photo_bytes(1200, 900, color=(20, 120, 60))]))
    enroll_in_window(driver, own_office)
    sync_in_window(driver)
    app = driver.app

    def open_new_visit():
        app.go("household", household_id=HOUSEHOLD)
        driver.tap(driver.screen.new_visit_button)
        assert driver.screen.name == "visit"
        return driver.screen

    form = open_new_visit()
    driver.scroll_and_tap(form.topic_buttons["health"])
    driver.scroll_to(form.notes_input)
    driver.type_into(form.notes_input, "顾老伯说楼道灯坏了")
    driver.scroll_and_tap(form.photo_button)
    [sha] = form.draft.photos
    driver.tap(form.back_button)  # the on-screen Back
    assert driver.screen.name == "household"

    form = open_new_visit()
    assert form.notes_input.text == "顾老伯说楼道灯坏了"
    assert form.topic_buttons["health"].state == "down" and form.photo_label.text == "照片：1张"
    assert any("上次没保存的内容" in getattr(w, "text", "") for w in form.body.children)
    driver.screenshot("visit_draft_restored")
    driver.scroll_to(form.discard_button)
    driver.screenshot("visit_draft_restored_bottom")

    # Android's back key, after typing more.
    from kivy.core.window import Window

    driver.scroll_to(form.notes_input)
    driver.type_into(form.notes_input, "，已报修")
    Window.dispatch("on_keyboard", 27, 0, None, [])
    assert driver.screen.name == "household"
    form = open_new_visit()
    assert form.notes_input.text == "顾老伯说楼道灯坏了，已报修"

    # Another language: the same form comes back, in English, with what was typed.
    app.set_language("en")
    form = driver.screen
    assert form.name == "visit" and form.title_label.text == "Visit"
    assert form.notes_input.text == "顾老伯说楼道灯坏了，已报修" and form.household_id == HOUSEHOLD
    app.set_language("zh_CN")
    form = driver.screen
    driver.scroll_to(form.notes_input)
    driver.type_into(form.notes_input, "（三楼）")

    # Too long in the background: the PIN again; the draft waits behind it.
    import client.ui.app as app_module

    app.on_pause()
    later = app_module.time.monotonic() + app_module.RELOCK_AFTER_SECONDS + 1
    monkeypatch.setattr(app_module.time, "monotonic", lambda: later)
    app.on_resume()
    assert driver.screen.name == "pin" and app.session is None
    driver.type_into(driver.screen.pin_input, PIN)
    driver.tap(driver.screen.ok_button)
    driver.until(lambda: driver.screen.name == "home", 30, "the home screen")
    form = open_new_visit()
    assert form.notes_input.text == "顾老伯说楼道灯坏了，已报修（三楼）"
    driver.stop()  # the app is closed with the form open

    # A new start of the app: unlock, open the household's new visit, and it is all there.
    driver = app_driver(data_dir=data_dir)
    app = driver.app
    driver.type_into(driver.screen.pin_input, PIN)
    driver.tap(driver.screen.ok_button)
    driver.until(lambda: driver.screen.name == "home", 30, "the home screen")
    form = open_new_visit()
    assert form.notes_input.text == "顾老伯说楼道灯坏了，已报修（三楼）" and form.draft.photos == [sha]
    assert app.session.pending_count() == 0  # a draft is no edit waiting to sync

    # Discard: asked first; keeping is the highlighted answer, and the draft stays.
    driver.scroll_and_tap(form.discard_button)
    assert form.popup is not None and form.popup._window is not None
    assert "删除" in form.popup.content.children[-1].text
    driver.screenshot("visit_draft_discard_question")
    driver.tap(form.popup.keep_button)
    driver.until(lambda: form.popup._window is None, 5, "the question to close")
    assert driver.screen is form and form.notes_input.text.endswith("（三楼）")
    driver.tap(form.discard_button)
    driver.tap(form.popup.go_button)
    driver.until(lambda: driver.screen.name == "household" and form.popup._window is None, 5, "the household")
    form = open_new_visit()
    assert form.notes_input.text == "" and form.draft.photos == []
    assert not any("上次没保存的内容" in getattr(w, "text", "") for w in form.body.children)
    assert app.session.cached_photo(sha) is None  # the draft's photo went with it

    # Saved: the draft goes, the visit waits to sync.
    driver.scroll_to(form.notes_input)
    driver.type_into(form.notes_input, "灯已修好")
    driver.scroll_and_tap(form.save_button)
    assert driver.screen.name == "household", form.error_label.text
    form = open_new_visit()
    assert form.notes_input.text == "" and app.session.pending_count() == 1

    # Signed out with a draft on screen: the phone enrolled again (for anyone) shows nothing of it.
    driver.scroll_to(form.notes_input)
    driver.type_into(form.notes_input, "上一个账号的草稿")
    app.sign_out(force=True)
    enroll_in_window(driver, own_office, qr=True)  # the saved server address is already filled in
    sync_in_window(driver)
    form = open_new_visit()
    assert form.notes_input.text == "" and form.kept_at is None


def test_a_phone_clock_three_hours_slow_is_told_on_home_until_it_is_put_right(app_driver, own_office):
    import datetime

    from client.services.session import utc_now
    from sync.client.boot_clock import clock_anchor, read_boot_clock
    from sync.client.store import META_CLOCK_ANCHOR, META_CLOCK_OFFSET

    driver = app_driver()
    enroll_in_window(driver, own_office)
    session = driver.app.session
    # The phone's clock is 3 hours slow, and its last sync measured that (and where the clocks stood).
    session.clock = lambda: utc_now() - datetime.timedelta(hours=3)
    session.store.set_meta_many({
        META_CLOCK_OFFSET: str(3 * 3600 * 1000),
        META_CLOCK_ANCHOR: clock_anchor(int(session.clock().timestamp() * 1000), read_boot_clock()),
    })
    driver.app.go("home")
    [notice] = driver.screen.clock_box.children
    assert notice.text == "手机时间不准（慢了约3小时）。记录的时间已按服务器时间校正，请在手机“设置”里校正时间。"
    driver.screenshot("home_clock_three_hours_slow")
    # The whole notice is on the screen, above the buttons, not cut off.
    driver.frames(2)
    assert notice.texture_size[1] <= notice.height and notice.width <= driver.screen.body.width
    assert notice.y > driver.screen.sync_button.top
    assert abs(session.now() - utc_now()) < datetime.timedelta(minutes=1)

    session.clock = utc_now  # the user set the clock in the phone's Settings
    sync_in_window(driver)  # and the next sync measured it right
    driver.app.go("home")
    assert driver.screen.clock_box.children == []
