"""Finding a font that has Chinese glyphs, and making it every widget's default.

Kivy's bundled Roboto has no CJK glyphs: without this, every Chinese label is a row of boxes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# Checked in order. Debian/Ubuntu packages: fonts-wqy-microhei, fonts-noto-cjk, fonts-wqy-zenhei;
# /system/fonts is Android's own (NotoSansCJK on most phones, DroidSansFallback on old ones).
CJK_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/system/fonts/NotoSansCJK-Regular.ttc",
    "/system/fonts/NotoSansSC-Regular.otf",
    "/system/fonts/DroidSansFallback.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/simhei.ttf",
)
ENV_FONT = "FIELDLOOP_CJK_FONT"


class NoCjkFont(RuntimeError):
    """No font with Chinese glyphs was found; the README names the package to install."""


def _from_fontconfig() -> str | None:
    if not shutil.which("fc-list"):
        return None
    try:
        out = subprocess.run(
            ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    files = sorted(line.split(":", 1)[0].strip() for line in out.splitlines() if line.strip())
    # Prefer sans-serif faces: easier to read for older eyes on a small screen.
    files.sort(key=lambda f: (0 if ("Sans" in f or "hei" in f.lower()) else 1))
    return files[0] if files else None


def find_cjk_font(candidates: tuple[str, ...] = CJK_FONT_CANDIDATES) -> Path:
    """The path of a font file with CJK glyphs: ``$FIELDLOOP_CJK_FONT``, known paths, then fontconfig."""
    chosen = os.environ.get(ENV_FONT)
    if chosen and Path(chosen).is_file():
        return Path(chosen)
    for candidate in candidates:
        if Path(candidate).is_file():
            return Path(candidate)
    found = _from_fontconfig()
    if found and Path(found).is_file():
        return Path(found)
    raise NoCjkFont("no CJK font found; install fonts-wqy-microhei or fonts-noto-cjk, or set FIELDLOOP_CJK_FONT")


def register_cjk_default_font(path: Path | None = None) -> Path:
    """Make the CJK font Kivy's default, so every Label, Button and TextInput uses it."""
    from kivy.core.text import DEFAULT_FONT, LabelBase

    font = path or find_cjk_font()
    LabelBase.register(DEFAULT_FONT, str(font))
    return font
