"""The v1 entities (protocol section 9), each field with its merge rule beside it.

Every field defaults to ``UNSET`` so that one Struct validates both a whole record and the
partial ``fields`` of a mutation (only what the edit changed). ``REQUIRED_ON_CREATE`` names
what a new record must carry.
"""

from __future__ import annotations

import datetime
import enum
from typing import Annotated, ClassVar

import msgspec
import msgspec.inspect
from msgspec import UNSET, Meta, UnsetType

from shared_schema.rules import SERVER, TRANSITION, UNION, MergeRule, field_rules, rule
from shared_schema.types import (
    NO_NUL_PATTERN,
    Day,
    FilledText,
    Line,
    Name,
    Phone,
    Photos,
    Tags,
    Text,
    Timestamp,
    Title,
    Track,
    UUIDStr,
)
from shared_schema.workflow import CaseStatus

_lww = rule(MergeRule.LWW)


class VisitMethod(str, enum.Enum):
    """The five methods of the red stewards' work (五诊法)."""

    SIT = "sit"  # 开门坐诊: walk-in at the office
    INQUIRY = "inquiry"  # 入户问诊: door-to-door
    EMERGENCY = "emergency"  # 现场急诊: on-site
    CONSULT = "consult"  # 联合会诊: joint, with departments
    FOLLOWUP = "followup"  # 跟踪复诊: follow-up


class CaseCategory(str, enum.Enum):
    DRAINAGE = "drainage"  # 落水管、下水道、化粪池
    PARKING = "parking"
    NOISE = "noise"
    DISPUTE = "dispute"  # 邻里、物业纠纷
    PETS = "pets"
    SANITATION = "sanitation"
    FACILITY = "facility"
    SAFETY = "safety"
    OTHER = "other"


class ReviewVerdict(str, enum.Enum):
    APPROVED = "approved"
    FLAGGED = "flagged"


class Review(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A supervisor's verdict on a visit."""

    verdict: ReviewVerdict
    comment: Annotated[str, Meta(max_length=2000, pattern=NO_NUL_PATTERN)] = ""
    reviewer: Annotated[str, Meta(max_length=100, pattern=NO_NUL_PATTERN)] = ""
    reviewed_at: Timestamp | None = None


class Entity(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Base of every entity's field set."""

    REQUIRED_ON_CREATE: ClassVar[frozenset[str]] = frozenset()


class Grid(Entity):
    name: Annotated[Name | UnsetType, rule(SERVER)] = UNSET
    community: Annotated[Name | UnsetType, rule(SERVER)] = UNSET
    workers: Annotated[list[UUIDStr] | UnsetType, rule(SERVER)] = UNSET

    REQUIRED_ON_CREATE = frozenset({"name", "community"})


class Household(Entity):
    grid_id: Annotated[UUIDStr | UnsetType, _lww] = UNSET
    address: Annotated[Line | UnsetType, _lww] = UNSET
    building: Annotated[Line | UnsetType, _lww] = UNSET
    unit: Annotated[Line | UnsetType, _lww] = UNSET
    room: Annotated[Line | UnsetType, _lww] = UNSET
    head_name: Annotated[Line | UnsetType, _lww] = UNSET
    phone: Annotated[Phone | UnsetType, _lww] = UNSET
    members: Annotated[Annotated[int, Meta(ge=0, le=100)] | UnsetType, _lww] = UNSET
    tags: Annotated[Tags | UnsetType, rule(UNION)] = UNSET
    notes: Annotated[Text | UnsetType, _lww] = UNSET

    REQUIRED_ON_CREATE = frozenset({"grid_id", "address"})


class Visit(Entity):
    grid_id: Annotated[UUIDStr | UnsetType, _lww] = UNSET
    household_id: Annotated[UUIDStr | UnsetType, _lww] = UNSET
    method: Annotated[VisitMethod | UnsetType, _lww] = UNSET
    topics: Annotated[Tags | UnsetType, rule(UNION)] = UNSET
    notes: Annotated[Text | UnsetType, _lww] = UNSET
    photos: Annotated[Photos | UnsetType, rule(UNION)] = UNSET
    follow_up_on: Annotated[Day | None | UnsetType, _lww] = UNSET
    visited_at: Annotated[Timestamp | UnsetType, _lww] = UNSET
    review: Annotated[Review | None | UnsetType, rule(SERVER)] = UNSET

    REQUIRED_ON_CREATE = frozenset({"grid_id", "household_id", "method", "visited_at"})


class Patrol(Entity):
    grid_id: Annotated[UUIDStr | UnsetType, _lww] = UNSET
    started_at: Annotated[Timestamp | UnsetType, _lww] = UNSET
    ended_at: Annotated[Timestamp | None | UnsetType, _lww] = UNSET
    notes: Annotated[Text | UnsetType, _lww] = UNSET
    hazards: Annotated[Tags | UnsetType, rule(UNION)] = UNSET
    photos: Annotated[Photos | UnsetType, rule(UNION)] = UNSET
    track: Annotated[Track | UnsetType, _lww] = UNSET

    REQUIRED_ON_CREATE = frozenset({"grid_id", "started_at"})


class Case(Entity):
    grid_id: Annotated[UUIDStr | UnsetType, _lww] = UNSET
    household_id: Annotated[UUIDStr | None | UnsetType, _lww] = UNSET
    category: Annotated[CaseCategory | UnsetType, _lww] = UNSET
    title: Annotated[Title | UnsetType, _lww] = UNSET
    description: Annotated[Text | UnsetType, _lww] = UNSET
    photos: Annotated[Photos | UnsetType, rule(UNION)] = UNSET
    status: Annotated[CaseStatus | UnsetType, rule(TRANSITION)] = UNSET
    feedback: Annotated[Text | UnsetType, _lww] = UNSET
    department: Annotated[Line | None | UnsetType, rule(SERVER)] = UNSET
    due_at: Annotated[Timestamp | None | UnsetType, rule(SERVER)] = UNSET
    rating: Annotated[Annotated[int, Meta(ge=1, le=5)] | None | UnsetType, rule(SERVER)] = UNSET

    REQUIRED_ON_CREATE = frozenset({"grid_id", "category", "title", "status"})


class Diary(Entity):
    grid_id: Annotated[UUIDStr | UnsetType, _lww] = UNSET
    text: Annotated[FilledText | UnsetType, _lww] = UNSET
    topics: Annotated[Tags | UnsetType, rule(UNION)] = UNSET
    written_at: Annotated[Timestamp | UnsetType, _lww] = UNSET

    REQUIRED_ON_CREATE = frozenset({"grid_id", "text", "written_at"})


ENTITIES: dict[str, type[Entity]] = {
    "grid": Grid,
    "household": Household,
    "visit": Visit,
    "patrol": Patrol,
    "case": Case,
    "diary": Diary,
}

# Entities a device may write; `grid` is written by administrators only.
DEVICE_WRITABLE = frozenset(ENTITIES) - {"grid"}

# Union fields hold sets; their stored form is sorted so every replica compares equal.
UNION_FIELDS: dict[str, frozenset[str]] = {
    name: frozenset(f for f, r in field_rules(struct).items() if r is UNION)
    for name, struct in ENTITIES.items()
}

def _bare(kind: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """A field's type without the ``Annotated`` metadata around it (its merge rule, its bounds)."""
    while isinstance(kind, msgspec.inspect.Metadata):
        kind = kind.type
    return kind


# Each entity's fields and their types, read once from the Structs.
_FIELD_TYPES: dict[str, dict[str, msgspec.inspect.Type]] = {
    name: {f.name: _bare(f.type) for f in msgspec.inspect.type_info(struct).fields}
    for name, struct in ENTITIES.items()
}

# How many items a union field may hold: one edit sends at most this many, and a merge that would
# unite concurrent sets past it is refused, or the stored record would no longer fit its entity.
UNION_LIMITS: dict[str, dict[str, int]] = {
    name: {field: _FIELD_TYPES[name][field].max_length for field in UNION_FIELDS[name]} for name in ENTITIES
}

# Times and dates an entity may hold. Python (the server's console, the app) cannot move year 1 or 9999 into
# another zone, so one such visit would fail every page that lists it; a phone whose clock was reset says 1970.
EARLIEST_YEAR, LATEST_YEAR = 1900, 2999
# UTC offsets an entity time may carry: the zones there are (UTC-12:00 to UTC+14:00). Python reads up
# to 23:59 either way, PostgreSQL's timestamptz only below 16 hours, and the console's index of
# visits by the moment they name casts each one (a push of a visit at +23:59 was a 500 there).
EARLIEST_OFFSET, LATEST_OFFSET = datetime.timedelta(hours=-12), datetime.timedelta(hours=14)


def _holds_time(kind: msgspec.inspect.Type) -> bool:
    if isinstance(kind, msgspec.inspect.UnionType):
        return any(_holds_time(_bare(member)) for member in kind.types)
    return isinstance(kind, (msgspec.inspect.DateTimeType, msgspec.inspect.DateType))


TIME_FIELDS: dict[str, tuple[str, ...]] = {
    name: tuple(field for field, kind in fields.items() if _holds_time(kind)) for name, fields in _FIELD_TYPES.items()
}

class FieldsInvalid(ValueError):
    """A mutation's ``fields`` do not fit the entity; the message carries the path."""


def validate_fields(entity: str, fields: dict) -> dict:
    """Validate a (partial) field set and return it normalised to JSON-ready builtins.

    Raises:
        KeyError: ``entity`` is not a v1 entity.
        FieldsInvalid: a field is unknown, mistyped or out of bounds.
    """
    struct_type = ENTITIES[entity]
    try:
        value = msgspec.convert(fields, struct_type)
    except msgspec.ValidationError as exc:
        raise FieldsInvalid(str(exc).replace(" - at `$", " - at `$.fields", 1)) from None
    for name in TIME_FIELDS[entity]:
        moment = getattr(value, name)
        if moment is UNSET or moment is None:
            continue
        if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
            raise FieldsInvalid(f"Expected a time in the years {EARLIEST_YEAR} to {LATEST_YEAR} - at `$.fields.{name}`")
        if isinstance(moment, datetime.datetime) and not EARLIEST_OFFSET <= moment.utcoffset() <= LATEST_OFFSET:
            raise FieldsInvalid(f"Expected a UTC offset from -12:00 to +14:00 - at `$.fields.{name}`")
    normalised = msgspec.to_builtins(value)
    for name in UNION_FIELDS[entity] & normalised.keys():
        normalised[name] = sorted(set(normalised[name]))
    return normalised
