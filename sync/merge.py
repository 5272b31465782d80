"""The merge: what one mutation does to one stored record (protocol sections 4 and 5).

Pure functions, no I/O: the server calls ``apply_mutation`` inside its push transaction, and
the property tests call it directly. A field is *concurrent* when someone other than the
mutation's origin changed it after the mutation's ``base_version``; only concurrent fields
are resolved by their rule. A device's own later edits are never in conflict with its earlier
ones, even when it pushes them before it has seen the version its first edit produced.

The outcome of concurrent edits does not depend on the order they arrive in (the property
tests check it): each field keeps the latest stamp of the edits it holds, also when a later
edit brought no new value (a new version with the same value), an edit that loses to a later
delete still merges into what the tombstone keeps, and a second, later delete moves the
tombstone's stamp. One exception is by design: ``union`` is add-wins, so an item one device
removes while another concurrently keeps or adds it stays, and whether a removal sticks can
depend on order; an item leaves a set only through an edit that nobody else's change of the set
is concurrent with (the server keeps no per-item history).
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared_schema.entities import DEVICE_WRITABLE, ENTITIES, UNION_LIMITS, FieldsInvalid, validate_fields
from shared_schema.messages import APPLIED, MERGED, REJECTED, Conflict, Mutation, MutationStatus, Record, RejectCode
from shared_schema.rules import SERVER, TRANSITION, UNION, field_rules
from shared_schema.workflow import Actor, may_create_in, may_transition, missing_for_move

# Looked up once here, not per mutation through the enum metaclass (see shared_schema.messages.APPLIED).
_DEVICE = Actor.DEVICE

DELETED_FIELD = "deleted"  # the field name a delete-against-edit conflict entry carries
# The origin recorded for a union field whose value merges several writers' sets: it matches no
# sender, so every writer that has not seen the merged set is concurrent with it.
MERGED_ORIGIN = "merged"


class FieldMeta(msgspec.Struct, array_like=True):
    """When a field last changed: the record version, the winning stamp and its origin."""

    version: int
    hlc: str
    origin: str


class RecordState(msgspec.Struct, kw_only=True):
    """A record as the server stores it. Deleted records keep their fields (for the logs and
    for an edit that outlives a concurrent delete) but are sent with empty fields."""

    entity: str
    id: str
    grid_id: str
    version: int
    hlc: str
    deleted: bool = False
    fields: dict[str, Any] = {}
    meta: dict[str, FieldMeta] = {}
    deleted_meta: FieldMeta | None = None

    def to_record(self) -> Record:
        return Record(
            entity=self.entity,
            id=self.id,
            version=self.version,
            hlc=self.hlc,
            deleted=self.deleted,
            fields={} if self.deleted else self.fields,
        )


class Rejection(msgspec.Struct, frozen=True):
    code: RejectCode
    message: str


class Outcome(msgspec.Struct, kw_only=True):
    """What applying one mutation did.

    ``state`` is the record after the mutation (unchanged when nothing moved); ``changes`` maps
    each changed field to ``(before, after)`` for the change log; ``changed`` says whether a
    new version must be written.
    """

    status: MutationStatus
    state: RecordState | None
    changed: bool = False
    changes: dict[str, tuple[Any, Any]] = {}
    conflicts: list[Conflict] = []
    rejection: Rejection | None = None


def _reject(state: RecordState | None, code: RejectCode, message: str) -> Outcome:
    return Outcome(status=REJECTED, state=state, rejection=Rejection(code, message))


def apply_mutation(
    state: RecordState | None,
    mutation: Mutation,
    *,
    stamp: str,
    origin: str,
    actor: Actor,
    scope: frozenset[str] | None,
) -> Outcome:
    """Apply one mutation to the stored state of its record.

    Args:
        state: the record as stored, or None when the server has never seen it.
        mutation: the mutation as received.
        stamp: the mutation's effective hlc (the server re-stamps one from a clock too far ahead).
        origin: who sent it (a device id, or ``console:<user id>``); a field last changed by the
            same origin is never concurrent.
        actor: device, console or server: decides which fields and transitions are allowed.
        scope: the grid ids the sender may touch, or None for no limit.

    Returns:
        The outcome; a rejected outcome leaves ``state`` as it was.
    """
    if state is not None and scope is not None and state.grid_id not in scope:
        # Checked before anything that reads the record, and rejected without its state: the
        # result tells the sender nothing of a record outside its scope (no version, no entity).
        return _reject(None, RejectCode.FORBIDDEN_SCOPE, "this record is outside the grids you are assigned to")
    entity_type = ENTITIES.get(mutation.entity)
    if entity_type is None:
        return _reject(state, RejectCode.UNKNOWN_ENTITY, f"unknown entity {mutation.entity!r}")
    if state is not None and state.entity != mutation.entity:
        return _reject(state, RejectCode.INVALID, f"record {mutation.id} is a {state.entity}, not a {mutation.entity}")
    if actor is _DEVICE and mutation.entity not in DEVICE_WRITABLE:
        return _reject(
            state,
            RejectCode.READ_ONLY_FIELD,
            f"{mutation.entity} records are written by administrators only",
        )
    stored_version = state.version if state is not None else 0  # a record never stored: 0
    if mutation.base_version > stored_version:
        # No writer can have seen a version that was never written; taken at its word, it would
        # make every later change look seen, and overwrite it without a conflict entry (G1).
        return _reject(
            state,
            RejectCode.INVALID,
            f"base_version {mutation.base_version} is ahead of the record's version {stored_version}",
        )
    if mutation.op == "delete":
        return _apply_delete(state, mutation, stamp, origin)
    rules = field_rules(entity_type)
    if actor is _DEVICE:
        # Before the values are validated: a device that sends a server field is refused as
        # read_only_field whatever the value (protocol section 4), not as invalid when the value
        # would not fit.
        read_only = sorted(f for f in mutation.fields if f in rules and rules[f] is SERVER)
        if read_only:
            return _reject(state, RejectCode.READ_ONLY_FIELD, f"written by the server only: {', '.join(read_only)}")
    try:
        fields = validate_fields(mutation.entity, mutation.fields)
    except FieldsInvalid as exc:
        return _reject(state, RejectCode.INVALID, str(exc))
    if not fields:
        return _reject(state, RejectCode.INVALID, "an upsert must change at least one field")
    if "grid_id" in fields:
        if scope is not None and fields["grid_id"] not in scope:
            return _reject(state, RejectCode.FORBIDDEN_SCOPE, "the grid named is not one you are assigned to")
        if state is not None and fields["grid_id"] != state.grid_id:
            return _reject(state, RejectCode.INVALID, "a record cannot move to another grid")
    if state is None:
        return _create(mutation, fields, rules, stamp, origin, actor)
    return _update(state, mutation, fields, rules, stamp, origin, actor)


def _create(mutation: Mutation, fields: dict, rules: dict, stamp: str, origin: str, actor: Actor) -> Outcome:
    missing = sorted(ENTITIES[mutation.entity].REQUIRED_ON_CREATE - fields.keys())
    if missing:
        return _reject(None, RejectCode.INVALID, f"a new {mutation.entity} needs: {', '.join(missing)}")
    for name, value in fields.items():
        if rules[name] is TRANSITION and not may_create_in(mutation.entity, name, value, actor):
            return _reject(
                None,
                RejectCode.INVALID_TRANSITION,
                f"a new {mutation.entity} cannot start as {name}={value!r}",
            )
    meta = FieldMeta(1, stamp, origin)
    state = RecordState(
        entity=mutation.entity,
        id=mutation.id,
        grid_id=fields["grid_id"] if mutation.entity != "grid" else mutation.id,
        version=1,
        hlc=stamp,
        fields=dict(fields),
        meta={name: meta for name in fields},
    )
    return Outcome(
        status=APPLIED,
        state=state,
        changed=True,
        changes={name: (None, value) for name, value in fields.items()},
    )


def _is_concurrent(meta: FieldMeta | None, base_version: int, origin: str) -> bool:
    return meta is not None and meta.version > base_version and meta.origin != origin


def _update(
    state: RecordState, mutation: Mutation, fields: dict, rules: dict, stamp: str, origin: str, actor: Actor
) -> Outcome:
    new_version = state.version + 1
    new_fields = dict(state.fields)
    new_meta = dict(state.meta)
    changes: dict[str, tuple[Any, Any]] = {}
    conflicts: list[Conflict] = []
    any_concurrent = False
    deleted = state.deleted
    # A writer that brings back a record it saw deleted saw none of its fields (tombstones travel
    # without them), so a set the tombstone kept is one it has not seen: its edits unite with it.
    sets_unseen = False

    if state.deleted:
        concurrent_delete = _is_concurrent(state.deleted_meta, mutation.base_version, origin)
        any_concurrent = concurrent_delete
        if concurrent_delete and stamp <= state.deleted_meta.hlc:
            # The later delete wins: the record stays deleted and the edit is logged as lost. Its
            # fields still merge into what the tombstone keeps, so that a third, later edit that
            # outlives the delete brings the record back with them, exactly as when the edits
            # arrive before the delete (the outcome must not hang on arrival order).
            conflicts.append(Conflict(field=DELETED_FIELD, kept=True, lost=fields, winner_hlc=state.deleted_meta.hlc))
        else:
            if concurrent_delete:
                conflicts.append(Conflict(field=DELETED_FIELD, kept=False, lost=True, winner_hlc=stamp))
            sets_unseen = not concurrent_delete
            deleted = False
            changes[DELETED_FIELD] = (True, False)

    for name, incoming in fields.items():
        rule_ = rules[name]
        current = state.fields.get(name)
        meta = state.meta.get(name)
        concurrent = _is_concurrent(meta, mutation.base_version, origin)
        any_concurrent = any_concurrent or concurrent
        value = incoming
        if rule_ is TRANSITION:
            if current is None:
                if not may_create_in(mutation.entity, name, incoming, actor):
                    return _reject(state, RejectCode.INVALID_TRANSITION, f"{name} cannot start as {incoming!r}")
            elif not may_transition(mutation.entity, name, current, incoming, actor):
                return _reject(
                    state,
                    RejectCode.INVALID_TRANSITION,
                    f"{name} cannot move from {current!r} to {incoming!r}",
                )
            elif current != incoming and (
                needed := missing_for_move(mutation.entity, name, incoming, actor, {**state.fields, **fields})
            ):
                return _reject(
                    state, RejectCode.INVALID_TRANSITION, f"{name} moves to {incoming!r} only with {needed}"
                )
        elif rule_ is UNION:
            if concurrent or (sets_unseen and name in state.fields):
                value = sorted(set(current or ()) | set(incoming))
                limit = UNION_LIMITS[mutation.entity][name]
                if len(value) > limit:
                    return _reject(
                        state,
                        RejectCode.INVALID,
                        f"{name} would hold {len(value)} items, these {len(incoming)} united with the "
                        f"{len(current or ())} stored meanwhile by another writer; at most {limit}"
                        f" - at `$.fields.{name}`",
                    )
                # The merged set carries the latest stamp of the edits in it (a concurrent delete
                # compares against it), and names the sender as origin only when it is exactly what
                # the sender sent, stamped by it last: otherwise it holds items the sender never
                # saw, and the sender's own next edit must merge again, not replace the set.
                if value != current or stamp > meta.hlc:
                    owner = origin if value == incoming and stamp > meta.hlc else MERGED_ORIGIN
                    new_fields[name] = value
                    new_meta[name] = FieldMeta(new_version, max(stamp, meta.hlc), owner)
                    changes[name] = (current, value)
                continue
        elif concurrent:  # lww, and server fields written by the console
            if stamp > meta.hlc:
                if current != incoming:
                    conflicts.append(Conflict(field=name, kept=incoming, lost=current, winner_hlc=stamp))
                elif name in state.fields:
                    # Same value, later stamp: the field's winning stamp must still rise, else a
                    # third edit stamped between the two would win or lose by arrival order. Both
                    # writers now hold the value: like a merged union it counts as changed by
                    # nobody in particular, so the sender's next edit that has not seen this
                    # version is concurrent with the other writer's, whose value it then logs (G1).
                    new_meta[name] = FieldMeta(new_version, stamp, MERGED_ORIGIN)
                    changes[name] = (current, value)
                    continue
            else:
                if current != incoming:
                    conflicts.append(Conflict(field=name, kept=current, lost=incoming, winner_hlc=meta.hlc))
                continue
        if value != current or name not in state.fields:
            new_fields[name] = value
            new_meta[name] = FieldMeta(new_version, stamp, origin)
            changes[name] = (current, value)

    if sets_unseen:
        # Its next edits, sent before this version reached it, have not seen these sets either.
        for name, meta in state.meta.items():
            if rules.get(name) is UNION and name not in fields and name in state.fields:
                new_meta[name] = FieldMeta(new_version, meta.hlc, MERGED_ORIGIN)

    status = MERGED if any_concurrent else APPLIED
    if not changes:
        return Outcome(status=status, state=state, conflicts=conflicts)
    new_state = RecordState(
        entity=state.entity,
        id=state.id,
        grid_id=state.grid_id,
        version=new_version,
        hlc=max(state.hlc, stamp),
        deleted=deleted,
        fields=new_fields,
        meta=new_meta,
        deleted_meta=None if not deleted else state.deleted_meta,
    )
    return Outcome(status=status, state=new_state, changed=True, changes=changes, conflicts=conflicts)


def _apply_delete(state: RecordState | None, mutation: Mutation, stamp: str, origin: str) -> Outcome:
    if state is None:
        return _reject(None, RejectCode.INVALID, f"nothing to delete: record {mutation.id} is unknown")
    if state.deleted:
        if stamp <= state.deleted_meta.hlc:
            return Outcome(status=APPLIED, state=state)
        # A second, later delete: the tombstone takes its stamp, since an edit concurrent with
        # both must be later than both to bring the record back, whichever delete came first.
        return Outcome(
            status=APPLIED,
            state=_tombstone(state, stamp, origin),
            changed=True,
            changes={DELETED_FIELD: (True, True)},
        )
    concurrent = [name for name, m in state.meta.items() if _is_concurrent(m, mutation.base_version, origin)]
    if concurrent:
        latest_edit = max(state.meta[name].hlc for name in concurrent)
        if stamp <= latest_edit:
            conflict = Conflict(field=DELETED_FIELD, kept=False, lost=True, winner_hlc=latest_edit)
            return Outcome(status=MERGED, state=state, conflicts=[conflict])
    new_state = _tombstone(state, stamp, origin)
    # The edits the delete beats are what lost: their fields go in the entry, as when an edit
    # arrives after the delete and loses (G1), so a supervisor can bring them back.
    lost = {name: state.fields.get(name) for name in concurrent}
    conflicts = [Conflict(field=DELETED_FIELD, kept=True, lost=lost, winner_hlc=stamp)] if concurrent else []
    return Outcome(
        status=MERGED if concurrent else APPLIED,
        state=new_state,
        changed=True,
        changes={DELETED_FIELD: (False, True)},
        conflicts=conflicts,
    )


def _tombstone(state: RecordState, stamp: str, origin: str) -> RecordState:
    """The record deleted at ``stamp``: a new version that keeps its fields for the logs and for
    an edit that outlives the delete."""
    version = state.version + 1
    return msgspec.structs.replace(
        state, version=version, hlc=max(state.hlc, stamp), deleted=True,
        deleted_meta=FieldMeta(version, stamp, origin),
    )
