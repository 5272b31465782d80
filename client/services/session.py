"""An unlocked device: the decrypted store, the sync engine and who the user is.

Every screen's service goes through a ``Session`` for reads and edits, so the rules of
writing (a fresh clock stamp, the user's grid, photos downscaled before they are stored)
live here once.

Time: ``Session.now()`` is the one "now" of the app, and it is the server's time, not the
phone's. Cheap phones lose their clock when the battery runs flat (back to 1970 or 2000), drift,
or are set by hand to the wrong hour or zone; a visit stamped with such a time, or a follow-up
counted "due" on the wrong day, is wrong for everyone who reads it later. Decisions:

- The correction is the sync engine's own (``stored_clock_offset_ms``: server time minus the
  phone's wall clock, learned from every reply's ``server_time`` and kept encrypted in the
  store), so a record's ``visited_at`` and its hlc stamp agree. Enrollment stores the first one:
  an enrolled phone is corrected from its first record on. A store that never heard the server
  (none today; kept for safety) uses the wall clock as it is.
- The engine keeps the offset at 0 while the clocks agree within the protocol's allowed skew
  (5 minutes), so small drift is not corrected, and the home screen speaks up only past that
  same 5 minutes (``wrong_clock_offset``): the size of the difference in words, and that the times
  are corrected, until the offset is back to 0.
- A user who puts the phone clock right (or wrong) after the last sync, offline, is followed:
  ``corrected_clock_offset_ms`` takes off how far the wall clock was moved since the offset was
  learned, told by a clock nobody sets that counts sleep too (``sync.client.boot_clock``). After
  a reboot that cannot be told, and the offset of the last sync stands until the next one. The
  hlc stamps keep the last sync's offset until then (they only order edits; a stamp too far
  ahead is re-stamped by the server), so in that window they and ``visited_at`` may disagree.
- "Today" is that corrected moment in the phone's time zone. A zone set wrong by hand is not
  corrected (the server's time says nothing of zones): the moment is right, but the day may
  turn at the wrong hour.
- The PIN lock (``client.vault``) is left on its own clock: it runs before the store (and the
  offset in it) is open, and caps a lock at its own length from now, so a moved clock can
  neither lengthen it nor, through this correction, shorten it more than before.
"""

from __future__ import annotations

import datetime
import json
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from client.services.field_limits import FormInvalid
from client.services.households import HouseholdIndex
from client.services.photos import downscale_photo
from shared_schema.messages import MAX_CLOCK_SKEW_MS

ACCOUNT_META_KEY = "app.account"
LAST_SYNC_META_KEY = "app.last_sync"
# Past this the phone's clock is called wrong: the skew the protocol tolerates before it corrects.
CLOCK_NOTICE_AFTER = datetime.timedelta(milliseconds=MAX_CLOCK_SKEW_MS)


@dataclass
class Account:
    """Who this device belongs to, as the server said at enrollment."""

    device_id: str
    user_id: str
    user_name: str
    role: str
    server_url: str
    grids: list[dict] = field(default_factory=list)  # [{id, name, community}]

    @property
    def grid_ids(self) -> list[str]:
        return [g["id"] for g in self.grids]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Session:
    """The open store and engine of an unlocked device.

    Args:
        store: a ``sync.client.LocalStore`` opened with the data key.
        engine: the ``sync.client.SyncEngine`` over that store.
        account: the enrolled user.
        clock: the phone's wall clock (UTC), which the server's offset corrects; injected so
            tests can pin "today" and play a phone whose clock is wrong.
        boot_clock: the clock that tells whether ``clock`` was moved by hand since the last
            sync (``sync.client.boot_clock.read_boot_clock``); injected with ``clock``.
    """

    def __init__(
        self,
        store: Any,
        engine: Any,
        account: Account,
        clock: Callable[[], datetime.datetime] = utc_now,
        transport_factory: Callable[[str], Any] | None = None,
        boot_clock: Callable[[], Any] | None = None,
    ):
        self.store = store
        # An engine, or a function that makes one: the engine pulls in the HTTP stack (0.4 s of
        # imports on this machine, seconds on a cheap phone), which the home screen does not need.
        self._engine = None if callable(engine) and not hasattr(engine, "stamp") else engine
        self._engine_factory = engine if self._engine is None else None
        self._engine_lock = threading.Lock()
        self.account = account
        self.clock = clock
        self.boot_clock = boot_clock
        self.transport_factory = transport_factory
        # The UI thread edits while the sync thread pulls; the index swap is guarded.
        self._index_lock = threading.Lock()
        self._index: HouseholdIndex | None = None
        # Grows with every local edit and every sync: derived views (the home's follow-ups) cache on it.
        self.generation = 0
        self.cache: dict[str, tuple[int, object]] = {}
        self.closed = False

    @property
    def engine(self) -> Any:
        """The sync engine, made on first use (by the background sync, or the first edit)."""
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = self._engine_factory()
        return self._engine

    # ---- time ------------------------------------------------------------------------

    def now(self) -> datetime.datetime:
        """The server-corrected time (see the module's docstring): what the app records and reasons with."""
        wall = self.clock()
        return wall + self._clock_offset_at(wall)

    def today(self) -> datetime.date:
        # "Today" is the worker's local day, not UTC's: a follow-up due today shows from midnight in Beijing.
        return self.now().astimezone().date()

    def wrong_clock_offset(self) -> datetime.timedelta | None:
        """How far the phone's clock is behind the server's (negative: ahead), when it is off by
        more than the user should be told about; None when it is right, or before any sync."""
        offset = self._clock_offset_at(self.clock())
        return offset if abs(offset) > CLOCK_NOTICE_AFTER else None

    def _clock_offset_at(self, wall: datetime.datetime) -> datetime.timedelta:
        from sync.client.boot_clock import read_boot_clock
        from sync.client.engine import corrected_clock_offset_ms

        reading = (self.boot_clock or read_boot_clock)()
        offset_ms = corrected_clock_offset_ms(self.store, int(wall.timestamp() * 1000), reading)
        return datetime.timedelta(milliseconds=offset_ms or 0)

    # ---- records ---------------------------------------------------------------------

    def create(self, entity: str, fields: dict) -> str:
        """A new record in the user's first grid unless ``fields`` names one; returns its id."""
        from sync.client.ids import new_id

        record_id = new_id()
        fields = {"grid_id": self.default_grid_id(), **fields}
        self.edit(entity, record_id, fields)
        return record_id

    def edit(self, entity: str, record_id: str, fields: dict) -> None:
        """Record an edit locally (it waits in the outbox for the next sync).

        Raises FormInvalid when the store refuses it: the forms check what a user can get wrong
        first, so this is the last word for anything they missed, or a full or broken disk.
        """
        from sync.errors import InvalidEdit, StorageError

        try:
            self.store.edit(entity, record_id, fields, hlc=self.engine.stamp())
        except InvalidEdit:
            raise FormInvalid("form.error.invalid") from None
        except StorageError:
            raise FormInvalid("form.error.storage") from None
        self.generation += 1
        if entity == "household":
            self.refresh_households()

    def get(self, entity: str, record_id: str):
        """The record with my unsynced edits on top, or None."""
        record = self.store.get(entity, record_id)
        return None if record is None or record.deleted else record

    def records(self, entity: str, **filters) -> list:
        return [r for r in self.store.records(entity, **filters) if not r.deleted]

    def default_grid_id(self) -> str:
        return self.account.grid_ids[0] if self.account.grids else ""

    def grid_name(self, grid_id: str) -> str:
        for grid in self.account.grids:
            if grid["id"] == grid_id:
                return grid.get("name", "")
        return ""

    # ---- photos ----------------------------------------------------------------------

    def add_photo(self, data: bytes) -> str:
        """Downscale a photo, keep it encrypted in the blob cache; returns its SHA-256.

        The photo is held on the phone, not sent, until a saved record names it: a form left
        unsaved or discarded must not put a resident's photo on the server.
        Raises NotAPhoto for bytes that are no image, FormInvalid when the phone cannot store it.
        """
        from sync.client.store import BLOB_HELD
        from sync.errors import StorageError

        scaled = downscale_photo(data)
        try:
            return self.store.put_blob(scaled, state=BLOB_HELD)
        except StorageError:
            raise FormInvalid("form.error.storage") from None

    def cached_photo(self, sha256: str) -> bytes | None:
        """A photo's bytes if they are on the phone; never waits on the network (safe on the UI thread)."""
        return self.store.read_blob(sha256)

    def photo(self, sha256: str) -> bytes | None:
        """A photo's bytes from the cache (or the server); None when it cannot be had now."""
        from sync.errors import SyncError

        try:
            return self.engine.fetch_blob(sha256)
        except SyncError:
            return None

    # ---- the household index ---------------------------------------------------------

    @property
    def households(self) -> HouseholdIndex:
        with self._index_lock:
            if self._index is None:
                self._index = HouseholdIndex.build(self.store.records("household"))
            return self._index

    def cached(self, name: str, compute: Callable[[], object]) -> object:
        """``compute()``, reused until the next edit or sync."""
        hit = self.cache.get(name)
        if hit is not None and hit[0] == self.generation:
            return hit[1]
        generation = self.generation
        value = compute()
        self.cache[name] = (generation, value)
        return value

    def refresh_households(self) -> None:
        """Rebuild the index after a sync brought changes (also invalidates cached views)."""
        self.generation += 1
        index = HouseholdIndex.build(self.store.records("household"))
        with self._index_lock:
            self._index = index

    # ---- small state kept in the encrypted meta ---------------------------------------

    def pending_count(self) -> int:
        return self.store.pending_count()

    def save_last_sync(self, summary: dict) -> None:
        self.store.set_meta(LAST_SYNC_META_KEY, json.dumps(summary, ensure_ascii=False))

    def last_sync(self) -> dict | None:
        raw = self.store.get_meta(LAST_SYNC_META_KEY)
        return json.loads(raw) if raw else None

    def change_server(self, server_url: str) -> None:
        """Sync with another address from now on (the server moved, or a typo at enrollment)."""
        if self.transport_factory is None:
            raise RuntimeError("this session cannot change its server")
        # Waits for a running sync to finish, then drops the old address's token.
        self.engine.set_transport(self.transport_factory(server_url))
        self.account.server_url = server_url
        save_account(self.store, self.account)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._engine is not None:
                self._engine.close()
            self.store.close()


def save_account(store: Any, account: Account) -> None:
    store.set_meta(ACCOUNT_META_KEY, json.dumps(asdict(account), ensure_ascii=False))


def load_account(store: Any) -> Account | None:
    raw = store.get_meta(ACCOUNT_META_KEY)
    return Account(**json.loads(raw)) if raw else None
