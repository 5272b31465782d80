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


def body_is_msgpack(request: Request) -> bool:
    media = _media(request.headers.get("content-type"))
    return media in (MSGPACK, "application/x-msgpack", "application/vnd.msgpack")


def reply_is_msgpack(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    if MSGPACK in accept or "application/x-msgpack" in accept:
        return True
    if JSON in accept:
        return False
    return body_is_msgpack(request)


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
