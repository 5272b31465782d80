"""Drafts: what a form held when the user left it unsaved, kept until it is saved or discarded.

A steward is called away mid-visit, presses Back, switches the language, the phone locks in a
stairwell or Android kills the app in the background: what was typed, chosen and photographed
is there when the same form is opened again, after a restart too. Decisions:

- One draft per form, named by a key (``visit_key``, ``case_key``, ``DIARY_KEY``): an edited
  visit by its id, a new visit and a new case by their household, the diary's next entry. (A
  patrol needs none: it is a record saved at every step, and its notes are saved with it when
  the user leaves its screen.)
- A draft holds only the fields the user changed from the form as it was opened. An edited
  record's untouched fields therefore come from the record as it is when the form is opened
  again, so restoring never undoes a sync in between; a form left untouched leaves no draft.
- Drafts live in the store's meta, sealed like every record: nothing of them enters the outbox
  or reaches the server. Their photos are held blobs (``Session.add_photo``): sealed on the phone
  and sent only once a saved record names them. The store's wipe (sign-out, forgotten PIN,
  remote wipe) erases drafts with everything else.
- A draft goes when its form is saved, or when the user discards it; a discard also erases the
  draft's photos that no record and no other draft names.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from client.services.session import Session

DRAFTS_META_KEY = "app.drafts"
DIARY_KEY = "diary:new"
# The form field that lists a form's photos (VisitDraft.photos, CaseDraft.photos).
PHOTOS_FIELD = "photos"

Form = TypeVar("Form")


def visit_key(visit_id: str | None, household_id: str) -> str:
    """An edited visit's draft is its own; a new visit's belongs to the household visited."""
    return f"visit:{visit_id}" if visit_id else f"visit:new:{household_id}"


def case_key(household_id: str | None) -> str:
    """A new case from a household's page, or from the cases list (no household)."""
    return f"case:new:{household_id or ''}"


@dataclass(frozen=True)
class Restored(Generic[Form]):
    """A form as it opens: the draft's changes over the form as loaded, and when they were kept."""

    form: Form
    kept_at: datetime.datetime | None  # None: there was no draft


def changed_fields(form: Any, opened: Any) -> dict[str, Any]:
    """The fields of ``form`` that differ from ``opened`` (the same form as it was loaded), as stored."""
    now, before = msgspec.to_builtins(form), msgspec.to_builtins(opened)
    return {name: value for name, value in now.items() if before.get(name) != value}


def keep_draft(session: Session, key: str, form: Any, opened: Any) -> None:
    """Keep what ``form`` changed from ``opened`` as the draft ``key``.

    A form back to what it was loaded as has no draft any more. Writes nothing when the draft
    already holds these changes (leaving a form twice costs one write).
    """
    changes = changed_fields(form, opened)
    drafts = _drafts(session)
    if changes:
        if drafts.get(key, {}).get("changes") == changes:
            return
        drafts[key] = {"changes": changes, "kept_at": session.now().isoformat()}
    elif drafts.pop(key, None) is None:
        return
    _save(session, drafts)


def restore_draft(session: Session, key: str, opened: Form) -> Restored[Form]:
    """A new form: ``opened`` (left as it is) with the draft ``key``, if there is one, on top."""
    loaded = msgspec.to_builtins(opened)
    kept = _drafts(session).get(key)
    if kept is not None:
        try:
            return Restored(msgspec.convert(loaded | kept["changes"], type(opened)),
                            datetime.datetime.fromisoformat(kept["kept_at"]))
        except msgspec.ValidationError:
            # A draft the form can no longer hold (kept by an older app): the form opens as
            # loaded, and the draft stays until this form is saved or discarded.
            pass
    return Restored(msgspec.convert(loaded, type(opened)), None)


def drop_draft(session: Session, key: str) -> None:
    """Forget the draft ``key``: its form was saved, or the user discarded it.

    Its photos that nothing else names are erased (a saved form's photos are named by its record).
    """
    drafts = _drafts(session)
    kept = drafts.pop(key, None)
    if kept is None:
        return
    _save(session, drafts)
    still_wanted = {sha for other in drafts.values() for sha in other["changes"].get(PHOTOS_FIELD) or ()}
    session.store.drop_held_blobs(set(kept["changes"].get(PHOTOS_FIELD) or ()) - still_wanted)


def draft_count(session: Session) -> int:
    """How many forms were left unsaved (signing out would lose them)."""
    return len(_drafts(session))


def _drafts(session: Session) -> dict[str, dict]:
    raw = session.store.get_meta(DRAFTS_META_KEY)
    return json.loads(raw) if raw else {}


def _save(session: Session, drafts: dict[str, dict]) -> None:
    session.store.set_meta(DRAFTS_META_KEY, json.dumps(drafts, ensure_ascii=False) if drafts else None)
