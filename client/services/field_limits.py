"""What a form may hold, checked before anything is stored, with words the user can act on.

The limits are the shared schema's (``shared_schema.types``), read from it rather than copied:
the store refuses what the schema refuses, and the server does too, so a form that passed
these checks is never an edit rejected later, or a crash now.
"""

from __future__ import annotations

from typing import Any

from msgspec import Meta

from client.i18n import tr
from shared_schema import types


def _max_length(annotated: Any) -> int:
    return next(m.max_length for m in annotated.__metadata__ if isinstance(m, Meta) and m.max_length)


TEXT_MAX = _max_length(types.Text)  # notes, descriptions, feedback, diary
TITLE_MAX = _max_length(types.Title)
PHOTOS_MAX = _max_length(types.Photos)


class FormInvalid(ValueError):
    """The form cannot be saved as it is; ``reason`` is a catalog key, ``values`` fill it."""

    def __init__(self, reason: str, **values: Any):
        super().__init__(reason)
        self.reason = reason
        self.values = values

    def text(self) -> str:
        """The message in the current language."""
        return tr(self.reason, **self.values)


def check_text(text: str, field_key: str, limit: int = TEXT_MAX) -> str:
    """``text`` stripped, or FormInvalid naming the field (``field_key`` is its catalog key).

    NUL is refused here: the server cannot store it, and an edit holding one would be
    rejected at every sync.
    """
    text = text.strip()
    if "\x00" in text:
        raise FormInvalid("form.error.control_char", field=tr(field_key))
    if len(text) > limit:
        raise FormInvalid("form.error.too_long", field=tr(field_key), limit=limit, length=len(text))
    return text


def check_photo_room(photos: list[str]) -> None:
    """FormInvalid when a record already holds as many photos as it may."""
    if len(photos) >= PHOTOS_MAX:
        raise FormInvalid("photo.too_many", limit=PHOTOS_MAX)
