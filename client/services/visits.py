"""Visits (入户走访): recording one by the five methods (五诊法), and editing it later."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from client.services.field_limits import FormInvalid, check_photo_room, check_text
from client.services.session import Session
from shared_schema.entities import VisitMethod

# In the order a steward meets them: at the office, at the door, on site, with departments, again.
VISIT_METHODS = [
    m.value
    for m in (VisitMethod.INQUIRY, VisitMethod.SIT, VisitMethod.EMERGENCY, VisitMethod.CONSULT, VisitMethod.FOLLOWUP)
]
# Topics offered as buttons (their words are in the catalog under "topic.<key>"); free topics are allowed too.
COMMON_TOPICS = [
    "elderly_care",
    "health",
    "housing",
    "drainage",
    "parking",
    "noise",
    "dispute",
    "pets",
    "safety",
    "policy",
]


@dataclass
class VisitDraft:
    """What the visit form holds; ``visit_id`` is None for a new visit."""

    household_id: str
    method: str = VisitMethod.INQUIRY.value
    topics: list[str] = field(default_factory=list)
    notes: str = ""
    photos: list[str] = field(default_factory=list)  # SHA-256 of photos already in the blob cache
    follow_up_on: datetime.date | None = None
    visit_id: str | None = None
    visited_at: datetime.datetime | None = None
    review: dict | None = None  # the supervisor's verdict, read-only


class VisitInvalid(FormInvalid):
    """The form cannot be saved; ``reason`` is a catalog key for the user."""


def new_visit(household_id: str, method: str = VisitMethod.INQUIRY.value) -> VisitDraft:
    return VisitDraft(household_id=household_id, method=method)


def load_visit(session: Session, visit_id: str) -> VisitDraft:
    record = session.get("visit", visit_id)
    if record is None:
        raise KeyError(visit_id)
    f = record.fields
    follow = f.get("follow_up_on")
    visited = f.get("visited_at")
    return VisitDraft(
        household_id=f.get("household_id", ""),
        method=f.get("method", VisitMethod.INQUIRY.value),
        topics=list(f.get("topics") or []),
        notes=f.get("notes", ""),
        photos=list(f.get("photos") or []),
        follow_up_on=datetime.date.fromisoformat(follow) if follow else None,
        visit_id=visit_id,
        visited_at=datetime.datetime.fromisoformat(visited) if visited else None,
        review=f.get("review"),
    )


def attach_photo(session: Session, draft: VisitDraft, data: bytes) -> str:
    """Downscale and store a photo, and add it to the draft (FormInvalid when it holds all it may)."""
    check_photo_room(draft.photos)
    sha = session.add_photo(data)
    if sha not in draft.photos:
        draft.photos.append(sha)
    return sha


def save_visit(session: Session, draft: VisitDraft) -> str:
    """Save a new visit or the changed fields of an edited one; returns the visit's id."""
    if draft.method not in VISIT_METHODS:
        raise VisitInvalid("visit.error.method")
    household = session.get("household", draft.household_id)
    if household is None:
        raise VisitInvalid("visit.error.household")
    if draft.follow_up_on is not None and draft.follow_up_on < session.today():
        raise VisitInvalid("visit.error.follow_up_past")
    fields = {
        "household_id": draft.household_id,
        "method": draft.method,
        "topics": sorted(set(draft.topics)),
        "notes": check_text(draft.notes, "field.visit.notes"),
        "photos": sorted(set(draft.photos)),
        "follow_up_on": draft.follow_up_on.isoformat() if draft.follow_up_on else None,
    }
    if draft.visit_id is None:
        fields["grid_id"] = household.fields.get("grid_id") or session.default_grid_id()
        fields["visited_at"] = session.now().isoformat()
        draft.visit_id = session.create("visit", fields)
        return draft.visit_id
    current = session.get("visit", draft.visit_id)
    old = current.fields if current else {}
    # Send only what changed: an untouched field must not overwrite someone else's later edit.
    changed = {k: v for k, v in fields.items() if old.get(k) != v}
    if changed:
        session.edit("visit", draft.visit_id, changed)
    return draft.visit_id
