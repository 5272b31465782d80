"""A whole day on a cheap phone: what the app keeps in memory must not grow with what the user did.

Figures (RSS, seconds) are printed by bench/client_memory.py; these tests check the behaviour
behind them: previews small and made once, screens that let go of what they showed.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageFile

from bench.client_bench import PIN, build_device
from client.services.home import household_history
from client.services.photos import MAX_SIDE_PX, THUMBNAIL_SIDE_PX, downscale_photo, thumbnail
from tests.client.conftest import PhotoCamera, fast_vault, photo_bytes

pytestmark = pytest.mark.ui


def camera_photo(width: int = 4000, height: int = 3000) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 30)).save(out, format="JPEG", quality=90)
    return out.getvalue()


@pytest.fixture
def decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """The size of every image Pillow decodes while the test runs."""
    sizes: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def recording_load(image):
        pixels = load(image)
        sizes.append(image.size)
        return pixels

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    return sizes


def test_a_camera_photo_is_never_decoded_at_its_full_4000_px(decoded_sizes):
    stored = downscale_photo(camera_photo())
    with Image.open(io.BytesIO(stored)) as image:
        assert max(image.size) == MAX_SIDE_PX
    assert decoded_sizes and max(max(size) for size in decoded_sizes) <= 2 * MAX_SIDE_PX
    decoded_sizes.clear()
    preview = thumbnail(stored)
    with Image.open(io.BytesIO(preview)) as image:
        assert max(image.size) == THUMBNAIL_SIDE_PX
    assert max(max(size) for size in decoded_sizes) <= 2 * THUMBNAIL_SIDE_PX


@pytest.fixture
def full_phone(tmp_path):
    """A phone after its first sync, no server needed: 60 households and 240 visits."""
    data_dir = tmp_path / "phone"
    _, household_ids = build_device(data_dir, 60, 240, vault_factory=fast_vault)
    return data_dir, household_ids


def unlock(driver) -> None:
    pin_screen = driver.screen
    assert pin_screen.name == "pin"
    driver.type_into(pin_screen.pin_input, PIN)
    pin_screen.submit()
    driver.until(lambda: driver.screen.name == "home", 30, "the unlock")


def test_photos_added_one_by_one_keep_each_preview_small_and_made_once(app_driver, full_phone):
    from kivy.cache import Cache

    data_dir, household_ids = full_phone
    photos = [photo_bytes(color=(30 * n, 90, 200 - 20 * n)) for n in range(6)]
    driver = app_driver(data_dir, camera=PhotoCamera(photos))
    unlock(driver)
    driver.app.go("visit", household_id=household_ids[0], visit_id="")
    form = driver.screen

    def cached_from_memory() -> int:
        # Images loaded from bytes are cached under "__inline__"; the theme's own textures also come and go.
        return sum(1 for key in Cache._objects.get("kv.texture", {}) if key.startswith("__inline__"))

    cached_before = cached_from_memory()
    shown_before: list = []
    for count in range(1, len(photos) + 1):
        driver.scroll_and_tap(form.photo_button)
        strip = form.photo_strip
        assert len(strip.children) == count
        # The photos already shown keep their previews: only the new one is made.
        assert [strip.previews[sha] for sha in form.draft.photos[: count - 1]] == shown_before
        shown_before = [strip.previews[sha] for sha in form.draft.photos]
        assert all(max(preview.texture.size) <= THUMBNAIL_SIDE_PX for preview in strip.children)
    # Kivy's texture cache keeps each texture it is given for a minute: previews stay out of it.
    assert cached_from_memory() == cached_before


def test_fifty_household_histories_keep_only_the_shown_households_rows(app_driver, full_phone):
    data_dir, household_ids = full_phone
    driver = app_driver(data_dir)
    unlock(driver)
    for household_id in household_ids[:50]:
        driver.app.go("household", household_id=household_id)
        driver.frames(1)
        driver.screen.go_back()
        driver.frames(1)
    screen = driver.app.screen("household")
    shown = household_history(driver.app.session, household_ids[49]).visits
    assert set(screen.visit_buttons) == {visit.id for visit in shown}
    assert all(button.parent is screen.body for button in screen.visit_buttons.values())
