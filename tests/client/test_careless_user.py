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
