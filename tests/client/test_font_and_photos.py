"""Chinese renders with real glyphs; photos are downscaled and stripped."""

from __future__ import annotations

import io

from PIL import Image

from client.fonts import find_cjk_font, register_cjk_default_font
from client.services.photos import MAX_SIDE_PX, downscale_photo


def _roboto() -> str:
    """Kivy's bundled Roboto by file: the name "Roboto" is re-registered to the CJK font by the app."""
    import os

    import kivy

    return os.path.join(kivy.kivy_data_dir, "fonts", "Roboto-Regular.ttf")


def _render(text: str, font: str):
    from kivy.core.text import Label as CoreLabel

    label = CoreLabel(text=text, font_size=48, font_name=font)
    label.refresh()
    return label.texture.size, bytes(label.texture.pixels)


def test_a_cjk_font_is_found_on_this_machine():
    font = find_cjk_font()
    assert font.is_file() and font.suffix.lower() in (".ttc", ".ttf", ".otf")


def test_chinese_renders_real_glyphs_not_missing_glyph_boxes(kivy_window):
    font = str(find_cjk_font())
    # Roboto has no CJK glyphs: every character is the same "missing" box.
    assert _render("网", _roboto()) == _render("格", _roboto())
    # The CJK font draws two different characters differently, and unlike Roboto's box.
    wang, ge = _render("网", font), _render("格", font)
    assert wang != ge
    assert wang != _render("网", _roboto())
    assert any(wang[1][3::4])  # not blank: some pixel has ink


def test_registered_default_font_is_used_by_every_widget(kivy_window):
    from kivy.uix.label import Label

    register_cjk_default_font()
    plain = Label(text="网格", font_size=48)  # no font_name given: the default
    plain.texture_update()
    other = Label(text="民情", font_size=48)
    other.texture_update()
    assert bytes(plain.texture.pixels) != bytes(other.texture.pixels)


def test_photo_is_upright_1600_px_jpeg_without_exif():
    image = Image.new("RGB", (4000, 3000), (120, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the camera held sideways
    exif[0x8825] = {1: "N", 2: (30.0, 59.0, 0.0)}  # GPS
    raw = io.BytesIO()
    image.save(raw, format="JPEG", exif=exif)
    small = Image.open(io.BytesIO(downscale_photo(raw.getvalue())))
    assert small.format == "JPEG" and small.size == (1200, MAX_SIDE_PX)  # turned upright
    assert not small.getexif()


def test_small_png_is_converted_not_enlarged():
    image = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    raw = io.BytesIO()
    image.save(raw, format="PNG")
    small = Image.open(io.BytesIO(downscale_photo(raw.getvalue())))
    assert small.size == (300, 200) and small.mode == "RGB"
