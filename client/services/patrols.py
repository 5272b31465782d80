"""Patrols (巡查): walk the grid, note hazards, take photos, keep the GPS track where there is one.

A patrol is saved as soon as it starts and again at every hazard, photo and stop, so a phone
that dies halfway up a stairwell loses at most the last few track points. The running patrol's
id is kept in the store's meta: when Android kills the app mid-patrol (no ``on_stop``), the next
start picks the patrol up where it was, or, when it was last heard of more than
``PICK_UP_WITHIN`` ago (the phone was put away), ends it at that moment.
"""

from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass, field

from client.phone.location import Fix, LocationProvider, NoLocation
from client.services.field_limits import check_photo_room, check_text
from client.services.session import Session

COMMON_HAZARDS = [
    "blocked_exit",
    "wires",
    "gas",
    "fire_equipment",
    "drain",
    "falling_objects",
    "ebike_charging",
    "rubbish",
]
# Track points are written in batches: each point on its own would flood the outbox.
TRACK_FLUSH_POINTS = 20
RUNNING_PATROL_META_KEY = "app.patrol.running"
# A patrol last heard of longer ago than this is over, not interrupted.
PICK_UP_WITHIN = datetime.timedelta(hours=12)


@dataclass
class PatrolState:
    patrol_id: str
    hazards: list[str] = field(default_factory=list)
    photos: list[str] = field(default_factory=list)
    notes: str = ""
    track: list[list] = field(default_factory=list)
    unsaved_points: int = 0


class PatrolRecorder:
    """One patrol at a time: start, add hazards, notes and photos, stop."""

    def __init__(self, session: Session, location: LocationProvider | None = None):
        self._session = session
        self._location = location or NoLocation()
        self._lock = threading.Lock()
        self.current: PatrolState | None = None
        self._pick_up_unfinished()

    @property
    def has_gps(self) -> bool:
        return self._location.available

    def start(self) -> str:
        if self.current is not None:
            return self.current.patrol_id
        patrol_id = self._session.create("patrol", {"started_at": self._session.now().isoformat(), "ended_at": None})
        self._session.store.set_meta(RUNNING_PATROL_META_KEY, patrol_id)
        self.current = PatrolState(patrol_id)
        self._location.start(self._on_fix)
        return patrol_id

    def add_hazard(self, hazard: str) -> None:
        state = self._require()
        if hazard and hazard not in state.hazards:
            self._session.edit("patrol", state.patrol_id, {"hazards": sorted([*state.hazards, hazard])})
            state.hazards.append(hazard)

    def add_photo(self, data: bytes) -> str:
        """Raises NotAPhoto or FormInvalid (too many photos, phone storage) and changes nothing then."""
        state = self._require()
        check_photo_room(state.photos)
        sha = self._session.add_photo(data)
        if sha not in state.photos:
            self._session.edit("patrol", state.patrol_id, {"photos": sorted([*state.photos, sha])})
            state.photos.append(sha)
        return sha

    def set_notes(self, notes: str) -> None:
        """Raises FormInvalid (too long, a NUL) and keeps the notes stored before."""
        state = self._require()
        notes = check_text(notes, "field.patrol.notes")
        if notes != state.notes:
            self._session.edit("patrol", state.patrol_id, {"notes": notes})
            state.notes = notes

    def stop(self, notes: str | None = None) -> str:
        """End the patrol. Raises FormInvalid for notes it cannot keep; the patrol then goes on."""
        state = self._require()
        if notes is not None:
            notes = check_text(notes, "field.patrol.notes")
        self._location.stop()
        fields: dict = {"ended_at": self._session.now().isoformat()}
        if notes is not None and notes != state.notes:
            state.notes = notes
            fields["notes"] = notes
        with self._lock:
            if state.unsaved_points:
                fields["track"] = list(state.track)
                state.unsaved_points = 0
        self._session.edit("patrol", state.patrol_id, fields)
        self._session.store.set_meta(RUNNING_PATROL_META_KEY, None)
        self.current = None
        return state.patrol_id

    def _pick_up_unfinished(self) -> None:
        patrol_id = self._session.store.get_meta(RUNNING_PATROL_META_KEY)
        if not patrol_id:
            return
        record = self._session.get("patrol", patrol_id)
        if record is None or record.deleted or record.fields.get("ended_at"):
            self._session.store.set_meta(RUNNING_PATROL_META_KEY, None)
            return
        fields = record.fields
        last_heard = _last_heard(fields)
        if last_heard is not None and self._session.now() - last_heard > PICK_UP_WITHIN:
            self._session.edit("patrol", patrol_id, {"ended_at": last_heard.isoformat()})
            self._session.store.set_meta(RUNNING_PATROL_META_KEY, None)
            return
        self.current = PatrolState(patrol_id, hazards=list(fields.get("hazards") or ()),
                                   photos=list(fields.get("photos") or ()), notes=fields.get("notes") or "",
                                   track=[list(point) for point in fields.get("track") or ()])
        self._location.start(self._on_fix)

    def _on_fix(self, fix: Fix) -> None:
        # Called on the GPS thread; the edit is small and the store serialises writers.
        state = self.current
        if state is None:
            return
        with self._lock:
            state.track.append([fix[0], fix[1], fix[2]])
            state.unsaved_points += 1
            flush = state.unsaved_points >= TRACK_FLUSH_POINTS
            if flush:
                state.unsaved_points = 0
                track = list(state.track)
        if flush:
            self._session.edit("patrol", state.patrol_id, {"track": track})

    def _require(self) -> PatrolState:
        if self.current is None:
            raise RuntimeError("no patrol is running")
        return self.current


def _last_heard(fields: dict) -> datetime.datetime | None:
    """The patrol's latest known moment: its last track point, else its start."""
    track = fields.get("track") or ()
    if track:
        return datetime.datetime.fromtimestamp(track[-1][2] / 1000, datetime.UTC)
    started = fields.get("started_at")
    return datetime.datetime.fromisoformat(started) if started else None


def recent_patrols(session: Session, limit: int = 50) -> list:
    rows = session.records("patrol")
    rows.sort(key=lambda r: r.fields.get("started_at", ""), reverse=True)
    return rows[:limit]
