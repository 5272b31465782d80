"""The background sync against engines that fail in every way: the UI always hears how a run ended."""

from __future__ import annotations

import datetime

from client.services.sync_runner import BackgroundSync, SyncState
from sync.errors import ProtocolError


class FailingEngine:
    def __init__(self, error: Exception):
        self.error = error

    def stamp(self) -> str:
        return "0000000000001-0000-stub"

    def sync_with_retry(self, *args, **kwargs):  # noqa: ANN002, ANN003
        raise self.error


class StubSession:
    """What BackgroundSync uses of a Session, with nothing behind it."""

    def __init__(self, engine: FailingEngine):
        self.engine = engine
        self.closed = False
        self.saved: list[dict] = []

    def now(self) -> datetime.datetime:
        return datetime.datetime(2026, 12, 3, 9, 0, tzinfo=datetime.UTC)

    def pending_count(self) -> int:
        return 2

    def last_sync(self) -> dict | None:
        return self.saved[-1] if self.saved else None

    def save_last_sync(self, summary: dict) -> None:
        self.saved.append(summary)

    def refresh_households(self) -> None:
        pass


def test_a_bug_below_the_runner_ends_the_run_as_failed_and_the_ui_hears_of_it():
    session = StubSession(FailingEngine(TypeError("'int' object is not iterable")))
    heard = []
    runner = BackgroundSync(session, wipe_device=lambda: None, on_done=heard.append)
    assert runner.start()
    outcome = runner.wait(10)
    assert outcome is not None and outcome.state is SyncState.FAILED
    assert (outcome.detail, outcome.pending_after) == ("TypeError: 'int' object is not iterable", 2)
    assert heard == [outcome] and session.saved[-1]["state"] == "failed"
    assert not runner.running and runner.start()  # the next try is not locked out
    runner.wait(10)


def test_a_protocol_error_is_a_failed_run_with_the_servers_words():
    session = StubSession(FailingEngine(ProtocolError("malformed", "the server sent a record at version -3")))
    outcome = BackgroundSync(session, wipe_device=lambda: None).run_now()
    assert outcome.state is SyncState.FAILED and "version -3" in outcome.detail
