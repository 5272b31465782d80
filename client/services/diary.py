"""The people's-sentiment diary (民情日记): what residents said today."""

from __future__ import annotations

from dataclasses import dataclass

from client.services.field_limits import FormInvalid, check_text
from client.services.session import Session


@dataclass
class DiaryForm:
    """What the diary's form holds (kept as a draft until it is written)."""

    text: str = ""


class DiaryInvalid(FormInvalid):
    """The entry cannot be saved; ``reason`` is a catalog key for the user."""


def write_diary(session: Session, text: str, topics: list[str] | None = None) -> str:
    text = check_text(text, "field.diary.text")
    if not text:
        raise DiaryInvalid("diary.error.empty")
    return session.create(
        "diary", {"text": text, "topics": sorted(set(topics or [])), "written_at": session.now().isoformat()}
    )


def diary_entries(session: Session, limit: int = 100) -> list:
    """Newest first."""
    rows = session.records("diary")
    rows.sort(key=lambda r: r.fields.get("written_at", ""), reverse=True)
    return rows[:limit]
