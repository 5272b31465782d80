"""The device's sync engine: enrollment, tokens, and one sync round (blobs up, push, pull, blobs down).

One round, in order:

1. upload the photos made here that the server lacks (resuming cut uploads);
2. push the outbox oldest first, in batches of at most 500 mutations and 4 MiB; each batch's
   results are stored, and its entries retired, in one transaction;
3. pull pages until ``more`` is false; each page and its cursor are applied in one transaction;
4. download the photos that pulled records name and this device lacks.

Each push reply and pull page is checked (``server_replies``) before any of it is stored; one
that no v1 server could have sent is refused whole as ``ProtocolError``. A record this app
cannot hold (an entity or a value it does not know) is set aside while the rest is applied, and
applied at the first round that can read it (after an upgrade).

A crash or a cut connection anywhere repeats work on the next round and loses none: the same
outbox entries go again with the same ``mid`` (the server answers with its first result), and
a pull restarts from the last cursor stored with its page. A cursor the server refuses as
``400 malformed`` (it no longer takes it for its own: it was issued before the server signed
its cursors, or before its database was replaced) is dropped, and the pull starts again from
the beginning, once a round.

The engine keeps the device's hybrid logical clock (node = device id), persisted in the
store's meta; it observes every ``server_time`` and every pulled ``hlc``; ``stamp()`` is the
stamp for a new local edit.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from shared_schema.messages import (
    MAX_CLOCK_SKEW_MS,
    MAX_PUSH_BYTES,
    MAX_PUSH_MUTATIONS,
    EnrollReply,
    MutationStatus,
    Record,
    Result,
    ResultError,
)
from sync.client.blobs import BlobTransfer
from sync.client.boot_clock import BootClock, BootReading, clock_anchor, read_boot_clock, wall_moved_ms
from sync.client.identity import DeviceIdentity
from sync.client.server_replies import check_pull_reply, check_push_reply, check_record
from sync.client.store import (
    META_CLOCK_ANCHOR,
    META_CLOCK_LAST,
    META_CLOCK_OFFSET,
    META_CURSOR,
    META_LAST_SYNC,
    META_RETIRED,
    META_SERVER_URL,
    LocalStore,
    OutboxEntry,
)
from sync.client.transport import Transport
from sync.errors import (
    AuthError,
    DeviceRevoked,
    NotEnrolled,
    ProtocolError,
    SyncError,
    TransportError,
)
from sync.hlc import HybridClock, is_too_far_ahead, wall_now_ms

META_USER = "enroll.user"
META_GRIDS = "enroll.grids"

# Keep a margin under the server's body limit for the envelope and msgpack framing.
_PUSH_BYTES_BUDGET = MAX_PUSH_BYTES - 64 * 1024
# Refresh a token this long before the server would stop taking it.
_TOKEN_MARGIN_S = 60.0
# Statuses that blame the batch's content (too big, a mutation of the wrong shape) rather than
# the request: such a batch is split to find the mutation at fault, which is then kept as a
# local rejection. Not 400: a malformed request is our transport's fault, and splitting on it
# would turn every queued edit into a rejection.
_BATCH_FAULTS = frozenset({413, 422})
# The latest server_time the clock follows (in the year 2255): a stamp's wall time has 13 digits,
# and a clock set near that edge would soon issue stamps nobody can read.
_LATEST_SERVER_TIME_MS = 9_000_000_000_000


@dataclasses.dataclass(frozen=True)
class SyncProgress:
    """Where a sync round is, for a progress bar.

    Attributes:
        phase: ``upload``, ``push``, ``pull``, ``download`` or ``done``.
        done: items finished in this phase (blobs, mutations or records).
        total: items known to be in this phase, or None when unknown (pull).
    """

    phase: str
    done: int
    total: int | None = None


@dataclasses.dataclass
class SyncReport:
    """What one sync round did.

    Attributes:
        pushed: mutations that got a result this round.
        applied, merged, rejected: those results by status.
        pulled: records applied from pulled pages.
        conflicts: conflict entries stored for the user.
        blobs_uploaded, blobs_downloaded: photos moved.
        set_aside: records this round kept apart because the app cannot hold them (see
            ``server_replies``); ``readmitted``: those applied this round at last.
        errors: problems that did not stop the round (a photo the server would not give).
        duration: seconds the round took.
        finished_at: when it ended (UTC).
    """

    pushed: int = 0
    applied: int = 0
    merged: int = 0
    rejected: int = 0
    pulled: int = 0
    conflicts: int = 0
    blobs_uploaded: int = 0
    blobs_downloaded: int = 0
    set_aside: int = 0
    readmitted: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    duration: float = 0.0
    finished_at: datetime.datetime | None = None


ProgressCallback = Callable[[SyncProgress], None]


class SyncEngine:
    """Syncs one local store with one server on behalf of one enrolled device.

    Thread-safe: the app may edit through the store (or ``create``/``edit``/``delete`` here)
    on its UI thread while ``sync`` runs on another; only one sync runs at a time.

    Args:
        store: the device's local store.
        transport: the server (``HttpTransport``, or a fake in tests).
        identity: the device's key pair and id.
        clock: the hybrid clock to stamp edits with; by default one with node = device id,
            restored from the store's meta.
        pull_limit: records per pulled page.
        push_batch: mutations per push (at most 500).
        download_blobs: fetch photos named by pulled records at the end of each round;
            False leaves them for ``fetch_blob``.
        sleep: how ``sync_with_retry`` waits (injected by tests).
        wall: the physical clock in ms (injected by tests).
        boot_clock: a clock nobody sets, to tell later whether ``wall`` was moved by hand
            (``sync.client.boot_clock``; injected by tests).
        forget_key: called first when the server orders a wipe, before the store is erased:
            an app keeping the store's key outside it (wrapped under a PIN) forgets it there,
            so a wipe cut short (the app killed mid-erase) leaves nothing anyone can read.
    """

    def __init__(
        self,
        store: LocalStore,
        transport: Transport,
        identity: DeviceIdentity,
        *,
        clock: HybridClock | None = None,
        pull_limit: int = 500,
        push_batch: int = MAX_PUSH_MUTATIONS,
        download_blobs: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], int] = wall_now_ms,
        boot_clock: BootClock = read_boot_clock,
        forget_key: Callable[[], None] | None = None,
    ):
        self.store = store
        self._forget_key = forget_key
        self.transport = transport
        self.identity = identity
        self.pull_limit = pull_limit
        self.push_batch = min(push_batch, MAX_PUSH_MUTATIONS)
        self.download_blobs = download_blobs
        self._sleep = sleep
        self._wall = wall
        self._boot_clock = boot_clock
        # Where the wall and boot clocks stood at the last server_time (kept in the store's meta).
        self._anchor: str | None = store.get_meta(META_CLOCK_ANCHOR)
        self.blobs = BlobTransfer(store, transport)
        self._sync_lock = threading.Lock()
        self._token: str | None = None
        self._token_deadline = 0.0
        self.clock = clock if clock is not None else self._restore_clock(identity.device_id or "unenrolled")

    def set_transport(self, transport: Transport) -> None:
        """Talk to the server through another transport from now on (the server moved).

        The cached token is dropped: it belongs to the old address, and so do the old transport's
        pooled connections, which are closed.
        """
        with self._sync_lock:
            old, self.transport = self.transport, transport
            self.blobs = BlobTransfer(self.store, transport)
            self._token = None
            base_url = getattr(transport, "base_url", None)
            if base_url:
                self.store.set_meta(META_SERVER_URL, base_url)
        _close_transport(old)

    def close(self) -> None:
        """Close the transport's pooled connections (the app locked or signed out): sockets are
        not left open until the collector gets to them. The store is its owner's to close."""
        _close_transport(self.transport)

    # ---- the clock ------------------------------------------------------------------

    def _restore_clock(self, node: str) -> HybridClock:
        # An earlier app version let a server's nonsense time into the stored clock (a stamp of
        # 16 digits, an offset of centuries): start again from the wall clock rather than fail
        # to start at all; the next reply's server_time corrects it.
        offset = stored_clock_offset_ms(self.store, self._wall()) or 0
        try:
            return HybridClock(node=node, wall=self._stamp_wall, offset_ms=offset,
                               last=self.store.get_meta(META_CLOCK_LAST))
        except ValueError:
            return HybridClock(node=node, wall=self._stamp_wall, offset_ms=offset)

    def _stamp_wall(self) -> int:
        """The wall clock the stamps read: the phone's, less however far it was set by hand since
        the offset was learned (``sync.client.boot_clock``). Without it a clock set a year ahead
        while offline stamped a year ahead (re-stamped on arrival, such an edit beat every edit
        made before it arrived), and one set back stamped at the last stamp seen (losing to edits
        made before it): protocol section 2 wants edits stamped from the server-corrected time."""
        wall = self._wall()
        if self._anchor is None:
            return wall
        return wall - wall_moved_ms(self._anchor, wall, self._boot_clock(), MAX_CLOCK_SKEW_MS)

    def stamp(self) -> str:
        """The hlc for a new local edit (later than every stamp issued or seen before)."""
        return self.clock.now()

    def _observe_server_time(self, server_ms: int) -> None:
        if not _is_usable_server_time(server_ms):
            # Negative, or past what a stamp can hold: followed, it would make every later stamp
            # unreadable (each local edit refused, the stored clock fatal at the next start).
            return
        # The anchor first: the offset is learned against the wall as it reads now.
        self._anchor = clock_anchor(self._wall(), self._boot_clock())
        changed = self.clock.observe_server_time(server_ms)
        if is_too_far_ahead(self.clock.last(), server_ms):
            # Stamps issued while our wall clock ran far ahead would pin every later stamp there
            # (a clock never goes back); the protocol wants new edits stamped from the
            # server-corrected time, so start the clock again from it.
            self.clock = HybridClock(node=self.clock.node, wall=self._stamp_wall, offset_ms=self.clock.offset_ms)
            self.clock.observe_server_time(server_ms)
            changed = True
        if changed:
            self.store.set_meta_many(self._clock_meta())

    def _observe_stamp(self, stamp: str, server_ms: int) -> None:
        # A stamp from a clock far ahead must not drag ours along (the server re-stamps those).
        try:
            if not is_too_far_ahead(stamp, server_ms):
                self.clock.observe(stamp)
        except ValueError:
            pass

    def _clock_meta(self) -> dict[str, str | None]:
        meta = {META_CLOCK_LAST: self.clock.last(), META_CLOCK_OFFSET: str(self.clock.offset_ms)}
        if self._anchor is not None:
            meta[META_CLOCK_ANCHOR] = self._anchor
        return meta

    # ---- local edits, stamped ---------------------------------------------------------

    def create(self, entity: str, fields: dict[str, Any], *, id: str | None = None) -> str:
        """Create a record locally (stamped now) and queue it. Returns the record id.

        Raises:
            InvalidEdit: see ``LocalStore.create``.
        """
        return self.store.create(entity, fields, hlc=self.stamp(), id=id)

    def edit(self, entity: str, id: str, fields: dict[str, Any]) -> str | None:
        """Change fields of a record locally (stamped now) and queue them. Returns the mid.

        Raises:
            InvalidEdit: see ``LocalStore.edit``.
        """
        return self.store.edit(entity, id, fields, hlc=self.stamp())

    def delete(self, entity: str, id: str) -> str:
        """Delete a record locally (stamped now) and queue the deletion. Returns the mid."""
        return self.store.delete(entity, id, hlc=self.stamp())

    def add_photo(self, data: bytes) -> str:
        """Keep a photo sealed on the device, queued for upload; returns its SHA-256.

        Put the hash into a record's ``photos`` field (the whole list) to attach it.
        """
        return self.store.put_blob(data)

    # ---- enrollment and tokens --------------------------------------------------------

    def enroll(self, code: str, label: str = "", app_version: str = "") -> EnrollReply:
        """Enroll this device with a one-time code from an administrator.

        Returns:
            The server's reply: the device id, the user and the grids assigned.

        Raises:
            AuthError: the code is unknown, spent or expired.
            TransportError: the server could not be reached.
        """
        reply = self.transport.enroll(code, self.identity.public_key_b64(), label, app_version)
        previous_device = self.identity.device_id
        self.identity.set_device_id(reply.device_id)
        previous = self.clock.last()
        self.clock = HybridClock(node=reply.device_id, wall=self._stamp_wall, offset_ms=self.clock.offset_ms,
                                 last=previous)
        self._observe_server_time(reply.server_time)
        meta: dict[str, str | None] = {
            META_USER: json.dumps(msgspec.to_builtins(reply.user)),
            META_GRIDS: json.dumps(msgspec.to_builtins(reply.grids)),
            META_RETIRED: None,
            **self._clock_meta(),
        }
        if previous_device is not None and previous_device != reply.device_id:
            # Enrolled again (perhaps for another user or server): pull everything afresh.
            meta[META_CURSOR] = None
        base_url = getattr(self.transport, "base_url", None)
        if base_url:
            meta[META_SERVER_URL] = base_url
        self.store.set_meta_many(meta)
        self._token = None
        return reply

    @property
    def enrolled(self) -> bool:
        """Whether the device has an id from a server."""
        return self.identity.device_id is not None

    @property
    def syncing(self) -> bool:
        """Whether a sync round is running now (on any thread)."""
        return self._sync_lock.locked()

    @property
    def retired(self) -> bool:
        """Whether the server said this device was retired (it no longer syncs)."""
        return self.store.get_meta(META_RETIRED) == "1"

    def enrolled_user(self) -> dict[str, Any] | None:
        """The user this device was enrolled for (``id``, ``name``, ``role``), or None."""
        raw = self.store.get_meta(META_USER)
        return json.loads(raw) if raw else None

    def enrolled_grids(self) -> list[dict[str, Any]]:
        """The grids the server named at enrollment (``id``, ``name``, ``community``)."""
        raw = self.store.get_meta(META_GRIDS)
        return json.loads(raw) if raw else []

    def ensure_token(self) -> str:
        """A valid access token: the cached one, or a new one from challenge and signature.

        The cached token is replaced a minute before it expires, and at once after a 401.

        Raises:
            NotEnrolled: no device id yet.
            DeviceRevoked: the device was retired before (no request is sent) or is revoked now.
            AuthError: the server no longer knows this device or its key.
        """
        if self.retired:
            raise DeviceRevoked(wipe=False)
        device_id = self.identity.device_id
        if device_id is None:
            raise NotEnrolled("enroll this device before syncing")
        if self._token is not None and time.monotonic() < self._token_deadline:
            return self._token
        challenge = self.transport.challenge(device_id)
        self._observe_server_time(challenge.server_time)
        reply = self.transport.token(device_id, challenge.nonce, self.identity.sign_token_request(challenge.nonce))
        self._observe_server_time(reply.server_time)
        # Measure the lifetime on the server's clock, then count it down on ours: a device
        # whose wall clock is wrong still refreshes on time.
        lifetime = _lifetime_s(reply.expires_at, reply.server_time)
        self._token = reply.access_token
        self._token_deadline = time.monotonic() + max(0.0, lifetime - _TOKEN_MARGIN_S)
        return self._token

    def _authed(self, call: Callable[[str], Any]) -> Any:
        """Run a call with a token; after a 401, fetch a new token and try once more."""
        token = self.ensure_token()
        try:
            return call(token)
        except AuthError as exc:
            if exc.status != 401:
                raise
            self._token = None
            return call(self.ensure_token())

    # ---- a sync round -----------------------------------------------------------------

    def sync(self, progress: ProgressCallback | None = None) -> SyncReport:
        """Run one sync round (see the module docstring).

        Args:
            progress: called with a ``SyncProgress`` as the round advances.

        Returns:
            What the round did.

        Raises:
            TransportError: the network failed; everything done so far is kept, retry later.
            DeviceRevoked: the device was revoked; with ``wipe`` the store has been erased
                (and closed) before this is raised, else the device is marked retired.
            AuthError, UpgradeRequired, ProtocolError, NotEnrolled, StorageError.
        """
        report = SyncReport()
        started = time.monotonic()
        notify = progress or (lambda _p: None)
        with self._sync_lock:
            try:
                self._upload_blobs(report, notify)
                self._push_outbox(report, notify)
                self._pull_changes(report, notify)
                if self.download_blobs:
                    self._download_blobs(report, notify)
            except DeviceRevoked as exc:
                self._on_revoked(exc)
                raise
            except SyncError as exc:
                self._finish(report, started, error=exc)
                raise
            self._finish(report, started)
        notify(SyncProgress("done", 1, 1))
        return report

    def sync_with_retry(
        self,
        max_attempts: int = 5,
        base_delay: float = 1.0,
        *,
        max_delay: float = 60.0,
        progress: ProgressCallback | None = None,
    ) -> SyncReport:
        """``sync``, retried after a ``TransportError`` with exponential backoff and jitter.

        The n-th wait is drawn from ``[d/2, d]`` with ``d = min(max_delay, base_delay * 2**n)``,
        and is never shorter than a ``Retry-After`` the server sent. Other errors are raised
        at once.

        Raises:
            TransportError: the last attempt failed too.
        """
        for attempt in range(max_attempts):
            try:
                return self.sync(progress)
            except TransportError as exc:
                if attempt == max_attempts - 1:
                    raise
                ceiling = min(max_delay, base_delay * 2**attempt)
                delay = random.uniform(ceiling / 2, ceiling)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, max_delay))
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def last_sync(self) -> dict[str, Any] | None:
        """The outcome of the last round: ``finished_at``, ``ok``, ``error`` and counts."""
        raw = self.store.get_meta(META_LAST_SYNC)
        return json.loads(raw) if raw else None

    def _finish(self, report: SyncReport, started: float, *, error: Exception | None = None) -> None:
        report.duration = time.monotonic() - started
        report.finished_at = datetime.datetime.now(datetime.UTC)
        state = {
            "finished_at": report.finished_at.isoformat(),
            "ok": error is None,
            "error": str(error) if error else None,
            "pushed": report.pushed,
            "pulled": report.pulled,
            "rejected": report.rejected,
            "conflicts": report.conflicts,
        }
        if not self.store.closed:
            self.store.set_meta_many({META_LAST_SYNC: json.dumps(state), **self._clock_meta()})
            if error is None:
                self.store.prune_results()

    def _on_revoked(self, exc: DeviceRevoked) -> None:
        self._token = None
        if exc.wipe:
            if self._forget_key is not None:
                self._forget_key()
            self.store.wipe()
        else:
            self.store.set_meta(META_RETIRED, "1")

    # ---- blobs up ---------------------------------------------------------------------

    def _upload_blobs(self, report: SyncReport, notify: ProgressCallback) -> None:
        pending = self.store.blobs_to_upload()
        if not pending:
            return
        self.ensure_token()
        for done, sha in enumerate(pending):
            notify(SyncProgress("upload", done, len(pending)))
            try:
                if self._authed(lambda token, sha=sha: self.blobs.upload(token, sha)):
                    report.blobs_uploaded += 1
            except ProtocolError as exc:
                # One bad photo must not hold back every record: report it and go on.
                report.errors.append(f"photo {sha[:12]} not uploaded: {exc}")
        notify(SyncProgress("upload", len(pending), len(pending)))

    # ---- push -------------------------------------------------------------------------

    def _push_outbox(self, report: SyncReport, notify: ProgressCallback) -> None:
        total = self.store.pending_count()
        if not total:
            return
        done = 0
        notify(SyncProgress("push", 0, total))
        while True:
            entries = _within_budget(self.store.pending_mutations(self.push_batch))
            if not entries:
                return
            answered = self._push_batch(entries, report)
            if answered == 0:
                raise ProtocolError("malformed", "the server answered a push without any result for its mutations")
            done += answered
            notify(SyncProgress("push", done, max(total, done)))

    def _push_batch(self, entries: Sequence[OutboxEntry], report: SyncReport) -> int:
        """Push entries and store their results; returns how many got one."""
        try:
            reply = self._authed(lambda token: self.transport.push(token, [e.to_mutation() for e in entries]))
        except ProtocolError as exc:
            if exc.status not in _BATCH_FAULTS:
                raise
            if len(entries) == 1:
                # The server refused the body of this one mutation and changed nothing: keep it
                # as a rejection the user sees instead of blocking the outbox behind it.
                self._reject_locally(entries[0], exc, report)
                return 1
            half = len(entries) // 2
            return self._push_batch(entries[:half], report) + self._push_batch(entries[half:], report)
        unfit = check_push_reply(entries, reply)
        self._observe_server_time(reply.server_time)
        for result in reply.results:
            if result.record:
                self._observe_stamp(result.record.hlc, reply.server_time)
        summary = self.store.apply_results(entries, reply.results, unfit=unfit)
        report.set_aside += len(unfit)
        answered = len(entries) - summary.unanswered
        report.pushed += answered
        report.applied += summary.applied
        report.merged += summary.merged
        report.rejected += summary.rejected
        report.conflicts += summary.conflicts
        return answered

    def _reject_locally(self, entry: OutboxEntry, exc: ProtocolError, report: SyncReport) -> None:
        result = Result(
            mid=entry.mid,
            status=MutationStatus.REJECTED,
            version=entry.base_version,
            error=ResultError(code=exc.code, message=exc.message or str(exc)),
        )
        self.store.apply_results([entry], [result])
        report.pushed += 1
        report.rejected += 1

    # ---- pull -------------------------------------------------------------------------

    def _pull_changes(self, report: SyncReport, notify: ProgressCallback) -> None:
        self._readmit_set_aside(report)
        cursor = self.store.get_meta(META_CURSOR)
        started_over = False
        while True:
            try:
                reply = self._authed(lambda token, cursor=cursor: self.transport.pull(token, cursor, self.pull_limit))
            except ProtocolError as exc:
                if cursor is None or started_over or not _cursor_refused(exc):
                    raise
                # Kept, the cursor would be refused at every round and the device would never
                # pull again. A pull from the start is safe: it brings every record in scope,
                # deleted ones as tombstones. The stored cursor is replaced with the first page
                # (until then a crash leaves the old one, refused again next round). Once a
                # round: a server that refuses the cursors it just issued is not looped on.
                cursor, started_over = None, True
                continue
            unfit = check_pull_reply(reply)
            self._observe_server_time(reply.server_time)
            stamps = [r.hlc for r in reply.changes] + [u.record.hlc for u in unfit]
            if stamps:
                self._observe_stamp(max(stamps), reply.server_time)
            self.store.apply_pulled(reply.changes, unfit=unfit, cursor=reply.cursor, meta=self._clock_meta())
            report.pulled += len(reply.changes)
            report.set_aside += len(unfit)
            notify(SyncProgress("pull", report.pulled, None))
            if not reply.more:
                return
            cursor = reply.cursor

    def _readmit_set_aside(self, report: SyncReport) -> None:
        if not self.store.set_aside_count():
            return
        readable = [kept.record for kept in self.store.set_aside() if _readable(kept.record)]
        if readable:
            self.store.readmit(readable)
            report.readmitted += len(readable)

    # ---- blobs down -------------------------------------------------------------------

    def _download_blobs(self, report: SyncReport, notify: ProgressCallback) -> None:
        missing = self.store.blobs_to_download()
        for done, sha in enumerate(missing):
            notify(SyncProgress("download", done, len(missing)))
            try:
                self._authed(lambda token, sha=sha: self.blobs.download(token, sha))
                report.blobs_downloaded += 1
            except ProtocolError as exc:
                report.errors.append(f"photo {sha[:12]} not downloaded: {exc}")
            except TransportError as exc:
                # Records are in; photos can wait for the next round (it resumes the cut one).
                report.errors.append(f"photo download stopped: {exc}")
                return
        if missing:
            notify(SyncProgress("download", len(missing), len(missing)))

    def fetch_blob(self, sha: str) -> bytes:
        """A photo's bytes: from the device, else downloaded now (resuming a cut download).

        Raises:
            TransportError, ProtocolError, BlobRejected, DeviceRevoked.
        """
        data = self.store.read_blob(sha)
        if data is not None:
            return data
        try:
            return self._authed(lambda token: self.blobs.download(token, sha))
        except DeviceRevoked as exc:
            self._on_revoked(exc)
            raise


def _readable(record: Record) -> bool:
    try:
        return check_record(record) is None
    except ProtocolError:
        return False  # never stored so; kept for whoever looks, not a reason to stop every round


def _close_transport(transport: Transport) -> None:
    # The Transport protocol does not require close(): a test's fake may not have one.
    close = getattr(transport, "close", None)
    if close is not None:
        close()


def stored_clock_offset_ms(store: LocalStore, wall_ms: int) -> int | None:
    """The correction the engine keeps for this device's wall clock: server time minus wall time, in ms.

    The engine stores it from the first reply it gets (enrollment's included) and whenever it
    changes; it is 0 while the clocks agree within the protocol's allowed skew.

    Args:
        store: the device's store.
        wall_ms: the wall clock now; an offset that would put the time past what a stamp can
            hold (stored by an earlier app version) counts as 0.

    Returns:
        The offset, or None when the device has not yet heard the server's time.
    """
    raw = store.get_meta(META_CLOCK_OFFSET)
    if raw is None:
        return None
    try:
        offset = int(raw)
    except ValueError:
        return 0
    return offset if _is_usable_server_time(wall_ms + offset) else 0


def corrected_clock_offset_ms(store: LocalStore, wall_ms: int, reading: BootReading | None) -> int | None:
    """``stored_clock_offset_ms``, less however far the wall clock was set by hand since the
    offset was learned (``sync.client.boot_clock``): the correction for "now" on a phone whose
    user put its clock right (or wrong) while offline.

    Args:
        store: the device's store.
        wall_ms: the wall clock now.
        reading: the boot clock now (``read_boot_clock()``).

    Returns:
        The offset in ms, or None when the device has not yet heard the server's time.
    """
    offset = stored_clock_offset_ms(store, wall_ms)
    if offset is None:
        return None
    moved = wall_moved_ms(store.get_meta(META_CLOCK_ANCHOR), wall_ms, reading, MAX_CLOCK_SKEW_MS)
    return offset - moved if moved and _is_usable_server_time(wall_ms + offset - moved) else offset


def _is_usable_server_time(server_ms: int) -> bool:
    """Whether a server_time is one the clock may follow (protocol section 2's skew rule)."""
    return 0 <= server_ms <= _LATEST_SERVER_TIME_MS


def _cursor_refused(exc: ProtocolError) -> bool:
    """Whether a pull was refused for its cursor: ``400 malformed`` naming the ``cursor`` as the
    path is what the server answers to a cursor it did not issue (protocol, Changes 6)."""
    return exc.status == 400 and exc.code == "malformed" and exc.detail.get("path") == "cursor"


def _within_budget(entries: list[OutboxEntry]) -> list[OutboxEntry]:
    """The longest prefix of ``entries`` whose push body stays under the size limit (at least one)."""
    total = 0
    for i, entry in enumerate(entries):
        total += len(msgspec.msgpack.encode(entry.to_mutation()))
        if total > _PUSH_BYTES_BUDGET and i > 0:
            return entries[:i]
    return entries


def _lifetime_s(expires_at: str, server_ms: int) -> float:
    """Seconds from the server's now to a token's expiry (15 minutes when unreadable)."""
    try:
        expiry = datetime.datetime.fromisoformat(expires_at)
        if expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=datetime.UTC)
        return expiry.timestamp() - server_ms / 1000
    except ValueError:
        return 15 * 60.0
