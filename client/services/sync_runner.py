"""Sync in the background: one run at a time, progress and the outcome handed back to the UI.

The runner knows nothing of Kivy: it is given ``deliver``, which the app sets to a
``Clock.schedule_once`` wrapper (so callbacks run on the UI thread) and tests leave as a
direct call. A revoked device is handled here, once, for every way a sync can start.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

from client.services.session import Session

Deliver = Callable[[Callable[[], None]], None]

log = logging.getLogger(__name__)


def call_now(fn: Callable[[], None]) -> None:
    fn()


class SyncState(str, enum.Enum):
    NEVER = "never"
    RUNNING = "running"
    DONE = "done"  # everything went up and came down
    OFFLINE = "offline"  # the server could not be reached; edits wait, nothing is lost
    FAILED = "failed"  # the server refused for a reason a retry will not fix
    AUTH = "auth"  # the server no longer knows this device: enroll again
    UPGRADE = "upgrade"  # the server needs a newer app
    RETIRED = "retired"  # revoked without wipe: data kept, no more syncing
    WIPED = "wiped"  # revoked as lost or stolen: data erased


@dataclass
class SyncOutcome:
    state: SyncState
    finished_at: str = ""
    pushed: int = 0
    pulled: int = 0
    merged: int = 0
    rejected: int = 0
    conflicts: int = 0
    photos_up: int = 0
    photos_down: int = 0
    set_aside: int = 0  # records the server sent that this app cannot open yet
    pending_after: int = 0
    detail: str = ""

    def as_dict(self) -> dict:
        return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, raw: dict) -> "SyncOutcome":
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        known["state"] = SyncState(known.get("state", "never"))
        return cls(**known)


@dataclass
class SyncProgressView:
    """What the progress bar shows: a phase and a fraction from 0 to 1."""

    phase: str = ""
    fraction: float = 0.0


def _get(obj: Any, *names: str, default: Any = 0) -> Any:
    for name in names:
        if isinstance(obj, dict) and name in obj:
            return obj[name]
        if hasattr(obj, name):
            return getattr(obj, name)
    return default


def outcome_from_report(report: Any, pending_after: int, now: str) -> SyncOutcome:
    """Translate the engine's SyncReport into what the app keeps and shows."""
    return SyncOutcome(
        state=SyncState.DONE,
        finished_at=now,
        pushed=int(_get(report, "pushed", "applied", default=0) or 0),
        pulled=int(_get(report, "pulled", default=0) or 0),
        merged=int(_get(report, "merged", default=0) or 0),
        rejected=int(_get(report, "rejected", default=0) or 0),
        conflicts=int(_get(report, "conflicts", default=0) or 0),
        photos_up=int(_get(report, "blobs_uploaded", "photos_up", default=0) or 0),
        photos_down=int(_get(report, "blobs_downloaded", "photos_down", default=0) or 0),
        set_aside=int(_get(report, "set_aside", default=0) or 0),
        pending_after=pending_after,
    )


def progress_view(progress: Any) -> SyncProgressView:
    phase = str(_get(progress, "phase", default=""))
    done = float(_get(progress, "done", default=0) or 0)
    total = float(_get(progress, "total", default=0) or 0)
    return SyncProgressView(phase, min(done / total, 1.0) if total else 0.0)


class BackgroundSync:
    """Runs ``engine.sync_with_retry`` on a worker thread.

    Args:
        session: the unlocked device.
        wipe_device: erases the installation (called when the server says the device was lost).
        deliver: runs a callback on the UI thread.
        on_progress / on_done: UI callbacks, delivered through ``deliver``.
    """

    def __init__(
        self,
        session: Session,
        wipe_device: Callable[[], None],
        deliver: Deliver = call_now,
        on_progress: Callable[[SyncProgressView], None] | None = None,
        on_done: Callable[[SyncOutcome], None] | None = None,
        attempts: int = 3,
    ):
        self._session = session
        # Few quick retries: a worker in a stairwell wants "offline, saved" soon, not after a minute.
        self.attempts = attempts
        self._wipe_device = wipe_device
        self._deliver = deliver
        self.on_progress = on_progress
        self.on_done = on_done
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop_auto = threading.Event()
        self._auto_thread: threading.Thread | None = None
        self.last: SyncOutcome | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def retired(self) -> bool:
        last = self.last or self._stored_outcome()
        return last is not None and last.state in (SyncState.RETIRED, SyncState.WIPED)

    def _stored_outcome(self) -> SyncOutcome | None:
        if self._session.closed:
            return None
        raw = self._session.last_sync()
        return SyncOutcome.from_dict(raw) if raw else None

    def start(self) -> bool:
        """Start a sync unless one runs or the device is retired. Returns whether one started."""
        with self._lock:
            if self.running or self._session.closed or self.retired():
                return False
            self._thread = threading.Thread(target=self._run, name="fieldloop-sync", daemon=True)
            self._thread.start()
            return True

    def wait(self, timeout: float | None = None) -> SyncOutcome | None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.last

    def start_auto(self, every_seconds: float = 120.0) -> None:
        """Try a sync now and then every few minutes; an offline try costs one failed connect."""
        if self._auto_thread is not None:
            return

        def loop() -> None:
            while not self._stop_auto.wait(every_seconds):
                if not self._session.closed:
                    self.start()

        self._auto_thread = threading.Thread(target=loop, name="fieldloop-autosync", daemon=True)
        self._auto_thread.start()

    def stop_auto(self) -> None:
        self._stop_auto.set()

    def run_now(self) -> SyncOutcome:
        """Sync on the calling thread (tests, and the worker thread itself)."""
        from sync.errors import AuthError, DeviceRevoked, SyncError, TransportError, UpgradeRequired

        session = self._session
        now = session.now().isoformat()
        try:
            report = session.engine.sync_with_retry(self.attempts, 1.0, max_delay=4.0, progress=self._progress)
            outcome = outcome_from_report(report, session.pending_count(), now)
            session.refresh_households()
        except DeviceRevoked as exc:
            if exc.wipe:
                outcome = SyncOutcome(SyncState.WIPED, finished_at=now)
                session.closed = True
                self._wipe_device()
            else:
                outcome = SyncOutcome(SyncState.RETIRED, finished_at=now, pending_after=self._pending())
        except TransportError as exc:
            outcome = SyncOutcome(SyncState.OFFLINE, finished_at=now, pending_after=self._pending(), detail=str(exc))
        except AuthError as exc:
            outcome = SyncOutcome(SyncState.AUTH, finished_at=now, pending_after=self._pending(), detail=str(exc))
        except UpgradeRequired as exc:
            outcome = SyncOutcome(SyncState.UPGRADE, finished_at=now, pending_after=self._pending(), detail=str(exc))
        except SyncError as exc:
            outcome = SyncOutcome(SyncState.FAILED, finished_at=now, pending_after=self._pending(), detail=str(exc))
        except Exception as exc:
            # A bug below (the engine lets only SyncErrors out by design): left to escape, it
            # would end the worker thread without a word, and the UI would show "syncing" until
            # restarted. Said as a failed sync instead; the edits wait in the outbox as ever.
            log.exception("sync failed on an unexpected error")
            detail = f"{type(exc).__name__}: {exc}"
            outcome = SyncOutcome(SyncState.FAILED, finished_at=now, pending_after=self._pending(), detail=detail)
        self.last = outcome
        if outcome.state is not SyncState.WIPED and not session.closed:
            session.save_last_sync(outcome.as_dict())
        return outcome

    def _pending(self) -> int:
        try:
            return self._session.pending_count()
        except Exception:  # the store may already be closed by a sign-out racing the sync
            return 0

    def _run(self) -> None:
        outcome = self.run_now()
        if self.on_done is not None:
            callback = self.on_done
            self._deliver(lambda: callback(outcome))

    def _progress(self, progress: Any) -> None:
        if self.on_progress is not None:
            view = progress_view(progress)
            callback = self.on_progress
            self._deliver(lambda: callback(view))
