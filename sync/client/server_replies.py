"""What the server sends is checked here before any of it is stored.

The transport decodes each reply into its Struct, which fixes the envelope's types only: a
``Record`` may still name an entity no device knows, carry a negative version, a photo hash
like ``../../x`` (a blob's file name) or a ``grid_id`` that is a dict (which the store cannot
index). The store trusts what it is given, so the engine checks each reply here first:

- every record has a UUID id, a version of at least 1 and a readable stamp, or the reply is
  refused: no server sends such a record;
- a record of an entity this app does not know, or (unless deleted) whose fields do not fit its
  entity in shared_schema, is *set aside*: kept sealed apart from the records, with why, while
  the rest of its page or push is applied. A server may hold such a record for good (a newer
  server's entity or choice, or data stored before its checks tightened): refusing the page
  would stop every phone of the grid from syncing until someone fixed it on the server. The
  engine applies it once the app can read it (an upgrade), and the app tells its user;
- a field the entity does not have is dropped, not refused (a tolerant reader: a server that
  gains an optional field must not stop every older app in the field from pulling, and the
  store, which acts on some field names whatever the entity, never sees it);
- a push's results answer mutations that were sent, each at most once, and a result's record
  is the record of the mutation it answers;
- a pull page that says there is more holds changes, and its cursor fits in a request.

A reply that fails is refused whole with ``ProtocolError`` (code ``malformed``): nothing of it is
stored, the outbox keeps its entries and the cursor stays where it was, so nothing is lost and
the next round asks again. The message names the record and the field, for whoever runs the server.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from shared_schema.entities import ENTITIES, FieldsInvalid, validate_fields
from shared_schema.messages import MutationStatus, PullReply, PushReply, Record
from shared_schema.types import UUID_PATTERN
from sync.client.store import OutboxEntry, Unfit
from sync.errors import ProtocolError
from sync.hlc import parse_stamp

# A cursor travels back in the pull's query string; a longer one would not fit in the request
# head a server reads (uvicorn's h11 reads at most 16 KiB of it) and every later pull would fail.
MAX_CURSOR_LENGTH = 8 * 1024

_UUID = re.compile(UUID_PATTERN)
_FIELD_NAMES = {entity: frozenset(struct.__struct_fields__) for entity, struct in ENTITIES.items()}


def _refuse(what: str) -> ProtocolError:
    return ProtocolError("malformed", f"the server sent {what}")


def check_record(record: Record) -> str | None:
    """Refuse a record that no server could have sent; say why this app cannot hold one that a
    server could (see the module docstring); drop the fields its entity does not have.

    Returns:
        Why the record must be set aside, naming it and what is wrong; None when it fits.

    Raises:
        ProtocolError: ``malformed``, naming the record and what is wrong with it.
    """
    name = f"{record.entity} {record.id}"[:120]
    if not isinstance(record.id, str) or not _UUID.match(record.id):
        raise _refuse(f"a record whose id is not a UUID: {name}")
    if record.version < 1:
        raise _refuse(f"a record at version {record.version}: {name}")
    try:
        parse_stamp(record.hlc)
    except ValueError:
        raise _refuse(f"a record with an unreadable hlc: {name}") from None
    if record.entity not in ENTITIES:
        return f"a record of an entity this app does not know: {name}"
    if record.deleted:
        return None  # a tombstone's fields are not kept
    known = _FIELD_NAMES[record.entity]
    fields = record.fields
    if not fields.keys() <= known:
        fields = {name: value for name, value in fields.items() if name in known}
    try:
        validate_fields(record.entity, fields)
    except FieldsInvalid as exc:
        return f"a record that does not fit its entity: {name}: {exc}"
    # Set aside, a record keeps every field: the app that can read it may know them all.
    record.fields = fields
    return None


def check_pull_reply(reply: PullReply) -> list[Unfit]:
    """Refuse a pull page the store must not apply; take out the records to set aside (see the
    module docstring).

    Returns:
        The records taken out of ``reply.changes``, each with why.

    Raises:
        ProtocolError: ``malformed``.
    """
    if reply.more and not reply.changes:
        # The server's pages hold `limit` changes whenever there is more: an empty one that asks
        # to go on would have the device pull forever.
        raise _refuse("an empty pull page that says there is more")
    if len(reply.cursor) > MAX_CURSOR_LENGTH:
        raise _refuse(f"a cursor of {len(reply.cursor)} characters")
    unfit, fit = [], []
    for record in reply.changes:
        reason = check_record(record)
        if reason is None:
            fit.append(record)
        else:
            unfit.append(Unfit(record, reason))
    if unfit:
        reply.changes = fit
    return unfit


def check_push_reply(entries: Sequence[OutboxEntry], reply: PushReply) -> list[Unfit]:
    """Refuse push results that do not answer the mutations sent; take out the records to set
    aside, the results staying (see the module docstring).

    Fewer results than mutations are allowed: the entries without one stay queued.

    Returns:
        The records taken out of the results, each with why.

    Raises:
        ProtocolError: ``malformed``.
    """
    sent = {entry.mid: entry for entry in entries}
    answered: set[str] = set()
    unfit = []
    for result in reply.results:
        entry = sent.get(result.mid)
        if entry is None:
            raise _refuse(f"a result for a mutation this device did not send: {result.mid[:40]}")
        if result.mid in answered:
            raise _refuse(f"two results for one mutation: {result.mid}")
        answered.add(result.mid)
        lowest = 0 if result.status is MutationStatus.REJECTED else 1
        if result.version < lowest:
            status = result.status.value
            raise _refuse(f"an {status!r} result at version {result.version} for {entry.entity} {entry.id}")
        if result.record:
            if (result.record.entity, result.record.id) != (entry.entity, entry.id):
                other = result.record.entity[:40]
                raise _refuse(f"the record of another {other} as the result for {entry.entity} {entry.id}")
            reason = check_record(result.record)
            if reason is not None:
                unfit.append(Unfit(result.record, reason))
                result.record = None
    return unfit
