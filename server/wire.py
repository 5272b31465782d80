"""Bodies on the wire: JSON or msgpack by ``Content-Type``, replies by ``Accept``.

Decoding validates against a shared_schema Struct; a body that is not JSON/msgpack is
``malformed`` (400), one that does not fit the Struct is ``invalid`` (422) with the path.
"""

from __future__ import annotations

import functools
from typing import TypeVar

import msgspec
from litestar import Request

from shared_schema.messages import Record

MSGPACK = "application/msgpack"
JSON = "application/json"

T = TypeVar("T")

_json_decoder = functools.cache(msgspec.json.Decoder)
_msgpack_decoder = functools.cache(msgspec.msgpack.Decoder)
_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()


def _media(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


_MSGPACK_TYPES = (MSGPACK, "application/x-msgpack", "application/vnd.msgpack")


def body_is_msgpack(request: Request) -> bool:
    media = _media(request.headers.get("content-type"))
    return media in _MSGPACK_TYPES


def _quality(media_range: str) -> float:
    for param in media_range.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value.strip()), 0.0), 1.0)
            except ValueError:
                return 1.0
    return 1.0


@functools.lru_cache(maxsize=64)
def _accepted(accept: str) -> bool | None:
    """Whether an Accept header asks for msgpack (True), JSON (False), or names neither (None).

    A type's weight is its ``q`` (1 when absent; ``q=0`` refuses it); one the header does not
    name weighs what a ``*/*`` or ``application/*`` range gives it. The heavier of the two wins,
    msgpack on a tie (the app's format); when both weigh nothing, the one not refused.
    """
    named: dict[bool, float] = {}
    wildcard = 0.0
    for media_range in accept.split(","):
        media = _media(media_range)
        if media in _MSGPACK_TYPES or media == JSON:
            is_msgpack = media in _MSGPACK_TYPES
            named[is_msgpack] = max(named.get(is_msgpack, 0.0), _quality(media_range))
        elif media in ("*/*", "application/*"):
            wildcard = max(wildcard, _quality(media_range))
    if not named:
        return None
    msgpack_q, json_q = named.get(True, wildcard), named.get(False, wildcard)
    if msgpack_q == json_q == 0.0:
        return None if len(named) == 2 else True not in named
    return msgpack_q >= json_q


def reply_is_msgpack(request: Request) -> bool:
    """Replies follow the request's Accept, else its Content-Type (protocol section 2)."""
    accepted = _accepted(request.headers.get("accept", ""))
    return body_is_msgpack(request) if accepted is None else accepted


def decode_body(request: Request, data: bytes, struct_type: type[T]) -> T:
    """Decode and validate a request body.

    Raises:
        server.errors.Malformed: not decodable as JSON or msgpack, or an unsupported media type.
        server.errors.Invalid: decodable but not of the expected shape.
    """
    from server.errors import Invalid, Malformed

    media = _media(request.headers.get("content-type"))
    if body_is_msgpack(request):
        decoder = _msgpack_decoder(struct_type)
    elif media in (JSON, ""):
        decoder = _json_decoder(struct_type)
    else:
        raise Malformed(f"unsupported Content-Type {media!r}: use application/json or application/msgpack")
    encoding = "msgpack" if body_is_msgpack(request) else "JSON"
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        # A typed decoder stops at the first value of the wrong type, before it has read the
        # rest: JSON sent as msgpack starts with `{`, the msgpack integer 123, and truncated
        # JSON may fail on its first value too. Only a body that is whole in its format is
        # `invalid`; one that is not is `malformed`, whatever its first value looked like.
        _raise_if_not_whole(decoder, data, encoding)
        raise Invalid(str(exc), {"path": _path_of(str(exc))}) from None
    except msgspec.DecodeError as exc:
        raise Malformed(f"body is not valid {encoding}: {exc}") from None
    except RecursionError:
        # msgspec decodes nested values recursively: a thousand levels of {"a": {"a": ...}} run
        # out of stack. No message of the protocol nests deeper than a few levels.
        raise Malformed("the body is nested too deeply") from None


def _raise_if_not_whole(decoder: msgspec.json.Decoder | msgspec.msgpack.Decoder, data: bytes, encoding: str) -> None:
    from server.errors import Malformed

    untyped = msgspec.msgpack.decode if isinstance(decoder, msgspec.msgpack.Decoder) else msgspec.json.decode
    try:
        untyped(data)
    except msgspec.DecodeError as exc:
        raise Malformed(f"body is not valid {encoding}: {exc}") from None
    except RecursionError:
        raise Malformed("the body is nested too deeply") from None


def _path_of(message: str) -> str:
    marker = " - at `"
    return message.split(marker, 1)[1].rstrip("`") if marker in message else "$"


def encode_reply(request: Request, value: object) -> tuple[bytes, str]:
    if reply_is_msgpack(request):
        return _msgpack_encoder.encode(value), MSGPACK
    return _json_encoder.encode(value), JSON


_record_decoder = msgspec.msgpack.Decoder(Record)


def stored_records(request: Request, records: list[bytes]) -> list:
    """Records stored msgpack-encoded, ready to place in a reply: as they are for a msgpack
    reply (no decoding and re-encoding), decoded for a JSON one."""
    if reply_is_msgpack(request):
        return [msgspec.Raw(record) for record in records]
    return [_record_decoder.decode(record) for record in records]
