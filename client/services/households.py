"""Households of the user's grids: an in-memory search index and each household's history.

The index is built from the decrypted store once after unlock and refreshed after each sync
or edit; a search is then a scan of 5,000 short strings, a few milliseconds, with no disk and
no decryption on the path of a keystroke.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol

# Rows a list shows at once are cheap; thousands are what RecycleView is for, but a search
# that matches everything is cut so the first frame stays fast.
DEFAULT_LIMIT = 5000


class RecordLike(Protocol):
    id: str
    deleted: bool
    fields: dict


@dataclass(frozen=True, slots=True)
class HouseholdRow:
    """One line of the household list."""

    id: str
    grid_id: str
    address: str
    building: str
    unit: str
    room: str
    head_name: str
    tags: tuple[str, ...]
    sort_key: tuple

    @property
    def place(self) -> str:
        """Building, unit and room as a steward says them: 3-2-401."""
        return "-".join(part for part in (self.building, self.unit, self.room) if part)


def _natural(text: str) -> tuple:
    # "12" after "3": room 1201 sorts after room 301, as on the stairwell.
    return (len(text), text) if text.isdigit() else (10**6, text)


def household_row(record: RecordLike) -> HouseholdRow:
    f = record.fields
    building, unit, room = str(f.get("building", "")), str(f.get("unit", "")), str(f.get("room", ""))
    address = str(f.get("address", ""))
    return HouseholdRow(
        id=record.id,
        grid_id=str(f.get("grid_id", "")),
        address=address,
        building=building,
        unit=unit,
        room=room,
        head_name=str(f.get("head_name", "")),
        tags=tuple(f.get("tags") or ()),
        sort_key=(address, _natural(building), _natural(unit), _natural(room)),
    )


def _haystack(row: HouseholdRow) -> str:
    parts = (row.address, row.place, row.building, row.unit, row.room, row.head_name, *row.tags)
    return "\x00".join(parts).casefold()


@dataclass
class HouseholdIndex:
    """Search over address, building, unit, room, the head's name and tags.

    Every word of a query must appear (in any of those); "3-2-401", "3 401", "王 独居" all work.
    """

    _rows: list[HouseholdRow] = field(default_factory=list)
    _haystacks: list[str] = field(default_factory=list)
    _by_id: dict[str, HouseholdRow] = field(default_factory=dict)

    @classmethod
    def build(cls, records: Iterable[RecordLike]) -> "HouseholdIndex":
        rows = sorted((household_row(r) for r in records if not r.deleted), key=lambda r: r.sort_key)
        return cls(rows, [_haystack(r) for r in rows], {r.id: r for r in rows})

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, household_id: str) -> HouseholdRow | None:
        return self._by_id.get(household_id)

    def search(self, query: str = "", limit: int = DEFAULT_LIMIT) -> list[HouseholdRow]:
        """Households matching every word of ``query``, in address order; all of them for an empty query."""
        words = query.casefold().split()
        if not words:
            return self._rows[:limit]
        found: list[HouseholdRow] = []
        for row, hay in zip(self._rows, self._haystacks):
            if all(w in hay for w in words):
                found.append(row)
                if len(found) >= limit:
                    break
        return found
