"""The convergence state machine: devices editing offline against one server, in the shape of
chroma-core's property tests (a Hypothesis ``RuleBasedStateMachine`` driving the system beside a
plain model, with invariants checked after every step).

The machine talks to a *backend*: ``ModelServer`` below (pure, in memory, ``sync.merge`` used the
way ``server.records.writes.commit_mutations`` uses it), or the real server through Litestar's
TestClient (tests/server/test_convergence_server.py). Devices are plain models of the app's
store: the server's copy of each record plus a pending outbox, with the pending edits shown on
top (the rebase). Checked:

- G2: no mutation is applied twice (the change log holds each ``mid`` at most once), and a
  repeated ``mid`` gets back the first result;
- G1: every lww value that lost (on arrival, or overwritten by a writer that had not seen it)
  is in the conflict log as ``lost``; every delete against a concurrent edit writes a conflict;
- G3: after every device pushes, then pulls (twice), every device holds exactly the server's
  records: fields, version, hlc, deleted.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import msgspec
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from shared_schema.entities import ENTITIES, UNION_FIELDS, validate_fields
from shared_schema.messages import Mutation, MutationStatus, PullReply, PushReply, Record, Result, ResultError
from shared_schema.rules import MergeRule, field_rules
from shared_schema.workflow import Actor
from sync.hlc import HybridClock, is_too_far_ahead
from sync.merge import DELETED_FIELD, RecordState, apply_mutation

GRID = "00000000-0000-4000-8000-00000000a001"
OTHER_GRID = "00000000-0000-4000-8000-00000000b002"
T0 = 1_764_000_000_000
YEAR_MS = 365 * 24 * 3600 * 1000

# How far a device's wall clock is off the server's: exact, a little, within the 5-minute
# allowance, an hour behind, a year ahead.
SKEWS = [0, 0, 1_500, -90_000, 4 * 60_000, -3_600_000, YEAR_MS]
TAGS = ["elderly", "disabled", "rental", "pets", "vacant"]
LWW_FIELDS = {"household": ["address", "notes", "members", "head_name"], "case": ["title", "description", "feedback"]}

_mutation_json = msgspec.json.Decoder(Mutation)


def wire(mutation: Mutation) -> Mutation:
    """The mutation as the server decodes it (so a device that builds an invalid one fails here)."""
    return _mutation_json.decode(msgspec.json.encode(mutation))


def lww_fields(entity: str) -> set[str]:
    return {n for n, r in field_rules(ENTITIES[entity]).items() if r in (MergeRule.LWW, MergeRule.SERVER)}


@dataclass
class Sender:
    origin: str
    actor: Actor
    scope: frozenset[str] | None


# ---- the model server -------------------------------------------------------------------------


class ModelServer:
    """An in-memory server: ``apply_mutation`` exactly as ``commit_mutations`` calls it.

    Each push is applied in order; a ``mid`` seen before returns the stored first result; a
    mutation too far ahead is re-stamped with the server's clock; every changed record gets a
    new ``seq``; a pull returns records with ``seq`` > cursor at their latest version.
    """

    def __init__(self, wall: Callable[[], int]):
        self.wall = wall
        self.clock = HybridClock("server.model", wall=wall)
        self.states: dict[str, RecordState] = {}
        self.seqs: dict[str, int] = {}
        self.seq = 0
        self.applied: dict[str, Result] = {}
        self.log: list[dict] = []
        self.conflict_log: list[dict] = []

    # the backend interface -------------------------------------------------------------------

    def push(self, sender: Sender, mutations: list[Mutation]) -> PushReply:
        return PushReply(results=self._commit(sender, [wire(m) for m in mutations]), server_time=self.wall())

    def pull(self, sender: Sender, cursor: str | None, limit: int) -> PullReply:
        after = int(cursor or 0)
        ready = sorted(
            (s, i)
            for i, s in self.seqs.items()
            if s > after and self.states[i].grid_id in (sender.scope or {self.states[i].grid_id})
        )
        page = ready[:limit]
        last = page[-1][0] if page else after
        return PullReply(
            changes=[copy.deepcopy(self.states[i].to_record()) for _, i in page],
            cursor=str(last),
            more=len(ready) > limit,
            server_time=self.wall(),
        )

    def commit_as(self, sender: Sender, mutations: list[Mutation]) -> list[Result]:
        """A console or server write, through the same path as a push."""
        return self._commit(sender, mutations)

    def server_stamp(self) -> str:
        return self.clock.now()

    def records(self) -> dict[str, Record]:
        return {i: copy.deepcopy(s.to_record()) for i, s in self.states.items()}

    def change_log(self) -> list[dict]:
        return list(self.log)

    def conflicts(self) -> list[dict]:
        return list(self.conflict_log)

    def close(self) -> None:
        pass

    # -------------------------------------------------------------------------------------------

    def _commit(self, sender: Sender, mutations: list[Mutation]) -> list[Result]:
        now_ms = self.wall()
        results = []
        for m in mutations:
            if m.mid in self.applied:
                results.append(self.applied[m.mid])
                continue
            stamp = m.hlc
            if is_too_far_ahead(m.hlc, now_ms):
                stamp = self.clock.now()
            else:
                self.clock.observe(m.hlc)
            out = apply_mutation(
                self.states.get(m.id), m, stamp=stamp, origin=sender.origin, actor=sender.actor, scope=sender.scope
            )
            state = out.state
            if out.changed:
                self.seq += 1
                self.states[m.id] = state
                self.seqs[m.id] = self.seq
                self.log.append(
                    {
                        "seq": self.seq,
                        "mid": m.mid,
                        "record_id": m.id,
                        "version": state.version,
                        "op": m.op,
                        "changes": {k: [b, a] for k, (b, a) in out.changes.items()},
                    }
                )
            for c in out.conflicts:
                self.conflict_log.append(
                    {
                        "mid": m.mid,
                        "record_id": m.id,
                        "field": c.field,
                        "kept": c.kept,
                        "lost": c.lost,
                        "winner_hlc": c.winner_hlc,
                    }
                )
            if out.status is MutationStatus.REJECTED:
                result = Result(
                    mid=m.mid,
                    status=out.status,
                    version=state.version if state else 0,
                    error=ResultError(code=out.rejection.code.value, message=out.rejection.message),
                )
            elif out.conflicts:
                result = Result(
                    mid=m.mid,
                    status=out.status,
                    version=state.version,
                    record=state.to_record(),
                    conflicts=out.conflicts,
                )
            else:
                result = Result(mid=m.mid, status=out.status, version=state.version, record=state.to_record())
            result = msgspec.json.decode(msgspec.json.encode(result), type=Result)  # as stored, a copy
            self.applied[m.mid] = result
            results.append(result)
        return results


# ---- the device model -------------------------------------------------------------------------


@dataclass
class Device:
    """What the app keeps: the server's copy of each record, a pending outbox, a cursor."""

    id: str
    clock: HybridClock
    sender: Sender
    known: dict[str, Record] = field(default_factory=dict)
    outbox: list[Mutation] = field(default_factory=list)
    cursor: str | None = None
    results: dict[str, Result] = field(default_factory=dict)

    def view(self) -> dict[str, dict]:
        """What the user sees: the server's copy with the pending edits on top."""
        shown = {
            i: {"entity": r.entity, "fields": copy.deepcopy(r.fields)} for i, r in self.known.items() if not r.deleted
        }
        for m in self.outbox:
            if m.op == "delete":
                shown.pop(m.id, None)
            elif m.id in shown or m.base_version == 0:
                rec = shown.setdefault(m.id, {"entity": m.entity, "fields": {}})
                rec["fields"].update(validate_fields(m.entity, m.fields))
        return shown

    def base_version(self, record_id: str) -> int:
        rec = self.known.get(record_id)
        return rec.version if rec else 0

    def take_push_reply(self, sent: list[Mutation], reply: PushReply) -> None:
        self.clock.observe_server_time(reply.server_time)
        by_mid = {r.mid: r for r in reply.results}
        assert [r.mid for r in reply.results] == [m.mid for m in sent], "one result per mutation, same order"
        for result in reply.results:
            self.results[result.mid] = result
            record = result.record if result.record is not msgspec.UNSET else None
            if record is not None:
                self.clock.observe(record.hlc)
                mine = self.known.get(record.id)
                if mine is None or record.version > mine.version:
                    self.known[record.id] = copy.deepcopy(record)
        done = set(by_mid)
        self.outbox = [m for m in self.outbox if m.mid not in done]

    def take_pull_reply(self, reply: PullReply) -> None:
        self.clock.observe_server_time(reply.server_time)
        for record in reply.changes:
            self.clock.observe(record.hlc)
            mine = self.known.get(record.id)
            assert mine is None or record.version >= mine.version, "a pull never goes back in version"
            self.known[record.id] = copy.deepcopy(record)
        self.cursor = reply.cursor


# ---- G1: nothing lost silently --------------------------------------------------------------


@dataclass
class FieldHistory:
    value: Any
    first_version: int  # when the field took this value
    writers: set[str]  # origins that wrote this value since


@dataclass
class TagHistory:
    appeared: int  # the version at which the item (last) entered the set
    senders: set[str]  # origins that sent a set holding it since


def check_no_lost_edits(
    applied: list[tuple[Mutation, str, Result]], change_log: list[dict], conflicts: list[dict]
) -> None:
    """G1 for lww fields, union fields and deletes, from the logs alone.

    ``applied`` is every mutation in the order the server first applied it, with its origin
    and first result. Walking the change log in that order, each lww field remembers its value,
    the version it took it and who wrote it. Then:

    - an accepted upsert whose lww value is not the field's value right after it must have a
      conflict entry (its mid) with that value ``lost``;
    - a change that overwrites a value its writer had not seen (base_version older than the
      value and not one of its writers) must have a conflict entry with the old value ``lost``;
    - a delete that removes a record holding a value its writer had not seen, or a delete that
      leaves the record standing, must have a ``deleted`` conflict entry;
    - union fields write no conflict entry, so an item may leave a set only by a writer that
      had seen it (it was there at the writer's base_version, or the writer itself sent it).
    """
    by_mid = {e["mid"]: e for e in change_log}
    conflicts_of: dict[str, list[dict]] = {}
    for c in conflicts:
        conflicts_of.setdefault(c["mid"], []).append(c)
    history: dict[str, dict[str, FieldHistory]] = {}
    sets: dict[tuple[str, str], dict[str, TagHistory]] = {}
    deleted: dict[str, bool] = {}

    def lost_in(mid: str, name: str, value: Any) -> bool:
        for c in conflicts_of.get(mid, []):
            if c["field"] == name and c["lost"] == value:
                return True
            if (
                c["field"] == DELETED_FIELD
                and isinstance(c["lost"], dict)
                and name in c["lost"]
                and c["lost"][name] == value
            ):
                return True
        return False

    for m, origin, result in applied:
        if result.status is MutationStatus.REJECTED:
            assert m.mid not in by_mid, f"rejected {m.mid} is in the change log"
            continue
        fields = history.setdefault(m.id, {})
        entry = by_mid.get(m.mid)
        lww = lww_fields(m.entity)

        def unseen(h: FieldHistory) -> bool:
            return m.base_version < h.first_version and origin not in h.writers

        if m.op == "delete":
            was_deleted = deleted.get(m.id, False)
            if entry is not None and was_deleted:  # a second delete: the tombstone takes the later stamp
                assert entry["changes"] == {DELETED_FIELD: [True, True]}
            elif entry is not None:
                assert entry["changes"] == {DELETED_FIELD: [False, True]}
                deleted[m.id] = True
                if any(unseen(h) for n, h in fields.items() if n in lww):
                    assert any(c["field"] == DELETED_FIELD for c in conflicts_of.get(m.mid, [])), (
                        f"delete {m.mid} removed a record with an edit its sender had not seen, and logged no conflict"
                    )
            elif not was_deleted:
                assert any(c["field"] == DELETED_FIELD for c in conflicts_of.get(m.mid, [])), (
                    f"delete {m.mid} lost to a concurrent edit and logged no conflict"
                )
            continue

        sent = validate_fields(m.entity, m.fields)
        unions = UNION_FIELDS[m.entity]
        if entry is not None:
            for name, (before, after) in entry["changes"].items():
                if name == DELETED_FIELD:
                    deleted[m.id] = after
                    continue
                if name in unions:
                    items = sets.setdefault((m.id, name), {})
                    for item in set(before or ()) - set(after or ()):
                        h = items.pop(item)
                        assert h.appeared <= m.base_version or origin in h.senders, (
                            f"{m.mid} (from {origin}, base {m.base_version}) removed {name} item {item!r}, "
                            f"which entered at version {h.appeared} and it never saw"
                        )
                    for item in set(after or ()) - set(before or ()):
                        items[item] = TagHistory(entry["version"], set())
                h = fields.get(name)
                if name in lww and h is not None and before != after and unseen(h):
                    assert lost_in(m.mid, name, before), (
                        f"{m.mid} overwrote {name}={before!r} (version {h.first_version}, by {sorted(h.writers)}) "
                        f"from base {m.base_version} without a conflict entry"
                    )
                if h is None or before != after:
                    fields[name] = FieldHistory(after, entry["version"], {origin})
                else:
                    h.writers.add(origin)
        for name in unions & sent.keys():
            items = sets.setdefault((m.id, name), {})
            for item in sent[name]:
                if item in items:
                    items[item].senders.add(origin)
        for name, value in sent.items():
            if name not in lww:
                continue
            h = fields.get(name)
            if h is not None and h.value == value:
                h.writers.add(origin)
                continue
            assert lost_in(m.mid, name, value), (
                f"{m.mid} sent {name}={value!r}; it is not kept and not in the conflict log"
            )


# ---- the state machine --------------------------------------------------------------------------


def uuid_for(kind: int, n: int, run: int = 0) -> str:
    """Deterministic ids (Hypothesis replays a run exactly); ``run`` keeps runs that share one
    database apart."""
    return f"{run:08x}-0000-4000-8{kind:03x}-{n:012x}"


class ConvergenceMachine(RuleBasedStateMachine):
    """Devices edit offline, push (replies sometimes lost, then pushed again), pull, while the
    console moves cases along; after everyone syncs, every replica equals the server."""

    def __init__(self) -> None:
        super().__init__()
        self.sim_ms = T0
        self.run = 0
        self.grid, self.other_grid = GRID, OTHER_GRID
        self.backend = self.make_backend()
        self.devices: list[Device] = []
        self.counter = 0
        self.applied: list[tuple[Mutation, str, Result]] = []  # first application order
        self.first: dict[str, Result] = {}
        self.expect_rejected: dict[str, set[str]] = {}  # mid -> acceptable rejection codes
        self.made: dict[str, list[str]] = {}  # device id -> mids it made
        self.console = Sender(origin="console:" + uuid_for(0xC, 1), actor=Actor.CONSOLE, scope=None)
        self.server_sender = Sender(origin="server", actor=Actor.SERVER, scope=None)

    # backends override these -------------------------------------------------------------------

    def make_backend(self):
        return ModelServer(wall=lambda: self.sim_ms)

    def server_wall(self) -> int:
        return self.backend.wall()

    def add_device(self, n: int, skew: int) -> Device:
        device_id = uuid_for(0xD, n)
        clock = HybridClock(device_id, wall=lambda: self.server_wall() + skew)
        return Device(
            id=device_id, clock=clock, sender=Sender(origin=device_id, actor=Actor.DEVICE, scope=frozenset({self.grid}))
        )

    # helpers ---------------------------------------------------------------------------------------

    def next_id(self, kind: int) -> str:
        self.counter += 1
        return uuid_for(kind, self.counter, self.run)

    def device(self, n: int) -> Device:
        return self.devices[n % len(self.devices)]

    def enqueue(self, d: Device, record_id: str, entity: str, fields: dict, op: str = "upsert") -> Mutation:
        m = Mutation(
            mid=self.next_id(0xA),
            entity=entity,
            id=record_id,
            op=op,
            base_version=d.base_version(record_id),
            hlc=d.clock.now(),
            fields=fields,
        )
        d.outbox.append(m)
        self.made.setdefault(d.id, []).append(m.mid)
        return m

    def pick(
        self, d: Device, n: int, entity: str | None = None, status: set[str] | None = None
    ) -> tuple[str, dict] | None:
        shown = d.view()
        ids = sorted(i for i, r in shown.items() if r["fields"].get("grid_id") == self.grid
                     and (entity is None or r["entity"] == entity)
                     and (status is None or r["fields"].get("status") in status))
        if not ids:
            return None
        i = ids[n % len(ids)]
        return i, shown[i]

    def record_results(self, mutations: list[Mutation], origin: str, results: list[Result]) -> None:
        for m, r in zip(mutations, results, strict=True):
            if m.mid in self.first:
                assert r == self.first[m.mid], f"a repeated mid {m.mid} must return the first result"
                continue
            self.first[m.mid] = r
            self.applied.append((m, origin, r))
            if m.mid in self.expect_rejected:
                codes = self.expect_rejected[m.mid]
                if r.status is MutationStatus.REJECTED:
                    assert r.error.code in codes, (m, r)
                else:
                    # Not a move at all (the case already is there), or an edit that lost to a
                    # concurrent delete (or won over it: the record is back): no field changed.
                    assert r.record.deleted or all(r.record.fields.get(k) == v for k, v in m.fields.items()), (m, r)
                    for e in self.backend.change_log():
                        if e["mid"] == m.mid:
                            assert set(e["changes"]) == {DELETED_FIELD}, (m, r, e)
            if r.status is not MutationStatus.REJECTED:
                assert r.record is not msgspec.UNSET and r.record.id == m.id and r.version == r.record.version

    # rules: setup ----------------------------------------------------------------------------------

    @initialize(n=st.integers(min_value=2, max_value=6), skews=st.lists(st.sampled_from(SKEWS), min_size=6, max_size=6))
    def make_devices(self, n, skews):
        self.devices = [self.add_device(i + 1, skews[i]) for i in range(n)]
        self.made = {d.id: [] for d in self.devices}
        # Records everybody already holds, so that edits from the first step on can collide.
        first = self.devices[0]
        for i in range(2):
            self.edit_household(first, which=i, tag=TAGS[i], add=True)
            self.edit_case(first)
        self.push(first)
        for dev in self.devices:
            self.pull(dev)

    # rules: device edits, offline --------------------------------------------------------------

    # Hypothesis enables a random subset of the rules in each run (swarm testing), so every kind
    # of edit is a rule of its own; edits of the same fields by several devices are the point.
    @rule(d=st.integers(0, 5), add=st.booleans(), tag=st.sampled_from(TAGS), which=st.integers(0, 3))
    def create_household(self, d, add, tag, which):
        self.edit_household(self.device(d), 0, which, None, tag, add)

    @rule(d=st.integers(0, 5))
    def report_case(self, d):
        self.edit_case(self.device(d))

    @rule(
        d=st.integers(0, 5),
        n=st.integers(0, 50),
        which=st.integers(0, 3),
        shared=st.sampled_from([None, None, "same-1", "same-2"]),
    )
    def edit_a_field(self, d, n, which, shared):
        self.edit_lww(self.device(d), n, which, shared)

    @rule(d=st.integers(0, 5), which=st.booleans())
    def edit_the_same_field_as_others(self, d, which):
        """Every device edits the first record it shows, one of two fields: the hot spot of conflicts."""
        self.edit_lww(self.device(d), 0, 1 if which else 0, None)

    @rule(d=st.integers(0, 5), n=st.integers(0, 50), tag=st.sampled_from(TAGS), add=st.booleans())
    def change_tags(self, d, n, tag, add):
        self.edit_tags(self.device(d), n, 0, None, tag, add)

    @rule(d=st.integers(0, 5), n=st.integers(0, 50))
    def delete_record(self, d, n):
        self.edit_delete(self.device(d), n)

    @rule(d=st.integers(0, 5), n=st.integers(0, 50))
    def resolve_case(self, d, n):
        self.edit_resolve(self.device(d), n)

    @rule(d=st.integers(0, 5), n=st.integers(0, 50), which=st.integers(0, 3))
    def try_a_forbidden_case_edit(self, d, n, which):
        self.edit_forbidden(self.device(d), n, which)

    @rule(d=st.integers(0, 5))
    def try_to_write_outside_scope(self, d):
        self.edit_outside(self.device(d))

    def edit_household(self, dev, n=0, which=0, shared=None, tag=TAGS[0], add=False):
        tags = sorted({tag, TAGS[which]}) if add else []
        self.enqueue(
            dev,
            self.next_id(0xB),
            "household",
            {"grid_id": self.grid, "address": f"{self.counter} Elm Lane", "tags": tags},
        )

    def edit_case(self, dev, *_):
        rid = self.next_id(0xE)
        fields = {
            "grid_id": self.grid,
            "category": "drainage",
            "title": f"Blocked drain {self.counter}",
            "status": "reported",
        }
        self.enqueue(dev, rid, "case", fields)

    def edit_lww(self, dev, n, which, shared, *_):
        picked = self.pick(dev, n)
        if picked is None:
            return
        rid, rec = picked
        names = LWW_FIELDS[rec["entity"]]
        name = names[which % len(names)]
        self.counter += 1
        if name == "members":
            value = self.counter % 100 if shared is None else len(shared)
        else:
            value = f"{dev.id[-3:]}-{self.counter}" if shared is None else shared
        self.enqueue(dev, rid, rec["entity"], {name: value})

    def edit_tags(self, dev, n, which, shared, tag, add):
        picked = self.pick(dev, n, entity="household")
        if picked is None:
            return
        rid, rec = picked
        tags = set(rec["fields"].get("tags", []))
        new = tags | {tag} if add else tags - {tag}
        if new != tags:
            self.enqueue(dev, rid, "household", {"tags": sorted(new)})

    def edit_delete(self, dev, n, *_):
        picked = self.pick(dev, n)
        if picked is not None:
            rid, rec = picked
            self.enqueue(dev, rid, rec["entity"], {}, op="delete")

    def edit_resolve(self, dev, n, *_):
        picked = self.pick(dev, n, entity="case", status={"dispatched", "overdue"})
        if picked is not None:
            self.counter += 1
            self.enqueue(dev, picked[0], "case", {"status": "resolved", "feedback": f"fixed {self.counter}"})

    def edit_forbidden(self, dev, n, which, *_):
        """A device may not accept or close a case, nor write the server's fields."""
        picked = self.pick(dev, n, entity="case")
        if picked is None:
            return
        bad = ["accepted", "closed", "department", "rating"][which]
        fields = {"status": bad} if bad in ("accepted", "closed") else {bad: "Water" if bad == "department" else 5}
        m = self.enqueue(dev, picked[0], "case", fields)
        self.expect_rejected[m.mid] = {"invalid_transition"} if "status" in fields else {"read_only_field"}

    def edit_outside(self, dev, *_):
        m = self.enqueue(dev, self.next_id(0xF), "household", {"grid_id": self.other_grid, "address": "elsewhere"})
        self.expect_rejected[m.mid] = {"forbidden_scope"}

    # rules: sync -----------------------------------------------------------------------------------

    def push(self, dev: Device, drop_reply: bool = False) -> None:
        if not dev.outbox:
            return
        sent = list(dev.outbox)
        reply = self.backend.push(dev.sender, sent)
        self.record_results(sent, dev.sender.origin, reply.results)
        if not drop_reply:
            dev.take_push_reply(sent, reply)

    def pull(self, dev: Device, limit: int = 7, lose_page: int | None = None) -> None:
        """Pull until ``more`` is false; page number ``lose_page`` is lost on the way (the
        device keeps its old cursor and stops, to pull again later)."""
        for page in range(1000):
            reply = self.backend.pull(dev.sender, dev.cursor, limit)
            if page == lose_page:
                return
            dev.take_pull_reply(reply)
            if not reply.more:
                return
        raise AssertionError("pull never ended")

    @rule(d=st.integers(0, 5), drop_reply=st.booleans())
    def push_outbox(self, d, drop_reply):
        """Push everything pending; a lost reply leaves the outbox as it was (pushed again later)."""
        self.push(self.device(d), drop_reply)

    @rule(d=st.integers(0, 5), limit=st.sampled_from([1, 3, 500]), lose_page=st.sampled_from([None, None, 0, 1, 2]))
    def pull_changes(self, d, limit, lose_page):
        self.pull(self.device(d), limit, lose_page)

    @rule(d=st.integers(0, 5))
    def app_restarts(self, d):
        """The app is killed and started again: its clock resumes from the persisted last stamp
        (the server-time correction is not persisted and comes back with the next reply)."""
        dev = self.device(d)
        wall = dev.clock._wall
        before = dev.clock.last()
        dev.clock = HybridClock(dev.id, wall=wall, last=before)
        assert dev.clock.now() > before

    @rule(ms=st.sampled_from([1, 40, 2_000, 400_000]))
    def time_passes(self, ms):
        self.sim_ms += ms

    # rules: the console and the server -------------------------------------------------------

    @rule(
        n=st.integers(0, 50),
        step=st.sampled_from(["accept", "dispatch", "resolve", "close", "send_back", "overdue", "notes", "department"]),
    )
    def console_acts(self, n, step):
        records = {i: r for i, r in self.backend.records().items() if not r.deleted}
        want = {
            "accept": ("case", "reported", {"status": "accepted"}),
            "dispatch": (
                "case",
                "accepted",
                {"status": "dispatched", "department": "Water", "due_at": "2030-01-01T00:00:00Z"},
            ),
            "resolve": ("case", "dispatched", {"status": "resolved", "feedback": "done by the console"}),
            "close": ("case", "resolved", {"status": "closed"}),
            "send_back": ("case", "resolved", {"status": "dispatched"}),
            "overdue": ("case", "dispatched", {"status": "overdue"}),
            "notes": ("household", None, {"notes": f"console note {n}"}),
            "department": ("case", None, {"department": f"Dept {n}"}),
        }[step]
        entity, status, fields = want
        ids = sorted(
            i for i, r in records.items() if r.entity == entity and (status is None or r.fields.get("status") == status)
        )
        if not ids:
            return
        rid = ids[n % len(ids)]
        sender = self.server_sender if step == "overdue" else self.console
        m = Mutation(mid=self.next_id(0xC), entity=entity, id=rid, op="upsert", base_version=records[rid].version,
                     hlc=self.backend.server_stamp(), fields=fields)
        [result] = self.backend.commit_as(sender, [m])
        self.record_results([m], sender.origin, [result])
        assert result.status is not MutationStatus.REJECTED, result

    # invariants --------------------------------------------------------------------------------

    @invariant()
    def no_mutation_applied_twice(self):
        if not self.devices:
            return
        mids = [e["mid"] for e in self.backend.change_log()]
        assert len(mids) == len(set(mids)), "a mid in the change log twice"
        versions: dict[str, int] = {}
        for e in self.backend.change_log():
            assert e["version"] == versions.get(e["record_id"], 0) + 1, "versions grow by one per change"
            versions[e["record_id"]] = e["version"]

    def nothing_lost_silently(self) -> None:
        check_no_lost_edits(self.applied, self.backend.change_log(), self.backend.conflicts())

    def everyone_syncs(self) -> None:
        for _ in range(2):
            for dev in self.devices:
                self.push(dev)
            for dev in self.devices:
                self.pull(dev, limit=500)

    def check_converged(self) -> None:
        server = {i: r for i, r in self.backend.records().items()}
        for dev in self.devices:
            assert dev.outbox == [], f"{dev.id} still has pending mutations"
            assert set(dev.known) == set(server), f"{dev.id} holds other records than the server"
            for i, rec in server.items():
                mine = dev.known[i]
                assert (mine.entity, mine.version, mine.hlc, mine.deleted, mine.fields) == (
                    rec.entity, rec.version, rec.hlc, rec.deleted, rec.fields
                ), f"{dev.id} differs from the server on {i}:\n  device {mine}\n  server {rec}"
            for mid, result in dev.results.items():
                assert result == self.first[mid], "the device was told the first result"
        sent = {m.mid for m, _, _ in self.applied}
        for dev in self.devices:
            assert set(dev.results) <= sent

    @rule()
    def everyone_syncs_and_converges(self):
        """G3 also holds mid-run, whenever everybody syncs."""
        self.everyone_syncs()
        self.check_converged()
        self.nothing_lost_silently()

    def teardown(self) -> None:
        try:
            if self.devices:
                self.everyone_syncs()
                self.check_converged()
                self.nothing_lost_silently()
                # G1: every mutation a device made ended applied, merged or rejected, and it was told which
                for dev in self.devices:
                    for mid in self.made[dev.id]:
                        assert mid in dev.results, f"{dev.id} was never told what became of {mid}"
        finally:
            self.backend.close()
