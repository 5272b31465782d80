"""Cases (问题上报): report a problem into the closed loop (受理、分流、督办、反馈、考核), follow
it, and resolve it with feedback where the workflow lets a device do so."""

from __future__ import annotations

from dataclasses import dataclass, field

from client.services.field_limits import TITLE_MAX, FormInvalid, check_photo_room, check_text
from client.services.session import Session
from shared_schema.entities import CaseCategory
from shared_schema.workflow import Actor, CaseStatus, may_transition

CASE_CATEGORIES = [c.value for c in CaseCategory]
OPEN_STATUSES = frozenset({CaseStatus.REPORTED, CaseStatus.ACCEPTED, CaseStatus.DISPATCHED, CaseStatus.OVERDUE})
# The cases waiting on the user come first: overdue, then dispatched (to resolve), then the rest.
_STATUS_ORDER = {"overdue": 0, "dispatched": 1, "reported": 2, "accepted": 3, "resolved": 4, "closed": 5}


class CaseInvalid(FormInvalid):
    """The case cannot be saved; ``reason`` is a catalog key for the user."""


@dataclass
class CaseDraft:
    category: str = CaseCategory.OTHER.value
    title: str = ""
    description: str = ""
    photos: list[str] = field(default_factory=list)
    household_id: str | None = None


@dataclass(frozen=True)
class CaseRow:
    id: str
    title: str
    category: str
    status: str
    household_id: str | None
    department: str | None
    due_at: str | None
    feedback: str
    can_resolve: bool


def attach_photo(session: Session, draft: CaseDraft, data: bytes) -> str:
    check_photo_room(draft.photos)
    sha = session.add_photo(data)
    if sha not in draft.photos:
        draft.photos.append(sha)
    return sha


def report_case(session: Session, draft: CaseDraft) -> str:
    """Report a new case (status ``reported``); returns its id."""
    title = check_text(draft.title, "field.case.title", TITLE_MAX)
    if not title:
        raise CaseInvalid("case.error.title")
    description = check_text(draft.description, "field.case.description")
    if draft.category not in CASE_CATEGORIES:
        raise CaseInvalid("case.error.category")
    grid_id = session.default_grid_id()
    if draft.household_id:
        household = session.get("household", draft.household_id)
        if household is None:
            raise CaseInvalid("case.error.household")
        grid_id = household.fields.get("grid_id", grid_id)
    return session.create(
        "case",
        {
            "grid_id": grid_id,
            "household_id": draft.household_id,
            "category": draft.category,
            "title": title,
            "description": description,
            "photos": sorted(set(draft.photos)),
            "status": CaseStatus.REPORTED.value,
        },
    )


def can_resolve(status: str) -> bool:
    """Whether this device may move a case in ``status`` to resolved (dispatched or overdue)."""
    return may_transition("case", "status", status, CaseStatus.RESOLVED.value, Actor.DEVICE) and status != "resolved"


def case_row(record) -> CaseRow:
    f = record.fields
    status = f.get("status", "reported")
    return CaseRow(
        id=record.id,
        title=f.get("title", ""),
        category=f.get("category", "other"),
        status=status,
        household_id=f.get("household_id"),
        department=f.get("department"),
        due_at=f.get("due_at"),
        feedback=f.get("feedback", ""),
        can_resolve=can_resolve(status),
    )


def my_cases(session: Session, *, open_only: bool = False, household_id: str | None = None) -> list[CaseRow]:
    """The cases of my grids, those waiting on me first."""
    records = session.records("case", household_id=household_id) if household_id else session.records("case")
    rows = [case_row(r) for r in records]
    if open_only:
        rows = [r for r in rows if r.status in OPEN_STATUSES]
    return sorted(rows, key=lambda r: (_STATUS_ORDER.get(r.status, 9), r.due_at or "", r.id))


def resolve_case(session: Session, case_id: str, feedback: str) -> None:
    """Mark a dispatched or overdue case resolved, with what was done (反馈)."""
    record = session.get("case", case_id)
    if record is None:
        raise CaseInvalid("case.error.missing")
    if not can_resolve(record.fields.get("status", "")):
        raise CaseInvalid("case.error.cannot_resolve")
    feedback = check_text(feedback, "field.case.feedback")
    if not feedback:
        raise CaseInvalid("case.error.feedback")
    session.edit("case", case_id, {"status": CaseStatus.RESOLVED.value, "feedback": feedback})
