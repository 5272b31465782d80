"""What the home screen shows first: follow-ups due, my open cases, what waits to sync."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field

from client.services.cases import CaseRow, my_cases
from client.services.session import Session


@dataclass(frozen=True)
class FollowUp:
    """A household to visit again (跟踪复诊), from the latest visit that asked for it."""

    visit_id: str
    household_id: str
    due_on: datetime.date
    overdue_days: int  # 0: due today


@dataclass
class HomeSummary:
    due_today: list[FollowUp] = field(default_factory=list)
    overdue: list[FollowUp] = field(default_factory=list)
    open_cases: list[CaseRow] = field(default_factory=list)
    pending_edits: int = 0
    last_sync: dict | None = None
    # How far the phone's clock is behind the server's (negative: ahead), when the user should be told.
    clock_off_by: datetime.timedelta | None = None


def follow_ups(session: Session) -> tuple[list[FollowUp], list[FollowUp]]:
    """(due today, overdue): the follow-up date of each household's latest visit, if it is today or past.

    A later visit to the same household settles an earlier visit's follow-up, whether or not
    it sets a new date.
    """
    today = session.today()
    latest: dict[str, tuple[str, object]] = {}
    for visit in session.records("visit"):
        f = visit.fields
        household = f.get("household_id")
        if not household:
            continue
        stamp = f.get("visited_at", "")
        seen = latest.get(household)
        if seen is None or stamp > seen[0]:
            latest[household] = (stamp, visit)
    due, late = [], []
    for household, (_, visit) in latest.items():
        raw = visit.fields.get("follow_up_on")
        if not raw:
            continue
        due_on = datetime.date.fromisoformat(raw)
        if due_on > today:
            continue
        item = FollowUp(visit.id, household, due_on, (today - due_on).days)
        (due if due_on == today else late).append(item)
    late.sort(key=lambda f: f.due_on)
    return due, late


FOLLOW_UPS_META_KEY = "app.follow_ups"


def _change_token(session: Session) -> str:
    """Changes whenever the records may have: every local edit advances the clock, every pull the cursor."""
    from sync.client.store import META_CLOCK_LAST, META_CURSOR

    store = session.store
    return f"{store.get_meta(META_CURSOR)}|{store.get_meta(META_CLOCK_LAST)}|{session.today()}"


def _encode_follow_ups(items: list[FollowUp]) -> list[list]:
    return [[f.visit_id, f.household_id, f.due_on.isoformat(), f.overdue_days] for f in items]


def _decode_follow_ups(rows: list[list]) -> list[FollowUp]:
    return [FollowUp(v, h, datetime.date.fromisoformat(d), n) for v, h, d, n in rows]


def stored_follow_ups(session: Session) -> tuple[list[FollowUp], list[FollowUp]]:
    """``follow_ups``, kept (encrypted, in the store's meta) until the records change.

    Reading every visit is the slow part of starting the app (20,000 decryptions on a full
    phone); between two syncs a phone is opened many times and the answer stays the same.
    """
    token = _change_token(session)
    raw = session.store.get_meta(FOLLOW_UPS_META_KEY)
    if raw:
        kept = json.loads(raw)
        if kept.get("token") == token:
            return _decode_follow_ups(kept["due"]), _decode_follow_ups(kept["late"])
    due, late = follow_ups(session)
    session.store.set_meta(
        FOLLOW_UPS_META_KEY,
        json.dumps({"token": token, "due": _encode_follow_ups(due), "late": _encode_follow_ups(late)}),
    )
    return due, late


def home_summary(session: Session) -> HomeSummary:
    due, late = session.cached(f"follow_ups:{session.today()}", lambda: stored_follow_ups(session))
    return HomeSummary(
        due_today=due,
        overdue=late,
        open_cases=my_cases(session, open_only=True),
        pending_edits=session.pending_count(),
        last_sync=session.last_sync(),
        clock_off_by=session.wrong_clock_offset(),
    )


@dataclass
class HouseholdHistory:
    household: object
    visits: list
    cases: list[CaseRow]


def household_history(session: Session, household_id: str) -> HouseholdHistory:
    """A household with its visits (newest first) and its cases."""
    household = session.get("household", household_id)
    if household is None:
        raise KeyError(household_id)
    visits = session.records("visit", household_id=household_id)
    visits.sort(key=lambda v: v.fields.get("visited_at", ""), reverse=True)
    return HouseholdHistory(household, visits, my_cases(session, household_id=household_id))
