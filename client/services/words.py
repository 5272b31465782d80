"""Sync results in plain words for the user: what went up and down, and for each conflict or
rejection, what I wrote, what was kept, and why; and the records this app cannot open yet."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from client.i18n import tr
from client.services.session import Session
from client.services.sync_runner import SyncOutcome, SyncState


@dataclass(frozen=True)
class Notice:
    """One conflict or rejection, ready for a label."""

    key: str  # "conflict:<cid>", "rejection:<mid>" or "set_aside:<count>", for dismissing
    title: str
    body: str


def show_value(value: Any) -> str:
    """A field value as a person reads it."""
    if value is None or value == "" or value == []:
        return tr("value.empty")
    if isinstance(value, bool):
        return tr("value.yes") if value else tr("value.no")
    if isinstance(value, list):
        return tr("common.list_separator").join(show_value(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {show_value(v)}" for k, v in value.items())
    text = str(value)
    return text if len(text) <= 80 else text[:79] + "…"


def field_name(entity: str, field: str) -> str:
    key = f"field.{entity}.{field}"
    text = tr(key)
    return field if text == key else text


def outcome_text(outcome: SyncOutcome | None) -> str:
    """One or two sentences on the last sync."""
    if outcome is None or outcome.state is SyncState.NEVER:
        return tr("sync.state.never")
    when = _when(outcome.finished_at)
    if outcome.state is SyncState.DONE:
        text = tr("sync.done", when=when, up=outcome.pushed, down=outcome.pulled)
        if outcome.photos_up or outcome.photos_down:
            text += " " + tr("sync.photos", up=outcome.photos_up, down=outcome.photos_down)
        if outcome.conflicts or outcome.rejected:
            text += " " + tr("sync.attention", conflicts=outcome.conflicts, rejected=outcome.rejected)
        if outcome.set_aside:
            text += " " + tr("sync.set_aside", count=outcome.set_aside)
        return text
    return tr(f"sync.state.{outcome.state.value}", when=when, pending=outcome.pending_after)


def clock_notice(off_by: datetime.timedelta) -> str:
    """The home screen's warning that the phone's clock is wrong, with by how much in words.

    ``off_by`` is how far the clock is behind the server's (negative: ahead). The size is
    rounded to the largest unit that fits (minutes, hours, days, years): "about 3 hours" is what
    a person needs to find the setting, not the seconds.
    """
    minutes = round(abs(off_by).total_seconds() / 60)
    if minutes < 60:
        unit, count = "minutes", minutes
    elif minutes < 36 * 60:
        unit, count = "hours", round(minutes / 60)
    elif minutes < 365 * 24 * 60:
        unit, count = "days", round(minutes / (24 * 60))
    else:
        unit, count = "years", round(minutes / (365.25 * 24 * 60))
    amount = tr(f"clock.{unit}.one" if count == 1 else f"clock.{unit}", count=count)
    return tr("clock.slow" if off_by > datetime.timedelta(0) else "clock.fast", amount=amount)


def _when(iso: str) -> str:
    if not iso:
        return ""
    try:
        return datetime.datetime.fromisoformat(iso).astimezone().strftime("%m-%d %H:%M")
    except ValueError:
        return iso


def _my_node(session: Session) -> str:
    last = session.store.get_meta("clock.last") or ""
    parts = last.split("-", 2)
    return parts[2] if len(parts) == 3 else session.account.device_id


def _record_label(session: Session, entity: str, record_id: str) -> str:
    record = session.store.get(entity, record_id)
    fields = record.fields if record is not None else {}
    if entity == "household":
        return fields.get("address", "") or tr("entity.household")
    if entity == "visit":
        household = (
            session.store.get("household", fields.get("household_id", "")) if fields.get("household_id") else None
        )
        where = household.fields.get("address", "") if household is not None else ""
        return tr("entity.visit_at", where=where) if where else tr("entity.visit")
    if entity == "case":
        return fields.get("title", "") or tr("entity.case")
    return tr(f"entity.{entity}")


def conflict_notices(session: Session, *, unseen_only: bool = False) -> list[Notice]:
    """Every conflict on my edits: "you wrote X; Y was kept, because ..."."""
    node = _my_node(session)
    notices = []
    for c in session.store.conflicts(unseen_only):
        mine_won = c.winner_hlc.split("-", 2)[-1] == node
        what = _record_label(session, c.entity, c.id)
        name = field_name(c.entity, c.field)
        if mine_won:
            body = tr("conflict.mine_kept", field=name, mine=show_value(c.kept), other=show_value(c.lost))
        else:
            body = tr("conflict.other_kept", field=name, mine=show_value(c.lost), kept=show_value(c.kept))
        notices.append(Notice(f"conflict:{c.cid}", tr("conflict.title", what=what), body))
    return notices


def rejection_notices(session: Session) -> list[Notice]:
    """Edits the server refused, with the reason in plain words and what was kept instead."""
    notices = []
    for r in session.store.rejections():
        what = _record_label(session, r.entity, r.id)
        reason_key = f"reject.{r.code}"
        reason = tr(reason_key)
        if reason == reason_key:
            reason = tr("reject.other", message=r.message)
        wrote = (
            "; ".join(f"{field_name(r.entity, k)}: {show_value(v)}" for k, v in r.fields.items()) or tr("reject.delete")
        )
        current = session.store.get(r.entity, r.id)
        kept = ""
        if current is not None:
            kept = "; ".join(
                f"{field_name(r.entity, k)}: {show_value(current.fields.get(k))}"
                for k in r.fields
                if k in current.fields
            )
        body = tr("reject.body", wrote=wrote, kept=kept or tr("value.empty"), reason=reason)
        notices.append(Notice(f"rejection:{r.mid}", tr("reject.title", what=what), body))
    return notices


def set_aside_notices(session: Session) -> list[Notice]:
    """One notice for the records the server sent that this app cannot open yet, until seen
    (they are applied by the first sync after an upgrade that can read them)."""
    unseen = session.store.set_aside(unseen_only=True)
    if not unseen:
        return []
    count = session.store.set_aside_count()
    title = tr("set_aside.title.one" if count == 1 else "set_aside.title", count=count)
    # The reason is for whoever runs the server: technical, and the same for most of them.
    return [Notice(f"set_aside:{count}", title, tr("set_aside.body", reason=unseen[-1].reason[:300]))]


def dismiss(session: Session, notice: Notice) -> None:
    kind, _, ident = notice.key.partition(":")
    if kind == "set_aside":
        session.store.mark_set_aside_seen()
    elif kind == "conflict":
        session.store.mark_conflicts_seen([int(ident)])
    elif kind == "rejection":
        session.store.dismiss_rejection(ident)
