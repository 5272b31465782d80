"""A forgotten PIN or a damaged store: the phone is erased as a remote wipe erases it and enrolls again.

And a long lock says minutes, not thousands of seconds.
"""

from __future__ import annotations

import pytest

from client.i18n import set_language, tr
from client.services import visits
from client.services.setup import DataDir, lock_wait
from client.vault import WrongPin
from tests.client.conftest import make_setup, photo_bytes
from tests.client.test_services_flow import enrolled

NEW_PIN = "135790"


def files_left(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_dir())


def phone_with_a_photo_and_an_unsynced_visit(tmp_path, office, name: str):
    setup, session = enrolled(tmp_path, office, name)
    household = session.create("household", {"grid_id": office.grid_id, "address": "长兴路 88 号",
                                              "head_name": "顾建国"})
    draft = visits.new_visit(household)
    draft.notes = "老人说夜里睡不着"
    visits.attach_photo(session, draft, photo_bytes(color=(9, 8, 7)))
    visits.save_visit(session, draft)
    session.close()
    return setup, household


def test_forgotten_pin_erases_store_photos_and_key_and_the_phone_enrolls_again(tmp_path, office):
    setup, household = phone_with_a_photo_and_an_unsynced_visit(tmp_path, office, "忘密码甲")
    root = setup.data_dir.root
    assert setup.data_dir.store.with_name("store.sqlite.blobs").is_dir()
    restarted = make_setup(root)  # the app was closed; only the PIN screen is open
    with pytest.raises(WrongPin):
        restarted.unlock("999999")

    server = restarted.erase_to_enroll_again()
    assert server == office.server.url

    assert files_left(root) == ["settings.json"]  # no store, no photo folder, no vault
    assert not restarted.is_set_up()
    pending = restarted.enroll(server, office.code("忘密码甲"))
    session = restarted.set_pin(pending, NEW_PIN, NEW_PIN)
    try:
        assert session.get("household", household) is None and session.pending_count() == 0
    finally:
        session.close()
    make_setup(root).unlock(NEW_PIN).close()
    assert make_setup(root).vault.failures() == 0


def test_a_damaged_store_is_erased_all_the_same(tmp_path, office):
    setup, _ = phone_with_a_photo_and_an_unsynced_visit(tmp_path, office, "忘密码乙")
    setup.data_dir.store.write_bytes(b"not a database" * 100)
    assert make_setup(setup.data_dir.root).erase_to_enroll_again() == office.server.url
    assert files_left(setup.data_dir.root) == ["settings.json"]


def test_erasing_a_phone_that_never_enrolled_leaves_it_ready_to_enroll(tmp_path):
    setup = make_setup(tmp_path / "new-phone")
    assert setup.erase_to_enroll_again() == ""
    assert not setup.is_set_up()


@pytest.mark.parametrize(("seconds", "key", "values"), [
    (0.2, "pin.locked", {"seconds": 1}),
    (30.0, "pin.locked", {"seconds": 30}),
    (29.01, "pin.locked", {"seconds": 30}),
    (59.0, "pin.locked", {"seconds": 59}),
    (59.5, "pin.locked_minutes", {"minutes": 1}),
    (60.0, "pin.locked_minutes", {"minutes": 1}),
    (61.0, "pin.locked_minutes", {"minutes": 2}),
    (120.0, "pin.locked_minutes", {"minutes": 2}),
    (3599.2, "pin.locked_minutes", {"minutes": 60}),
    (3600.0, "pin.locked_minutes", {"minutes": 60}),
])
def test_a_lock_says_minutes_rounded_up_from_a_minute_on_and_seconds_below(seconds, key, values):
    assert lock_wait(seconds) == (key, values)


def test_an_hour_lock_reads_sixty_minutes_in_both_languages():
    key, values = lock_wait(3600.0)
    assert tr(key, **values) == "密码错太多次，请60分钟后再试。"
    set_language("en")
    try:
        assert tr(key, **values) == "Too many wrong PINs. Try again in 60 min."
        assert tr(*lock_wait(30.0)[:1], **lock_wait(30.0)[1]) == "Too many wrong PINs. Try again in 30 seconds."
    finally:
        set_language("zh_CN")


# ---- in the window -------------------------------------------------------------------------


@pytest.mark.ui
def test_forgot_pin_button_asks_first_cancel_keeps_everything_confirm_goes_to_enrollment(
        app_driver, office, tmp_path):
    from client.services import diary
    from tests.client.test_app_window import enroll_in_window

    office.add_user("忘密码丙")
    data_dir = tmp_path / "phone"
    driver = app_driver(data_dir=data_dir)
    enroll_in_window(driver, office, "忘密码丙")
    diary.write_diary(driver.app.session, "还没同步的一条")
    driver.stop()
    before = files_left(data_dir)

    driver = app_driver(data_dir=data_dir)
    pin = driver.screen
    assert pin.name == "pin"
    assert pin.forgot_button.text == "忘记密码？清除本机数据并重新登记"
    assert pin.forgot_button.opacity == 1 and not pin.forgot_button.disabled
    assert pin.forgot_button.background_color != pin.ok_button.background_color  # secondary, not red
    driver.screenshot("pin_with_forgot_button")

    driver.tap(pin.forgot_button)
    assert pin.popup is not None and pin.popup._window is not None
    warning = pin.popup.content.children[-1].text
    assert "没有密码" in warning and "没有同步" in warning and "新的登记码" in warning
    assert pin.keep_button.background_color == pin.ok_button.background_color  # keeping is the highlighted one
    driver.screenshot("forgot_pin_confirm")
    driver.tap(pin.keep_button)
    driver.until(lambda: pin.popup._window is None, 5, "the question to close")
    assert driver.screen.name == "pin" and driver.app.setup.is_set_up()
    assert files_left(data_dir) == before

    driver.tap(pin.forgot_button)
    driver.tap(pin.erase_button)
    driver.until(lambda: driver.screen.name == "first_run" and pin.popup._window is None, 5, "the enrollment screen")
    first = driver.screen
    assert first.server_input.text == office.server.url
    assert files_left(data_dir) == ["settings.json"]
    assert not DataDir(data_dir).vault.exists()
    driver.screenshot("enroll_again_after_forgotten_pin")

    driver.type_into(first.code_input, office.code("忘密码丙"))
    driver.tap(first.enroll_button)
    driver.until(lambda: driver.screen.name == "pin" or not first.enroll_button.disabled, 30, "enrollment")
    assert driver.screen.name == "pin", first.error_label.text
    assert driver.screen.mode == "set" and driver.screen.forgot_button.disabled
