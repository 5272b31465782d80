"""The app in the window, used as a careless or unlucky person would: odd text, wrong files,
fingers on the wrong button. Nothing may crash, lose what was typed, or answer in raw keys."""

from __future__ import annotations

import pytest

from tests.client.conftest import Office, PhotoCamera, photo_bytes
from tests.client.test_app_window import enroll_in_window, sync_in_window

pytestmark = pytest.mark.ui

HOUSEHOLD = "0190a000-0000-7000-8000-00000000c101"
MARKUP = "[font=/no/such/font]顾[/font] [size=400]大[/size] [color=ff0000"


@pytest.fixture(scope="module")
def grid(office: Office) -> Office:
    """The module's grid with one household whose head's name holds Kivy markup."""
    office.write("household", HOUSEHOLD, {"grid_id": office.grid_id, "address": "长兴路 [b]7[/b] 号", "building": "1",
                                          "unit": "1", "room": "101", "head_name": MARKUP, "members": 1})
    return office


_users = iter(range(1000))


def started(app_driver, grid: Office, **kwargs):
    """A fresh user of the grid, enrolled in the window and synced."""
    name = f"粗心用户{next(_users)}"
    grid.add_user(name)
    driver = app_driver(**kwargs)
    enroll_in_window(driver, grid, name)
    sync_in_window(driver)
    return driver


def texts(widget) -> list[str]:
    return [w.text for w in widget.walk() if isinstance(getattr(w, "text", None), str)]


def test_markup_typed_by_a_resident_is_shown_as_text_not_obeyed(app_driver, grid):
    driver = started(app_driver, grid)
    app = driver.app
    app.go("diary")
    diary = driver.screen
    driver.type_into(diary.text_input, MARKUP)
    driver.tap(next(b for b in diary.body.children if getattr(b, "text", "") == "保存"))
    driver.frames(3)  # drawing the list: an obeyed [font=...] raised OSError here
    assert any("font=/no/such/font" in t for t in texts(driver.screen))

    from client.services import cases

    cases.report_case(app.session, cases.CaseDraft(title=MARKUP, household_id=HOUSEHOLD))
    app.go("cases")
    driver.frames(3)
    assert any("font=/no/such/font" in t for t in texts(driver.screen))

    app.go("households")
    search = driver.screen
    driver.until(lambda: len(search.list_view.data) == 1, 5, "the list")
    driver.frames(3)
    rows = search.list_view.layout_manager.children
    assert any("font=/no/such/font" in row.text for row in rows)
    driver.screenshot("careless_markup_as_text")


def test_ten_thousand_characters_in_a_visit_say_how_long_and_keep_the_text(app_driver, grid):
    driver = started(app_driver, grid)
    app = driver.app
    app.go("household", household_id=HOUSEHOLD)
    driver.tap(driver.screen.new_visit_button)
    form = driver.screen
    form.notes_input.text = "长" * 10_000  # pasted: typing it in the test would take minutes
    driver.scroll_to(form.save_button)
    driver.tap(form.save_button)  # the store's refusal escaped this tap and stopped the app
    assert driver.screen is form
    assert form.error_label.text == "「情况记录」太长了：最多8000字，现在10000字。请删减后再保存。"
    assert len(form.notes_input.text) == 10_000 and app.session.records("visit") == []
    driver.screenshot("careless_visit_too_long")


def test_a_pasted_nul_never_enters_a_field(app_driver, grid):
    driver = started(app_driver, grid)
    driver.app.go("diary")
    diary = driver.screen
    diary.text_input.focus = True
    driver.frames(2)
    diary.text_input.insert_text("邻居\x00反映\x07噪音\n晚上")  # what a paste does
    assert diary.text_input.text == "邻居反映噪音\n晚上"
    driver.tap(next(b for b in diary.body.children if getattr(b, "text", "") == "保存"))
    [entry] = driver.app.session.records("diary")
    assert entry.fields["text"] == "邻居反映噪音\n晚上"


def test_a_patrol_photo_that_is_no_photo_is_refused_in_words(app_driver, grid):
    driver = started(app_driver, grid, camera=PhotoCamera([b"", b"GIF89a broken", photo_bytes(400, 300)]))
    app = driver.app
    app.go("patrol")
    patrol = driver.screen
    driver.tap(patrol.toggle_button)
    photo = next(b for b in patrol.body.walk() if getattr(b, "text", "") == "拍照 / 添加照片")
    driver.scroll_to(photo)
    driver.tap(photo)  # a zero-byte file: NotAPhoto escaped this tap
    assert patrol.error_label.text == "这不是能读的照片。"
    driver.tap(photo)
    driver.tap(photo)
    assert patrol.error_label.text == "" and app.patrols.current.photos and len(app.patrols.current.photos) == 1
    assert "照片1张" in patrol.info_label.text


def test_a_photo_file_deleted_after_it_was_listed_is_named_not_a_crash(app_driver, grid, tmp_path):
    from kivy.core.window import Window
    from kivy.uix.popup import Popup

    from client.phone.camera import NoCamera

    driver = started(app_driver, grid, camera=NoCamera())
    app = driver.app
    app.go("case_form", household_id=HOUSEHOLD)
    form = driver.screen
    photo = next(b for b in form.body.children if getattr(b, "text", "") == "拍照 / 添加照片")
    driver.tap(photo)
    [popup] = [w for w in Window.children if isinstance(w, Popup)]
    chooser = popup.content.children[0]
    gone = tmp_path / "gone.jpg"
    gone.write_bytes(photo_bytes(400, 300))
    gone.unlink()  # the file manager moved it while the list was open
    chooser.dispatch("on_submit", [str(gone)], None)
    driver.frames(2)
    assert app.last_toast == "打不开这个文件：它可能已被删除或移走。请重新选择。"
    assert form.draft.photos == [] and driver.screen is form


def test_a_server_typed_with_a_chinese_keyboard_enrolls_and_a_wrong_port_says_so(app_driver, grid, tmp_path):
    driver = app_driver(data_dir=tmp_path / "phone")
    first = driver.screen
    host_port = grid.server.url.replace("http://", "")
    driver.type_into(first.server_input, host_port.replace(":", "：99"))  # port 99xxxxx: past 65535
    driver.type_into(first.code_input, "abcd-efgh")
    driver.tap(first.enroll_button)
    driver.until(lambda: not first.enroll_button.disabled, 30, "the refusal")
    assert first.error_label.text == "服务器地址看起来不对，请再核对一下。"

    grid.add_user("全角用户")
    first.server_input.text = ""
    driver.type_into(first.server_input, host_port.replace(":", "："))  # a fullwidth colon: the screen hung
    first.code_input.text = ""
    driver.type_into(first.code_input, "".join(chr(ord(c) + 0xFEE0) for c in grid.code("全角用户")))
    driver.tap(first.enroll_button)
    driver.until(lambda: driver.screen.name == "pin" or not first.enroll_button.disabled, 30, "enrollment")
    assert driver.screen.name == "pin", first.error_label.text


def test_a_settings_file_naming_an_unknown_language_starts_in_chinese(app_driver, tmp_path):
    data = tmp_path / "edited"
    data.mkdir()
    (data / "settings.json").write_text('{"language": "fr", "server_url": 5}')  # set_language raised in build
    driver = app_driver(data_dir=data)
    assert driver.screen.name == "first_run" and driver.screen.title_label.text == "第一次使用"
