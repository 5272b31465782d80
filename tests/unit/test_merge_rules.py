"""The merge rules of protocol sections 4 and 5, on ``sync.merge.apply_mutation`` alone.

Each rule gets the protocol's own examples and a property over arrival orders: the server sees
concurrent edits in whatever order the network delivers them, and the outcome the rule promises
must not depend on that order. A mutation the server rejects must leave the record as it was.
"""

from __future__ import annotations

import itertools
import uuid

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared_schema.messages import Mutation, MutationStatus, RejectCode
from shared_schema.workflow import CASE_TRANSITIONS, Actor, CaseStatus
from sync.hlc import format_stamp
from sync.merge import DELETED_FIELD, Outcome, RecordState, apply_mutation

GRID = "00000000-0000-4000-8000-0000000000a1"
OTHER_GRID = "00000000-0000-4000-8000-0000000000b2"
SCOPE = frozenset({GRID})
T0 = 1_764_000_000_000

DEVICES = ["dev-a", "dev-b", "dev-c", "dev-d"]
CONSOLE = "console:supervisor"


def uid() -> str:
    return str(uuid.uuid4())


def hlc(ms: int, node: str = "dev-a", counter: int = 0) -> str:
    return format_stamp(T0 + ms, counter, node)


def mutation(
    entity: str, record_id: str, fields: dict | None = None, *, base: int, stamp: str, op: str = "upsert"
) -> Mutation:
    return Mutation(mid=uid(), entity=entity, id=record_id, op=op, base_version=base, hlc=stamp, fields=fields or {})


def apply(
    state: RecordState | None,
    m: Mutation,
    origin: str,
    *,
    actor: Actor = Actor.DEVICE,
    scope=SCOPE,
    stamp: str | None = None,
) -> Outcome:
    return apply_mutation(state, m, stamp=stamp or m.hlc, origin=origin, actor=actor, scope=scope)


def snapshot(state: RecordState | None):
    return msgspec.to_builtins(state)


def new_household(origin: str = "dev-a", **extra) -> RecordState:
    fields = {"grid_id": GRID, "address": "12 Elm Lane", "tags": ["elderly"], "members": 2, **extra}
    out = apply(None, mutation("household", uid(), fields, base=0, stamp=hlc(0, origin)), origin)
    assert out.status is MutationStatus.APPLIED and out.changed
    return out.state


def new_case(status: str = "reported", origin: str = "dev-a") -> RecordState:
    """A case at ``status``, walked there along the workflow by the actors allowed to."""
    fields = {"grid_id": GRID, "category": "drainage", "title": "Blocked drain by block 4", "status": "reported"}
    state = apply(None, mutation("case", uid(), fields, base=0, stamp=hlc(0, origin)), origin).state
    path = {
        "reported": [],
        "accepted": [("accepted", Actor.CONSOLE)],
        "dispatched": [("accepted", Actor.CONSOLE), ("dispatched", Actor.CONSOLE)],
        "overdue": [("accepted", Actor.CONSOLE), ("dispatched", Actor.CONSOLE), ("overdue", Actor.SERVER)],
        "resolved": [("accepted", Actor.CONSOLE), ("dispatched", Actor.CONSOLE), ("resolved", Actor.CONSOLE)],
        "closed": [
            ("accepted", Actor.CONSOLE),
            ("dispatched", Actor.CONSOLE),
            ("resolved", Actor.CONSOLE),
            ("closed", Actor.CONSOLE),
        ],
    }[status]
    for step, (to, actor) in enumerate(path, start=1):
        m = mutation("case", state.id, {"status": to}, base=state.version, stamp=hlc(step, "server"))
        out = apply(state, m, "console:x" if actor is Actor.CONSOLE else "server", actor=actor, scope=None)
        assert out.status is MutationStatus.APPLIED, out.rejection
        state = out.state
    assert state.fields["status"] == status
    return state


def run_in_order(state: RecordState, edits: list[tuple[str, Mutation]]) -> tuple[RecordState, list[Outcome]]:
    outcomes = []
    for origin, m in edits:
        out = apply(state, m, origin)
        outcomes.append(out)
        state = out.state
    return state, outcomes


# ---- create ------------------------------------------------------------------------------


def test_a_new_record_is_applied_at_version_one_with_every_field_in_the_change_log():
    out = apply(
        None,
        mutation(
            "household", uid(), {"grid_id": GRID, "address": "3 Mill Rd", "tags": ["b", "a", "b"]}, base=0, stamp=hlc(0)
        ),
        "dev-a",
    )
    assert out.status is MutationStatus.APPLIED
    assert out.state.version == 1 and out.state.grid_id == GRID and not out.state.deleted
    # union stored sorted, once
    assert out.state.fields == {"grid_id": GRID, "address": "3 Mill Rd", "tags": ["a", "b"]}
    assert out.changes == {"grid_id": (None, GRID), "address": (None, "3 Mill Rd"), "tags": (None, ["a", "b"])}


def test_a_new_record_missing_required_fields_is_rejected_and_names_them():
    out = apply(None, mutation("visit", uid(), {"grid_id": GRID, "notes": "x"}, base=0, stamp=hlc(0)), "dev-a")
    assert out.status is MutationStatus.REJECTED and out.state is None
    assert out.rejection.code is RejectCode.INVALID
    assert (
        "household_id" in out.rejection.message
        and "method" in out.rejection.message
        and "visited_at" in out.rejection.message
    )


# ---- lww -----------------------------------------------------------------------------------


def test_lww_the_later_stamp_wins_and_the_other_value_goes_to_the_conflict_log():
    """Protocol 4: two devices change a household's phone offline; the later edit wins."""
    base = new_household()
    early = ("dev-a", mutation("household", base.id, {"phone": "111"}, base=1, stamp=hlc(10, "dev-a")))
    late = ("dev-b", mutation("household", base.id, {"phone": "222"}, base=1, stamp=hlc(20, "dev-b")))
    for order in ([early, late], [late, early]):
        state, outcomes = run_in_order(base, order)
        assert state.fields["phone"] == "222"
        assert outcomes[0].status is MutationStatus.APPLIED and not outcomes[0].conflicts
        second = outcomes[1]
        assert second.status is MutationStatus.MERGED
        assert [(c.field, c.kept, c.lost, c.winner_hlc) for c in second.conflicts] == [
            ("phone", "222", "111", hlc(20, "dev-b"))
        ]


def test_lww_a_tie_on_time_and_counter_goes_to_the_larger_node_id():
    base = new_household()
    a = ("dev-a", mutation("household", base.id, {"notes": "from a"}, base=1, stamp=hlc(5, "dev-a", 3)))
    b = ("dev-b", mutation("household", base.id, {"notes": "from b"}, base=1, stamp=hlc(5, "dev-b", 3)))
    for order in ([a, b], [b, a]):
        state, outcomes = run_in_order(base, order)
        assert state.fields["notes"] == "from b"
        assert outcomes[1].conflicts[0].lost == "from a"


def test_lww_an_edit_made_after_seeing_the_latest_version_is_not_a_conflict():
    base = new_household()
    first = apply(base, mutation("household", base.id, {"members": 3}, base=1, stamp=hlc(50, "dev-b")), "dev-b").state
    # dev-a pulled version 2, then edits: its stamp may even be earlier (a slow clock).
    out = apply(first, mutation("household", base.id, {"members": 4}, base=2, stamp=hlc(40, "dev-a")), "dev-a")
    assert out.status is MutationStatus.APPLIED and not out.conflicts
    assert out.state.fields["members"] == 4 and out.state.version == 3


concurrent_lww_edits = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=30),
        st.integers(min_value=0, max_value=2),
        st.sampled_from(["x", "y", "z", "w"]),
    ),
    min_size=2,
    max_size=4,
)


@settings(max_examples=150)
@given(concurrent_lww_edits, st.randoms(use_true_random=False))
def test_lww_the_latest_stamp_wins_whatever_the_arrival_order(edits, rnd):
    """Up to four devices edit ``notes`` from version 1; every order ends on the value with the
    greatest stamp, and every other value is in some conflict entry's ``lost``."""
    base = new_household(notes="original")
    sent = [
        (DEVICES[i], mutation("household", base.id, {"notes": value}, base=1, stamp=hlc(ms, DEVICES[i], counter)))
        for i, (ms, counter, value) in enumerate(edits)
    ]
    winner = max(sent, key=lambda s: s[1].hlc)[1].fields["notes"]
    orders = list(itertools.permutations(sent))
    rnd.shuffle(orders)
    for order in orders[:6]:
        state, outcomes = run_in_order(base, list(order))
        assert state.fields["notes"] == winner
        lost = {c.lost for o in outcomes for c in o.conflicts if c.field == "notes"}
        kept = {c.kept for o in outcomes for c in o.conflicts if c.field == "notes"}
        for _, m in sent:
            assert m.fields["notes"] == winner or m.fields["notes"] in lost
        assert all(o.status is not MutationStatus.REJECTED for o in outcomes)
        assert kept <= {m.fields["notes"] for _, m in sent} | {"original"}


# ---- a device's own successive edits ------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.sampled_from(["notes", "members", "tags", "phone"]), st.integers(0, 9)),
        min_size=1,
        max_size=8,
    )
)
def test_a_devices_own_successive_edits_never_conflict(edits):
    """dev-a edits offline several times, all from version 1 (it has not pulled in between):
    each edit applies over its own previous one, with no conflict and nothing merged."""
    state = new_household()
    expected = dict(state.fields)
    for n, (name, value) in enumerate(edits, start=1):
        fields = {
            "notes": {"notes": f"note {value}"},
            "members": {"members": value},
            "tags": {"tags": [f"t{value}"]},
            "phone": {"phone": f"555 {value}"},
        }[name]
        out = apply(state, mutation("household", state.id, fields, base=1, stamp=hlc(n, "dev-a")), "dev-a")
        assert out.status is MutationStatus.APPLIED
        assert out.conflicts == []
        expected.update(fields)
        state = out.state
    assert state.fields == expected


def test_a_devices_second_edit_is_concurrent_with_another_devices_edit_in_between():
    base = new_household()
    state = apply(base, mutation("household", base.id, {"notes": "a1"}, base=1, stamp=hlc(10, "dev-a")), "dev-a").state
    state = apply(state, mutation("household", base.id, {"notes": "b1"}, base=1, stamp=hlc(30, "dev-b")), "dev-b").state
    out = apply(state, mutation("household", base.id, {"notes": "a2"}, base=1, stamp=hlc(20, "dev-a")), "dev-a")
    assert out.status is MutationStatus.MERGED
    assert out.state.fields["notes"] == "b1"
    assert [(c.kept, c.lost) for c in out.conflicts] == [("b1", "a2")]


# ---- union ---------------------------------------------------------------------------------

# Each device's new view of the tags; a device sends a field only when its edit changed it.
tag_sets = st.lists(
    st.sets(st.sampled_from(["a", "b", "c", "d", "e", "elderly"]), max_size=4).filter(lambda s: s != {"elderly"}),
    min_size=2,
    max_size=4,
)


@settings(max_examples=150)
@given(tag_sets, st.permutations(range(4)))
def test_union_of_concurrent_edits_is_order_independent(sets, perm):
    """Each device sends its own view of ``tags`` (it may add or drop tags) from version 1.
    However they arrive, the result holds every tag any concurrent edit sent, and no union
    edit writes a conflict entry."""
    base = new_household(origin="dev-z")  # tags ["elderly"]
    sent = [
        (DEVICES[i], mutation("household", base.id, {"tags": sorted(tags)}, base=1, stamp=hlc(10 + i, DEVICES[i])))
        for i, tags in enumerate(sets)
    ]
    order = [sent[i] for i in perm if i < len(sent)]
    state, outcomes = run_in_order(base, order)
    finals = set()
    for order_ in (order, list(reversed(order)), sent):
        end, outs = run_in_order(base, order_)
        finals.add(tuple(end.fields["tags"]))
        assert all(o.conflicts == [] for o in outs)
    assert len(finals) == 1
    first = set(order[0][1].fields["tags"])
    expected = first.union(*(set(m.fields["tags"]) for _, m in order[1:]))
    assert set(state.fields["tags"]) == expected
    assert state.fields["tags"] == sorted(expected)


def test_union_a_non_concurrent_edit_replaces_the_set_so_a_tag_can_be_removed():
    base = new_household()  # tags ["elderly"], made by dev-a
    out = apply(base, mutation("household", base.id, {"tags": []}, base=1, stamp=hlc(5, "dev-b")), "dev-b")
    assert out.status is MutationStatus.APPLIED and out.state.fields["tags"] == []


def test_union_a_merged_set_is_not_overwritten_by_the_merging_devices_next_edit():
    """dev-b adds "b" and pushes first. dev-a, offline from version 1, adds "a" (merged: both
    tags kept) and then drops "a" again, still from version 1. dev-a never saw "b": its second
    edit must not remove it (union writes no conflict entry, so "b" would vanish silently)."""
    base = new_household()  # tags ["elderly"]
    state = apply(
        base, mutation("household", base.id, {"tags": ["b", "elderly"]}, base=1, stamp=hlc(10, "dev-b")), "dev-b"
    ).state
    merged = apply(
        state, mutation("household", base.id, {"tags": ["a", "elderly"]}, base=1, stamp=hlc(20, "dev-a")), "dev-a"
    )
    assert merged.status is MutationStatus.MERGED
    assert merged.state.fields["tags"] == ["a", "b", "elderly"]
    again = apply(
        merged.state, mutation("household", base.id, {"tags": ["elderly"]}, base=1, stamp=hlc(30, "dev-a")), "dev-a"
    )
    assert "b" in again.state.fields["tags"]
    # dev-b, which never saw "a", must not drop it either.
    later = apply(again.state, mutation("household", base.id, {"tags": ["b"]}, base=2, stamp=hlc(40, "dev-b")), "dev-b")
    assert "a" in later.state.fields["tags"] or "a" not in again.state.fields["tags"]


def test_union_concurrent_sets_united_past_the_limit_are_refused_and_change_nothing():
    """Two phones each add photos to one case while offline: stored, their union must still fit
    the entity (every device checks what it pulls), so the edit that would overfill it is refused."""
    base = apply(None, mutation("case", uid(), {"grid_id": GRID, "category": "drainage", "title": "t",
                                                "status": "reported"}, base=0, stamp=hlc(1)), "dev-a").state
    mine = [f"{i:064x}" for i in range(20)]
    theirs = [f"{i + 100:064x}" for i in range(20)]
    first = apply(base, mutation("case", base.id, {"photos": mine}, base=1, stamp=hlc(10, "dev-a")), "dev-a")
    second = apply(first.state, mutation("case", base.id, {"photos": theirs}, base=1, stamp=hlc(11, "dev-b")), "dev-b")
    assert second.status is MutationStatus.REJECTED and second.rejection.code is RejectCode.INVALID
    assert "at most 32" in second.rejection.message and "$.fields.photos" in second.rejection.message
    assert snapshot(second.state) == snapshot(first.state)
    fits = apply(first.state, mutation("case", base.id, {"photos": theirs[:12]}, base=1, stamp=hlc(12, "dev-b")), "dev-b")
    assert fits.status is MutationStatus.MERGED and len(fits.state.fields["photos"]) == 32


# ---- transition ------------------------------------------------------------------------------

STATUSES = [s.value for s in CaseStatus]


def allowed(current: str, new: str, actor: Actor) -> bool:
    return current == new or actor in CASE_TRANSITIONS.get((current, new), frozenset())


@settings(max_examples=200)
@given(st.sampled_from(STATUSES), st.sampled_from(STATUSES), st.sampled_from([Actor.DEVICE, Actor.CONSOLE]))
def test_transition_applies_only_along_the_workflow_and_a_rejection_changes_nothing(current, new, actor):
    state = new_case(current)
    before = snapshot(state)
    origin = "dev-b" if actor is Actor.DEVICE else CONSOLE
    m = mutation("case", state.id, {"status": new, "feedback": "done"}, base=state.version, stamp=hlc(100, "dev-b"))
    out = apply(state, m, origin, actor=actor, scope=SCOPE if actor is Actor.DEVICE else None)
    if allowed(current, new, actor):
        assert out.status is MutationStatus.APPLIED
        assert out.state.fields["status"] == new
    else:
        assert out.status is MutationStatus.REJECTED
        assert out.rejection.code is RejectCode.INVALID_TRANSITION
        assert current in out.rejection.message and new in out.rejection.message
        assert not out.changed
        assert snapshot(out.state) == before
        assert snapshot(state) == before


@pytest.mark.parametrize("start", ["dispatched", "overdue"])
def test_a_device_resolves_a_dispatched_or_overdue_case_with_feedback(start):
    state = new_case(start)
    m = mutation(
        "case",
        state.id,
        {"status": "resolved", "feedback": "Drain cleared"},
        base=state.version,
        stamp=hlc(100, "dev-b"),
    )
    out = apply(state, m, "dev-b")
    assert out.status is MutationStatus.APPLIED
    assert out.state.fields["status"] == "resolved" and out.state.fields["feedback"] == "Drain cleared"


@pytest.mark.parametrize("status", ["accepted", "dispatched", "resolved", "closed", "overdue"])
def test_a_device_may_create_a_case_only_as_reported(status):
    fields = {"grid_id": GRID, "category": "noise", "title": "Late music", "status": status}
    out = apply(None, mutation("case", uid(), fields, base=0, stamp=hlc(0)), "dev-a")
    assert out.status is MutationStatus.REJECTED
    assert out.rejection.code is RejectCode.INVALID_TRANSITION
    assert out.state is None


def test_transition_is_checked_from_the_servers_current_state_not_the_devices_base():
    """The device saw the case dispatched (version 3); meanwhile the console resolved and
    closed it. The device's resolve is now an invalid move from closed."""
    state = new_case("closed")
    m = mutation("case", state.id, {"status": "resolved"}, base=3, stamp=hlc(100, "dev-b"))
    out = apply(state, m, "dev-b")
    assert out.status is MutationStatus.REJECTED and out.rejection.code is RejectCode.INVALID_TRANSITION
    assert out.state is state



@pytest.mark.parametrize("feedback", [None, "", " \u3000"])
def test_a_device_resolves_a_case_only_with_feedback(feedback):
    """Section 9: devices resolve "with feedback" (what was done), in the move or stored before."""
    state = new_case("dispatched")
    fields = {"status": "resolved"} if feedback is None else {"status": "resolved", "feedback": feedback}
    out = apply(state, mutation("case", state.id, fields, base=state.version, stamp=hlc(100, "dev-b")), "dev-b")
    assert out.status is MutationStatus.REJECTED and out.rejection.code is RejectCode.INVALID_TRANSITION
    assert "feedback" in out.rejection.message and out.state is state
    # A supervisor may resolve on the phone's behalf without it.
    by_console = apply(state, mutation("case", state.id, {"status": "resolved"}, base=state.version,
                                       stamp=hlc(100, "server")), "console:x", actor=Actor.CONSOLE, scope=None)
    assert by_console.status is MutationStatus.APPLIED
    # Feedback stored before (a case sent back after a first fix) is enough for the next resolve.
    noted = apply(state, mutation("case", state.id, {"feedback": "Drain cleared"}, base=state.version,
                                  stamp=hlc(101, "dev-b")), "dev-b").state
    again = apply(noted, mutation("case", state.id, {"status": "resolved"}, base=noted.version,
                                  stamp=hlc(102, "dev-b")), "dev-b")
    assert again.status is MutationStatus.APPLIED and again.state.fields["status"] == "resolved"

# ---- server fields -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entity,fields",
    [
        ("case", {"department": "Water"}),
        ("case", {"due_at": "2026-01-01T00:00:00Z"}),
        ("case", {"rating": 4}),
        ("case", {"feedback": "ok", "rating": 5}),
        ("visit", {"review": {"verdict": "approved"}}),
    ],
)
def test_a_device_sending_a_server_field_is_rejected_read_only_field(entity, fields):
    state = new_case("dispatched") if entity == "case" else apply(
        None,
        mutation(
            "visit",
            uid(),
            {"grid_id": GRID, "household_id": uid(), "method": "inquiry", "visited_at": "2026-01-01T09:00:00Z"},
            base=0,
            stamp=hlc(0),
        ),
        "dev-a",
    ).state
    before = snapshot(state)
    out = apply(state, mutation(entity, state.id, fields, base=state.version, stamp=hlc(100)), "dev-a")
    assert out.status is MutationStatus.REJECTED
    assert out.rejection.code is RejectCode.READ_ONLY_FIELD
    assert next(f for f in fields if f not in ("feedback",)) in out.rejection.message
    assert snapshot(out.state) == before


def test_the_console_may_write_server_fields():
    state = new_case("accepted")
    m = mutation(
        "case",
        state.id,
        {"department": "Water", "due_at": "2026-01-01T00:00:00Z", "status": "dispatched"},
        base=state.version,
        stamp=hlc(100, "server"),
    )
    out = apply(state, m, CONSOLE, actor=Actor.CONSOLE, scope=None)
    assert out.status is MutationStatus.APPLIED
    assert out.state.fields["department"] == "Water" and out.state.fields["status"] == "dispatched"


def test_a_device_writing_a_grid_is_rejected_read_only_field():
    m = mutation("grid", uid(), {"name": "Grid 7", "community": "East"}, base=0, stamp=hlc(0))
    out = apply(None, m, "dev-a")
    assert out.status is MutationStatus.REJECTED and out.rejection.code is RejectCode.READ_ONLY_FIELD


# ---- validation, unknown entity, scope ------------------------------------------------------


@pytest.mark.parametrize(
    "fields,path",
    [
        ({"method": "telepathy"}, "$.fields.method"),
        ({"notes": 42}, "$.fields.notes"),
        ({"follow_up_on": "next tuesday"}, "$.fields.follow_up_on"),
        ({"members": 500}, "$.fields.members"),
    ],
)
def test_a_validation_error_is_rejected_invalid_and_names_the_path(fields, path):
    entity = "household" if "members" in fields else "visit"
    base = (
        {"grid_id": GRID, "address": "x"}
        if entity == "household"
        else {"grid_id": GRID, "household_id": uid(), "method": "sit", "visited_at": "2026-01-01T09:00:00Z"}
    )
    m = mutation(entity, uid(), {**base, **fields}, base=0, stamp=hlc(0))
    out = apply(None, m, "dev-a")
    assert out.status is MutationStatus.REJECTED
    assert out.rejection.code is RejectCode.INVALID
    assert f"at `{path}`" in out.rejection.message


@pytest.mark.parametrize(
    "entity,fields,path",
    [
        ("household", {"grid_id": "not-a-uuid"}, "$.fields.grid_id"),
        ("household", {"phone": "call me"}, "$.fields.phone"),
        ("patrol", {"photos": ["not-a-hash"]}, "$.fields.photos[0]"),
    ],
)
def test_a_pattern_error_names_the_path_under_fields(entity, fields, path):
    required = {"household": {"address": "x"}, "patrol": {"started_at": "2026-01-01T09:00:00Z"}}[entity]
    m = mutation(entity, uid(), {"grid_id": GRID, **required, **fields}, base=0, stamp=hlc(0))
    out = apply(None, m, "dev-a", scope=None)
    assert out.status is MutationStatus.REJECTED and out.rejection.code is RejectCode.INVALID
    assert f"at `{path}`" in out.rejection.message


def test_an_unknown_field_is_rejected_invalid():
    state = new_household()
    out = apply(state, mutation("household", state.id, {"colour": "red"}, base=1, stamp=hlc(5)), "dev-a")
    assert out.status is MutationStatus.REJECTED and out.rejection.code is RejectCode.INVALID
    assert "colour" in out.rejection.message


def test_an_empty_upsert_is_rejected_invalid():
    state = new_household()
    out = apply(state, mutation("household", state.id, {}, base=1, stamp=hlc(5)), "dev-a")
    assert out.status is MutationStatus.REJECTED and out.rejection.code is RejectCode.INVALID


@pytest.mark.parametrize("op", ["upsert", "delete"])
def test_an_unknown_entity_is_rejected_unknown_entity(op):
    out = apply(None, mutation("spaceship", uid(), {"grid_id": GRID}, base=0, stamp=hlc(0), op=op), "dev-a")
    assert out.status is MutationStatus.REJECTED and out.rejection.code is RejectCode.UNKNOWN_ENTITY
    assert "spaceship" in out.rejection.message


def test_creating_in_a_grid_outside_scope_is_rejected_forbidden_scope():
    out = apply(
        None, mutation("household", uid(), {"grid_id": OTHER_GRID, "address": "x"}, base=0, stamp=hlc(0)), "dev-a"
    )
    assert out.status is MutationStatus.REJECTED and out.rejection.code is RejectCode.FORBIDDEN_SCOPE
    assert out.state is None


@pytest.mark.parametrize("op,fields", [("upsert", {"notes": "hi"}), ("delete", {})])
def test_writing_a_record_of_a_grid_outside_scope_is_rejected_forbidden_scope(op, fields):
    state = new_household()
    before = snapshot(state)
    m = mutation("household", state.id, fields, base=1, stamp=hlc(5, "dev-z"), op=op)
    out = apply(state, m, "dev-z", scope=frozenset({OTHER_GRID}))
    assert out.status is MutationStatus.REJECTED and out.rejection.code is RejectCode.FORBIDDEN_SCOPE
    assert out.state is None  # the result carries nothing of a record outside the scope
    assert snapshot(state) == before


def test_a_record_outside_scope_is_not_told_apart_by_its_entity():
    state = new_household()
    m = mutation("visit", state.id, {"notes": "hi"}, base=1, stamp=hlc(5, "dev-z"))
    out = apply(state, m, "dev-z", scope=frozenset({OTHER_GRID}))
    assert out.rejection.code is RejectCode.FORBIDDEN_SCOPE and out.state is None
    assert "household" not in out.rejection.message


@pytest.mark.parametrize("op,fields", [("upsert", {"notes": "hi"}), ("delete", {})])
def test_a_base_version_ahead_of_the_record_is_rejected_invalid(op, fields):
    state = new_household()
    before = snapshot(state)
    m = mutation("household", state.id, fields, base=state.version + 1, stamp=hlc(5, "dev-z"), op=op)
    out = apply(state, m, "dev-z")
    assert out.status is MutationStatus.REJECTED and out.rejection.code is RejectCode.INVALID
    assert "ahead" in out.rejection.message
    assert snapshot(state) == before and not out.changed


def test_a_record_cannot_move_to_another_grid():
    state = new_household()
    out = apply(
        state, mutation("household", state.id, {"grid_id": OTHER_GRID}, base=1, stamp=hlc(5)), "dev-a", scope=None
    )
    assert out.status is MutationStatus.REJECTED and out.rejection.code is RejectCode.INVALID


def test_a_mutation_naming_the_wrong_entity_for_a_record_is_rejected():
    state = new_household()
    out = apply(state, mutation("diary", state.id, {"text": "x"}, base=1, stamp=hlc(5)), "dev-a")
    assert out.status is MutationStatus.REJECTED and out.rejection.code is RejectCode.INVALID


any_fields = st.dictionaries(
    st.sampled_from(["grid_id", "address", "members", "tags", "notes", "phone", "colour", "status", "rating"]),
    st.one_of(
        st.just(GRID),
        st.just(OTHER_GRID),
        st.text(max_size=5),
        st.integers(-5, 200),
        st.lists(st.sampled_from(["a", "b", ""]), max_size=3),
        st.none(),
    ),
    max_size=4,
)


@settings(max_examples=200)
@given(
    any_fields,
    st.sampled_from(["household", "case", "grid", "nope"]),
    st.sampled_from(["upsert", "delete"]),
    st.sampled_from([Actor.DEVICE, Actor.CONSOLE]),
    st.sampled_from([SCOPE, frozenset({OTHER_GRID}), None]),
    st.booleans(),
)
def test_a_rejected_mutation_leaves_the_record_exactly_as_it_was(fields, entity, op, actor, scope, deleted):
    state = new_household()
    if deleted:
        state = apply(state, mutation("household", state.id, base=1, stamp=hlc(3, "dev-c"), op="delete"), "dev-c").state
    before = snapshot(state)
    out = apply(
        state,
        mutation(entity, state.id, fields, base=1, stamp=hlc(5, "dev-b"), op=op),
        "dev-b",
        actor=actor,
        scope=scope,
    )
    assert snapshot(state) == before  # never modified in place
    if out.status is MutationStatus.REJECTED:
        assert out.rejection is not None and out.rejection.message
        assert not out.changed and out.changes == {} and out.conflicts == []
        if scope is not None and state.grid_id not in scope:
            assert out.state is None  # nothing of a record outside the scope goes back
        else:
            assert snapshot(out.state) == before
    else:
        assert out.rejection is None


# ---- delete against edit ----------------------------------------------------------------------


@settings(max_examples=150)
@given(st.integers(0, 20), st.integers(0, 20), st.booleans(), st.sampled_from(["notes", "tags", "members"]))
def test_delete_against_a_concurrent_edit_keeps_the_later_one_and_logs_a_conflict_either_way(
    edit_ms, delete_ms, edit_first, field
):
    """dev-a edits a household offline while dev-b deletes it, both from version 1."""
    base = new_household(origin="dev-c")
    value = {"notes": "moved to 4B", "tags": ["moved"], "members": 5}[field]
    edit = ("dev-a", mutation("household", base.id, {field: value}, base=1, stamp=hlc(edit_ms, "dev-a")))
    delete = ("dev-b", mutation("household", base.id, base=1, stamp=hlc(delete_ms, "dev-b"), op="delete"))
    state, outcomes = run_in_order(base, [edit, delete] if edit_first else [delete, edit])
    delete_wins = delete[1].hlc > edit[1].hlc
    assert state.deleted is delete_wins
    if delete_wins:
        assert state.to_record().fields == {}
    else:  # the edit survives (a tag edit arriving after the delete is merged with the old tags)
        assert state.fields[field] == value or field == "tags" and set(value) <= set(state.fields[field])
        assert state.to_record().fields == state.fields
    second = outcomes[1]
    assert second.status is MutationStatus.MERGED
    deleted_conflicts = [c for c in second.conflicts if c.field == DELETED_FIELD]
    assert len(deleted_conflicts) == 1
    conflict = deleted_conflicts[0]
    assert conflict.winner_hlc == max(edit[1].hlc, delete[1].hlc)
    if edit_first and delete_wins:  # the delete arrives second and wins: the edit's fields are what lost
        assert conflict.kept is True and conflict.lost == {field: outcomes[0].state.fields[field]}
    elif edit_first:  # the delete arrives second and loses
        assert (conflict.kept, conflict.lost) == (False, True)
    elif delete_wins:  # the edit arrives second and loses: its fields are kept in the log
        assert conflict.kept is True and conflict.lost == {field: value}
    else:
        assert (conflict.kept, conflict.lost) == (False, True)
    assert all(o.status is not MutationStatus.REJECTED for o in outcomes)


def test_a_delete_with_no_concurrent_edit_applies_and_sends_empty_fields():
    state = new_household()
    out = apply(state, mutation("household", state.id, base=1, stamp=hlc(5, "dev-b"), op="delete"), "dev-b")
    assert out.status is MutationStatus.APPLIED and out.conflicts == []
    assert out.state.deleted and out.state.version == 2
    record = out.state.to_record()
    assert record.deleted and record.fields == {}
    assert out.state.fields == state.fields  # kept for the logs


def test_deleting_an_unknown_record_is_rejected_and_deleting_twice_changes_nothing_visible():
    assert (
        apply(None, mutation("household", uid(), base=0, stamp=hlc(0), op="delete"), "dev-a").rejection.code
        is RejectCode.INVALID
    )
    state = new_household()
    gone = apply(state, mutation("household", state.id, base=1, stamp=hlc(5, "dev-b"), op="delete"), "dev-b").state
    earlier = apply(gone, mutation("household", state.id, base=1, stamp=hlc(4, "dev-c"), op="delete"), "dev-c")
    assert earlier.status is MutationStatus.APPLIED and not earlier.changed and earlier.state.version == 2
    # A later second delete moves the tombstone's stamp (an edit must beat both), nothing else.
    later = apply(gone, mutation("household", state.id, base=1, stamp=hlc(6, "dev-c"), op="delete"), "dev-c")
    assert later.status is MutationStatus.APPLIED and later.changed and later.conflicts == []
    assert later.state.deleted and later.state.deleted_meta.hlc == hlc(6, "dev-c")
    assert later.state.to_record().fields == {} and later.state.fields == gone.fields



@pytest.mark.parametrize(("editor", "base", "stamp_ms"), [
    ("dev-c", 2, 1),  # another writer that had pulled the tombstone, even with an earlier stamp
    ("dev-b", 1, 1),  # the deleter itself, whatever base it names
])
def test_an_edit_made_after_seeing_the_delete_brings_the_record_back_with_no_conflict(editor, base, stamp_ms):
    """Protocol Changes 22: how a supervisor brings back a record deleted by mistake."""
    state = new_household()
    gone = apply(state, mutation("household", state.id, base=1, stamp=hlc(5, "dev-b"), op="delete"), "dev-b").state
    back = apply(gone, mutation("household", state.id, {"notes": "搬回来了"}, base=base,
                                stamp=hlc(stamp_ms, editor)), editor)
    assert back.status is MutationStatus.APPLIED and back.conflicts == []
    assert not back.state.deleted and back.state.version == 3
    assert back.state.to_record().fields == {**state.fields, "notes": "搬回来了"}


edits_and_a_delete = st.lists(
    st.tuples(st.sampled_from(["notes", "tags", "members"]), st.integers(0, 40)),
    min_size=1,
    max_size=3,
)


@settings(max_examples=300)
@given(edits_and_a_delete, st.integers(0, 40), st.permutations(range(4)))
@example(edits=[("tags", 10), ("tags", 30)], delete_ms=20, perm=[1, 0, 2, 3])  # a merged set keeps the later stamp
def test_a_delete_survives_only_if_later_than_every_concurrent_edit_whatever_the_order(edits, delete_ms, perm):
    """Several devices edit a household offline (lww and union fields) while another deletes it,
    all from version 1. In every arrival order the record ends deleted exactly when the delete's
    stamp is later than every edit's (protocol 5), and the second-to-arrive side logs a conflict."""
    base = new_household(origin="dev-z")
    sent = []
    for i, (name, ms) in enumerate(edits):
        value = {"notes": f"note {i}", "tags": [f"t{i}"], "members": i + 3}[name]
        sent.append((DEVICES[i], mutation("household", base.id, {name: value}, base=1, stamp=hlc(ms, DEVICES[i]))))
    delete = ("dev-d", mutation("household", base.id, base=1, stamp=hlc(delete_ms, "dev-d"), op="delete"))
    sent.append(delete)
    order = [sent[i] for i in perm if i < len(sent)]
    state, outcomes = run_in_order(base, order)
    assert state.deleted is (delete[1].hlc > max(m.hlc for _, m in sent[:-1]))
    assert sum(1 for o in outcomes for c in o.conflicts if c.field == DELETED_FIELD) >= 1 or order[0] is delete and all(
        m.hlc < delete[1].hlc for _, m in sent[:-1]
    )


one_edit_each = st.lists(
    st.tuples(st.sampled_from(["notes", "address", "tags", "members", "delete"]), st.integers(0, 30)),
    min_size=2,
    max_size=4,
)


@settings(max_examples=200)
@given(one_edit_each)
# an edit that lost to the delete comes back with the later one
@example([("notes", 10), ("delete", 20), ("address", 30)])
def test_concurrent_edits_from_one_version_end_in_the_same_record_whatever_the_arrival_order(edits):
    """Up to four devices each send one edit (or a delete) made offline from version 1. The
    server may see them in any order; what every device finally pulls must not depend on it."""
    base = new_household(origin="dev-z")
    sent = []
    for i, (name, ms) in enumerate(edits):
        node = DEVICES[i]
        if name == "delete":
            sent.append((node, mutation("household", base.id, base=1, stamp=hlc(ms, node), op="delete")))
        else:
            value = {"notes": f"note {i}", "address": f"{i} Mill Rd", "tags": [f"t{i}"], "members": i + 3}[name]
            sent.append((node, mutation("household", base.id, {name: value}, base=1, stamp=hlc(ms, node))))
    finals = {}
    for order in itertools.permutations(sent):
        state, outcomes = run_in_order(base, list(order))
        assert all(o.status is not MutationStatus.REJECTED for o in outcomes)
        record = state.to_record()
        finals.setdefault(
            (record.deleted, msgspec.json.encode(record.fields, order="sorted")),
            [m.fields or "delete" for _, m in order],
        )
    assert len(finals) == 1, finals


device_scripts = st.lists(
    st.lists(
        st.tuples(st.sampled_from(["notes", "address", "add_tag", "delete"]), st.integers(1, 15)),
        min_size=1,
        max_size=3,
    ),
    min_size=2,
    max_size=3,
)


def interleavings(scripts: list[list], rnd) -> list[list]:
    """A few arrival orders that keep each device's own mutations in the order it made them."""
    orders = []
    for _ in range(8):
        queues = [list(s) for s in scripts]
        order = []
        while any(queues):
            q = rnd.choice([q for q in queues if q])
            order.append(q.pop(0))
        orders.append(order)
    return orders


@settings(max_examples=200)
@given(device_scripts, st.randoms(use_true_random=False))
def test_several_offline_edits_per_device_end_in_the_same_record_whatever_the_interleaving(scripts, rnd):
    """Each device makes a few edits offline from version 1 (its stamps grow), adding tags but
    never removing one (a removal is add-wins against a concurrent add: order decides); the
    server receives each device's mutations in order, interleaved with the others' anyhow."""
    base = new_household(origin="dev-z")
    sent = []
    for i, script in enumerate(scripts):
        node, ms, tags, mine = DEVICES[i], 0, {"elderly"}, []
        for n, (what, step) in enumerate(script):
            ms += step
            stamp = hlc(ms, node)
            if what == "delete":
                mine.append((node, mutation("household", base.id, base=1, stamp=stamp, op="delete")))
                break  # the record is gone from this device's screen
            if what == "add_tag":
                tags = tags | {f"{node}-{n}"}
                fields = {"tags": sorted(tags)}
            else:
                fields = {what: f"{node} {what} {n}"}
            mine.append((node, mutation("household", base.id, fields, base=1, stamp=stamp)))
        sent.append(mine)
    finals = {}
    for order in interleavings(sent, rnd):
        state, outcomes = run_in_order(base, order)
        assert all(o.status is not MutationStatus.REJECTED for o in outcomes)
        record = state.to_record()
        finals.setdefault(
            (record.deleted, msgspec.json.encode(record.fields, order="sorted")),
            [m.fields or "delete" for _, m in order],
        )
    assert len(finals) == 1, finals
