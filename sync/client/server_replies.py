"""What the server sends is checked here before any of it is stored.

The transport decodes each reply into its Struct, which fixes the envelope's types only: a
``Record`` may still name an entity no device knows, carry a negative version, a photo hash
like ``../../x`` (a blob's file name) or a ``grid_id`` that is a dict (which the store cannot
index). The store trusts what it is given, so the engine checks each reply here first:

- every record is a v1 entity with a UUID id, a version of at least 1, a readable stamp, and
  (unless deleted) fields that fit its entity in shared_schema, as the server validated them;
  a field the entity does not have is dropped, not refused (a tolerant reader: a server that
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
from sync.client.store import OutboxEntry
from sync.errors import ProtocolError
from sync.hlc import parse_stamp

# A cursor travels back in the pull's query string; a longer one would not fit in the request
# head a server reads (uvicorn's h11 reads at most 16 KiB of it) and every later pull would fail.
MAX_CURSOR_LENGTH = 8 * 1024

_UUID = re.compile(UUID_PATTERN)
_FIELD_NAMES = {entity: frozenset(struct.__struct_fields__) for entity, struct in ENTITIES.items()}


def _refuse(what: str) -> ProtocolError:
    return ProtocolError("malformed", f"the server sent {what}")


def check_record(record: Record) -> None:
    """Refuse a record that no v1 server could have stored; drop the fields its entity does not
    have (a newer server's).

    Raises:
        ProtocolError: ``malformed``, naming the record and what is wrong with it.
    """
    name = f"{record.entity} {record.id}"[:120]
    if record.entity not in ENTITIES:
        raise _refuse(f"a record of an unknown entity: {name}")
    if not isinstance(record.id, str) or not _UUID.match(record.id):
        raise _refuse(f"a record whose id is not a UUID: {name}")
    if record.version < 1:
        raise _refuse(f"a record at version {record.version}: {name}")
    try:
        parse_stamp(record.hlc)
    except ValueError:
        raise _refuse(f"a record with an unreadable hlc: {name}") from None
    if record.deleted:
        return  # a tombstone's fields are not kept
    known = _FIELD_NAMES[record.entity]
    if not record.fields.keys() <= known:
        record.fields = {name: value for name, value in record.fields.items() if name in known}
    try:
        validate_fields(record.entity, record.fields)
    except FieldsInvalid as exc:
        raise _refuse(f"a record that does not fit its entity: {name}: {exc}") from None


def check_pull_reply(reply: PullReply) -> None:
    """Refuse a pull page the store must not apply (see the module docstring).

    Raises:
        ProtocolError: ``malformed``.
    """
    if reply.more and not reply.changes:
        # The server's pages hold `limit` changes whenever there is more: an empty one that asks
        # to go on would have the device pull forever.
        raise _refuse("an empty pull page that says there is more")
    if len(reply.cursor) > MAX_CURSOR_LENGTH:
        raise _refuse(f"a cursor of {len(reply.cursor)} characters")
    for record in reply.changes:
        check_record(record)


def check_push_reply(entries: Sequence[OutboxEntry], reply: PushReply) -> None:
    """Refuse push results that do not answer the mutations sent (see the module docstring).

    Fewer results than mutations are allowed: the entries without one stay queued.

    Raises:
        ProtocolError: ``malformed``.
    """
    sent = {entry.mid: entry for entry in entries}
    answered: set[str] = set()
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
            check_record(result.record)
