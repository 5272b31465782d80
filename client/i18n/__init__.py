"""The app's words, one JSON catalog per language (``zh_CN.json``, ``en.json``).

``tr("home.title")`` looks the key up in the current language, then in Chinese (the default,
so a key missing from a translation still shows something a user can read), then shows the
key itself so a gap is obvious in a screenshot rather than a crash in the field.
"""

from __future__ import annotations

import functools
import json
import string
from pathlib import Path

DEFAULT_LANGUAGE = "zh_CN"
LANGUAGES = ("zh_CN", "en")
_HERE = Path(__file__).parent
_current = DEFAULT_LANGUAGE


@functools.cache
def catalog(language: str) -> dict[str, str]:
    """Every key of one language's catalog."""
    return json.loads((_HERE / f"{language}.json").read_text(encoding="utf-8"))


def set_language(language: str) -> None:
    """Switch the language of every later ``tr`` call. Raises ValueError for an unknown language."""
    global _current
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; known: {', '.join(LANGUAGES)}")
    _current = language


def current_language() -> str:
    return _current


def tr(key: str, **values: object) -> str:
    """The text for ``key`` in the current language, with ``{name}`` placeholders filled."""
    text = catalog(_current).get(key)
    if text is None:
        text = catalog(DEFAULT_LANGUAGE).get(key, key)
    return text.format(**values) if values else text


def placeholders(text: str) -> set[str]:
    """The ``{name}`` placeholders a catalog text expects."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}
