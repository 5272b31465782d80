"""Every message of sync protocol v1 (sections 3, 5, 6 and the error body of section 2).

Structs that come in from the network forbid unknown fields; replies are plain.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from shared_schema.types import NO_NUL_PATTERN, HlcStamp, UUIDStr

PROTOCOL_VERSION = 1
MAX_PUSH_MUTATIONS = 500
MAX_PUSH_BYTES = 4 * 1024 * 1024
MAX_PULL_LIMIT = 1000
DEFAULT_PULL_LIMIT = 500
MAX_BLOB_BYTES = 25 * 1024 * 1024
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000

EntityName = Annotated[str, Meta(min_length=1, max_length=40, pattern=NO_NUL_PATTERN)]


class _In(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A message a peer sends us: unknown fields are an error, not silently dropped."""


class _Out(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A message we send."""


# ---- errors (section 2) -------------------------------------------------------------


class ErrorCode(str, enum.Enum):
    MALFORMED = "malformed"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    DEVICE_REVOKED = "device_revoked"
    TOO_LARGE = "too_large"
    INVALID = "invalid"
    UPGRADE_REQUIRED = "upgrade_required"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"  # 503: the database unreachable or the disk full; try again (Changes 15)


class ErrorDetail(msgspec.Struct, kw_only=True):
    code: str
    message: str
    detail: dict[str, Any] = {}
    wipe: bool | UnsetType = UNSET
    min_protocol: int | UnsetType = UNSET


class ErrorBody(msgspec.Struct, kw_only=True):
    error: ErrorDetail
    server_time: int | UnsetType = UNSET  # every reply carries it (section 2); absent from older servers


# ---- enrollment and tokens (section 3) ----------------------------------------------


class EnrollRequest(_In):
    code: Annotated[str, Meta(min_length=1, max_length=64, pattern=NO_NUL_PATTERN)]
    public_key: Annotated[str, Meta(min_length=1, max_length=100, pattern=NO_NUL_PATTERN)]
    label: Annotated[str, Meta(max_length=100, pattern=NO_NUL_PATTERN)] = ""
    app_version: Annotated[str, Meta(max_length=40, pattern=NO_NUL_PATTERN)] = ""


class UserInfo(_Out):
    id: str
    name: str
    role: str


class GridInfo(_Out):
    id: str
    name: str
    community: str


class EnrollReply(_Out):
    device_id: str
    user: UserInfo
    grids: list[GridInfo]
    server_time: int


class ChallengeRequest(_In):
    device_id: UUIDStr


class ChallengeReply(_Out):
    nonce: str
    expires_at: str
    server_time: int


class TokenRequest(_In):
    device_id: UUIDStr
    nonce: Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL_PATTERN)]
    signature: Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL_PATTERN)]


class TokenReply(_Out):
    access_token: str
    expires_at: str
    server_time: int


def token_message(device_id: str, nonce: str) -> bytes:
    """The bytes a device signs to obtain an access token."""
    return f"fieldloop-token-v1\n{device_id}\n{nonce}".encode()


# ---- records, push and pull (sections 4 to 6) ----------------------------------------


class Record(msgspec.Struct, kw_only=True):
    entity: str
    id: str
    version: int
    hlc: str
    deleted: bool = False
    fields: dict[str, Any] = {}


class Mutation(_In):
    mid: UUIDStr
    entity: EntityName
    id: UUIDStr
    op: Literal["upsert", "delete"]
    base_version: Annotated[int, Meta(ge=0)]
    hlc: HlcStamp
    fields: dict[str, Any] = {}


class PushRequest(_In):
    # At most MAX_PUSH_MUTATIONS: the server answers more with 413 too_large (a limit, not a shape).
    mutations: list[Mutation]


class Conflict(msgspec.Struct, kw_only=True):
    field: str
    kept: Any
    lost: Any
    winner_hlc: str


class ResultError(msgspec.Struct, kw_only=True):
    code: str
    message: str


class MutationStatus(str, enum.Enum):
    APPLIED = "applied"
    MERGED = "merged"
    REJECTED = "rejected"


# For code run once per mutation (the merge, the write path): ``MutationStatus.APPLIED`` goes
# through the enum metaclass's attribute hook (about 80 ns a lookup), a module global does not.
APPLIED = MutationStatus.APPLIED
MERGED = MutationStatus.MERGED
REJECTED = MutationStatus.REJECTED


class Result(_Out):
    mid: str
    status: MutationStatus
    version: int
    record: Record | UnsetType = UNSET
    conflicts: list[Conflict] | UnsetType = UNSET
    error: ResultError | UnsetType = UNSET


class PushReply(_Out):
    results: list[Result]
    server_time: int


class PullReply(_Out):
    changes: list[Record]
    cursor: str
    more: bool
    server_time: int


class RejectCode(str, enum.Enum):
    """Why one mutation of a push was rejected (section 5)."""

    INVALID = "invalid"
    FORBIDDEN_SCOPE = "forbidden_scope"
    INVALID_TRANSITION = "invalid_transition"
    READ_ONLY_FIELD = "read_only_field"
    UNKNOWN_ENTITY = "unknown_entity"
