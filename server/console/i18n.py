"""Message catalogs: Chinese first, English second, one JSON file per language in ``messages/``.

A template calls ``_("key", n=3)``; a key missing from the chosen catalog falls back to the
Chinese text, then to the key itself (tests check both catalogs carry the same keys).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"
LANG_COOKIE = "fl_lang"
_DIR = Path(__file__).parent / "messages"


@functools.cache
def catalog(lang: str) -> dict[str, str]:
    return json.loads((_DIR / f"{lang}.json").read_text(encoding="utf-8"))


def pick_language(cookie: str | None, accept_language: str | None = None) -> str:
    """The cookie's language when it names one we have, else Chinese."""
    if cookie in LANGUAGES:
        return cookie
    return DEFAULT_LANGUAGE


def translator(lang: str) -> Callable[..., str]:
    messages = catalog(lang)
    fallback = catalog(DEFAULT_LANGUAGE)

    def _(key: str, **values: object) -> str:
        text = messages.get(key) or fallback.get(key) or key
        return text.format(**values) if values else text

    return _
