"""Constrained value types shared by entities and messages."""

from __future__ import annotations

import datetime
from typing import Annotated

from msgspec import Meta


def _whole(body: str) -> str:
    """A pattern the whole value must match, for msgspec, which checks with ``re.search``.

    There "$" also matches before a final newline, so "<uuid>\\n" passed as a UUID (a 37-character id: a 500
    on PostgreSQL). The lookahead shuts that out and means the same to JSON Schema's (ECMA-262) regexes.
    """
    return rf"^{body}(?!\n)$"


UUID_PATTERN = _whole("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SHA256_PATTERN = _whole("[0-9a-f]{64}")
# <wall ms, 13 digits>-<counter, 4 hex digits>-<node id>
HLC_PATTERN = _whole("[0-9]{13}-[0-9a-f]{4}-[0-9A-Za-z_.:-]{1,64}")
# Free text may hold anything but NUL: PostgreSQL's text cannot store it, nor its JSON operators
# read it, so one stored NUL would fail every console query over that field.
NO_NUL_PATTERN = r"^[^\x00]*$"

UUIDStr = Annotated[str, Meta(pattern=UUID_PATTERN, description="lowercase UUID string")]
Sha256 = Annotated[str, Meta(pattern=SHA256_PATTERN, description="lowercase hex SHA-256")]
HlcStamp = Annotated[str, Meta(pattern=HLC_PATTERN, max_length=84)]

Name = Annotated[str, Meta(min_length=1, max_length=100, pattern=NO_NUL_PATTERN)]
Line = Annotated[str, Meta(max_length=200, pattern=NO_NUL_PATTERN)]
Text = Annotated[str, Meta(max_length=8000, pattern=NO_NUL_PATTERN)]
Title = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL_PATTERN)]
FilledText = Annotated[str, Meta(min_length=1, max_length=8000, pattern=NO_NUL_PATTERN)]
Tag = Annotated[str, Meta(min_length=1, max_length=40, pattern=NO_NUL_PATTERN)]
Tags = Annotated[list[Tag], Meta(max_length=64)]
Phone = Annotated[str, Meta(pattern=_whole(r"[0-9+\- ]{0,20}"))]
Photos = Annotated[list[Sha256], Meta(max_length=32)]
Timestamp = Annotated[datetime.datetime, Meta(tz=True)]
Day = datetime.date
Latitude = Annotated[float, Meta(ge=-90, le=90)]
Longitude = Annotated[float, Meta(ge=-180, le=180)]
# The last millisecond of the year 9999: a larger integer names no instant, and past 2**64 msgpack cannot carry it.
MAX_EPOCH_MS = 253_402_300_799_999
EpochMs = Annotated[int, Meta(ge=0, le=MAX_EPOCH_MS)]
# A patrol's track point: [lat, lon, t], t in milliseconds since the Unix epoch.
TrackPoint = tuple[Latitude, Longitude, EpochMs]
Track = Annotated[list[TrackPoint], Meta(max_length=20000)]
