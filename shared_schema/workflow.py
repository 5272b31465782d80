"""The case workflow: the closed loop of receive, dispatch, supervise, feedback and evaluation.

Fields with the ``transition`` rule move only along the edges below, and each edge names who
may take it. Devices report (create as ``reported``) and resolve; the console takes the other
steps; the server alone marks a dispatched case ``overdue``.
"""

from __future__ import annotations

import enum


class Actor(str, enum.Enum):
    DEVICE = "device"
    CONSOLE = "console"
    SERVER = "server"


class CaseStatus(str, enum.Enum):
    REPORTED = "reported"
    ACCEPTED = "accepted"
    DISPATCHED = "dispatched"
    OVERDUE = "overdue"
    RESOLVED = "resolved"
    CLOSED = "closed"


_D, _C, _S = Actor.DEVICE, Actor.CONSOLE, Actor.SERVER

CASE_INITIAL: dict[str, frozenset[Actor]] = {
    CaseStatus.REPORTED.value: frozenset({_D, _C}),
}

CASE_TRANSITIONS: dict[tuple[str, str], frozenset[Actor]] = {
    ("reported", "accepted"): frozenset({_C}),
    ("accepted", "dispatched"): frozenset({_C}),
    ("dispatched", "overdue"): frozenset({_S}),
    ("dispatched", "resolved"): frozenset({_D, _C}),
    ("overdue", "resolved"): frozenset({_D, _C}),
    ("resolved", "closed"): frozenset({_C}),
    ("resolved", "dispatched"): frozenset({_C}),
}

# What a move by an actor must leave filled in: a device resolves a case with what was done
# (section 9's "resolve with feedback"); a supervisor resolving on the phone's behalf may not know.
CASE_MOVE_NEEDS: dict[tuple[str, Actor], str] = {
    (CaseStatus.RESOLVED.value, _D): "feedback",
}

# entity -> field -> (initial states, transitions)
WORKFLOWS: dict[str, dict[str, tuple[dict[str, frozenset[Actor]], dict[tuple[str, str], frozenset[Actor]]]]] = {
    "case": {"status": (CASE_INITIAL, CASE_TRANSITIONS)},
}
MOVE_NEEDS: dict[str, dict[str, dict[tuple[str, Actor], str]]] = {"case": {"status": CASE_MOVE_NEEDS}}


def missing_for_move(entity: str, field: str, new: str, actor: Actor, fields_after: dict) -> str | None:
    """The field a move to ``new`` by ``actor`` needs and ``fields_after`` (the record's fields as
    the move leaves them) has empty, or None."""
    needed = MOVE_NEEDS.get(entity, {}).get(field, {}).get((new, actor))
    if needed is None:
        return None
    value = fields_after.get(needed)
    return needed if not (isinstance(value, str) and value.strip()) else None


def may_create_in(entity: str, field: str, state: str, actor: Actor) -> bool:
    """Whether ``actor`` may create a record whose workflow field starts at ``state``."""
    initial, _ = WORKFLOWS[entity][field]
    return actor in initial.get(state, frozenset())


def may_transition(entity: str, field: str, current: str, new: str, actor: Actor) -> bool:
    """Whether ``actor`` may move a workflow field from ``current`` to ``new``."""
    if current == new:
        return True
    _, edges = WORKFLOWS[entity][field]
    return actor in edges.get((current, new), frozenset())


def next_states(entity: str, field: str, current: str, actor: Actor) -> list[str]:
    """The states ``actor`` may move the field to from ``current``, in declaration order."""
    _, edges = WORKFLOWS[entity][field]
    return [to for (frm, to), actors in edges.items() if frm == current and actor in actors]
