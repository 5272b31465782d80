"""Property: phones edit offline, sync, crash, lose replies and restart in any order; once everyone
has synced, every phone holds exactly the server's records, no mutation ran twice, and every
edit ended with a result the phone kept (nothing vanished)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sync.client import DeviceIdentity, LocalStore, PlainCipher, SyncEngine
from sync.client.store import META_CURSOR
from sync.errors import TransportError
from tests.sync_client.fake_server import GRID, FakeServer

PHONES = 3
phone_index = st.integers(min_value=0, max_value=PHONES - 1)
pick = st.integers(min_value=0, max_value=10_000)
edits = st.fixed_dictionaries(
    {},
    optional={
        "phone": st.sampled_from(["110", "120", "13800000000"]),
        "notes": st.sampled_from(["独居", "需回访", "已上报"]),
        "members": st.integers(min_value=0, max_value=6),
        "tags": st.lists(st.sampled_from(["elderly", "veteran", "disabled"]), unique=True, max_size=3),
    },
).filter(bool)


class Phones(RuleBasedStateMachine):
    """Three phones and one server; see the module docstring for the invariants."""

    @initialize()
    def start(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="fieldloop-prop-"))
        self.server = FakeServer()
        self.stores: list[LocalStore] = []
        self.engines: list[SyncEngine] = []
        self.mids: list[set[str]] = []
        for n in range(PHONES):
            store = LocalStore(self.folder / f"p{n}" / "store.db", PlainCipher())
            engine = SyncEngine(
                store, self.server.connect(), DeviceIdentity(store), sleep=lambda _s: None, pull_limit=2
            )
            engine.enroll(self.server.new_code())
            self.stores.append(store)
            self.engines.append(engine)
            self.mids.append(set())

    def teardown(self) -> None:
        try:
            if hasattr(self, "server"):
                self.everyone_syncs_and_all_agree()
        finally:
            self._close()

    def _close(self) -> None:
        for store in getattr(self, "stores", []):
            store.close()
        if hasattr(self, "folder"):
            shutil.rmtree(self.folder, ignore_errors=True)

    def _queued(self, n: int) -> None:
        self.mids[n] |= {e.mid for e in self.stores[n].pending_mutations(10_000)}

    def _visible(self, n: int) -> list[str]:
        return [r.id for r in self.stores[n].records("household")]

    @rule(n=phone_index, fields=edits)
    def create(self, n: int, fields: dict) -> None:
        self.engines[n].create("household", {"grid_id": GRID, "address": "3幢", **fields})
        self._queued(n)

    @rule(n=phone_index, which=pick, fields=edits)
    def edit(self, n: int, which: int, fields: dict) -> None:
        ids = self._visible(n)
        if ids:
            self.engines[n].edit("household", ids[which % len(ids)], fields)
            self._queued(n)

    @rule(n=phone_index, which=pick)
    def delete(self, n: int, which: int) -> None:
        ids = self._visible(n)
        if ids:
            self.engines[n].delete("household", ids[which % len(ids)])
            self._queued(n)

    @rule(n=phone_index)
    def sync(self, n: int) -> None:
        self.engines[n].sync()

    @rule(n=phone_index, which=pick, fields=edits)
    def edit_while_syncing(self, n: int, which: int, fields: dict) -> None:
        # The user edits on the UI thread while a sync pulls: the edit is still pending when a
        # later page brings the server's new state of the same record.
        done = []

        def on_progress(progress) -> None:  # noqa: ANN001
            if done or progress.phase != "pull":
                return
            cursor = int(self.stores[n].get_meta(META_CURSOR) or 0)
            coming = sorted(i for (_, i), seq in self.server.changed_at.items() if seq > cursor)
            candidates = [i for i in coming if i in set(self._visible(n))] or self._visible(n)
            if candidates:
                done.append(self.engines[n].edit("household", candidates[which % len(candidates)], fields))

        self.engines[n].sync(progress=on_progress)
        self.mids[n] |= {mid for mid in done if mid}

    @rule(n=phone_index)
    def push_reply_lost(self, n: int) -> None:
        self.server.lose_push_reply_once = True
        try:
            self.engines[n].sync()
        except TransportError:
            pass
        self.server.lose_push_reply_once = False

    @rule(n=phone_index)
    def crash_after_push_before_results(self, n: int) -> None:
        # The server commits, the phone dies before its results transaction: nothing stored.
        engine = self.engines[n]
        entries = self.stores[n].pending_mutations(500)
        if entries:
            engine.transport.push(engine.ensure_token(), [e.to_mutation() for e in entries])

    @rule(n=phone_index)
    def pull_fails(self, n: int) -> None:
        self.server.fail_pulls = 1
        try:
            self.engines[n].sync()
        except TransportError:
            pass
        self.server.fail_pulls = 0

    @rule(n=phone_index)
    def app_restarts(self, n: int) -> None:
        store = self.stores[n]
        self.engines[n] = SyncEngine(
            store, self.server.connect(), DeviceIdentity(store), sleep=lambda _s: None, pull_limit=2
        )

    @invariant()
    def no_mutation_ran_twice(self) -> None:
        if hasattr(self, "server"):
            assert len(self.server.applied_mids) == len(set(self.server.applied_mids))

    @precondition(lambda self: hasattr(self, "server"))
    @rule()
    def everyone_syncs_and_all_agree(self) -> None:
        for _ in range(2):  # a second round brings each phone what the others pushed after it
            for engine in self.engines:
                engine.sync()
        expected = {
            r.id: (r.version, r.deleted, r.fields) for r in (self.server.record(e, i) for (e, i) in self.server.records)
        }
        for n, store in enumerate(self.stores):
            assert store.pending_count() == 0
            held = {r.id: (r.version, r.deleted, r.fields) for r in store.records("household", include_deleted=True)}
            assert held == expected
            # G1: every edit the phone made has a result it kept: applied, merged or rejected.
            assert all(store.result(mid) is not None for mid in self.mids[n])


Phones.TestCase.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_phones_converge_whatever_the_order_of_edits_syncs_and_failures = Phones.TestCase
