"""Every console list exports as CSV (UTF-8 with a BOM, so Excel reads Chinese) or XLSX.

An export streams: rows are read from the database a chunk at a time (``queries._streamed``) and
written out as they come, so a year of 200,000 visits costs the server the memory of one chunk,
not of the whole list. A CSV goes to the client chunk by chunk; an XLSX is a zip whose parts
openpyxl's write-only workbook writes to temporary files, then sent from the saved file.
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

import anyio
from litestar import Response
from litestar.response import Stream
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from server.console.web import local_now

FORMATS = ("csv", "xlsx")
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# Rows written between two yields to the event loop (other requests run in between).
ROWS_A_PIECE = 500
READ_BYTES = 256 * 1024


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        return (
            value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(datetime.UTC).replace(tzinfo=None)
        )
    if isinstance(value, (int, float, datetime.date)):
        return value
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _safe_text(value: Any) -> Any:
    """Text from phones must not become a formula when a spreadsheet opens the file."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_lines(rows: Iterable[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([_safe_text(_cell(v)) for v in row])
    return buffer.getvalue()


def _xlsx_row(row: list[Any]) -> list[Any]:
    cells = []
    for v in row:
        v = _safe_text(_cell(v))
        if isinstance(v, str):
            v = ILLEGAL_CHARACTERS_RE.sub("", v)
        cells.append(v)
    return cells


def to_csv(headers: list[str], rows: Iterable[list[Any]]) -> bytes:
    return ("\ufeff" + _csv_lines([headers]) + _csv_lines(rows)).encode("utf-8")


def to_xlsx(headers: list[str], rows: Iterable[list[Any]], title: str = "export") -> bytes:
    book = Workbook(write_only=True)
    sheet = book.create_sheet(title[:31] or "export")
    sheet.append(headers)
    for row in rows:
        sheet.append(_xlsx_row(row))
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


async def _pieces(rows: Iterable[list[Any]] | AsyncIterable[list[Any]]) -> AsyncIterator[list[list[Any]]]:
    """Rows a piece at a time, whether they are a list already or come from the database."""
    piece: list[list[Any]] = []
    if isinstance(rows, AsyncIterable):
        async for row in rows:
            piece.append(row)
            if len(piece) >= ROWS_A_PIECE:
                yield piece
                piece = []
    else:
        for row in rows:
            piece.append(row)
            if len(piece) >= ROWS_A_PIECE:
                yield piece
                piece = []
                await anyio.sleep(0)
    if piece:
        yield piece


async def csv_stream(headers: list[str], rows: Iterable[list[Any]] | AsyncIterable[list[Any]]) -> AsyncIterator[bytes]:
    yield ("\ufeff" + _csv_lines([headers])).encode("utf-8")
    async for piece in _pieces(rows):
        yield _csv_lines(piece).encode("utf-8")


async def xlsx_stream(
    headers: list[str], rows: Iterable[list[Any]] | AsyncIterable[list[Any]], title: str = "export"
) -> AsyncIterator[bytes]:
    book = Workbook(write_only=True)  # each sheet's rows go to a temporary file as they are appended
    sheet = book.create_sheet(title[:31] or "export")
    sheet.append(headers)
    async for piece in _pieces(rows):
        for row in piece:
            sheet.append(_xlsx_row(row))
    handle, path = tempfile.mkstemp(suffix=".xlsx")
    os.close(handle)
    try:
        await anyio.to_thread.run_sync(book.save, path)  # zipping the parts: off the event loop
        with open(path, "rb") as saved:  # noqa: ASYNC230 - a local temporary file, read a piece at a time
            while data := saved.read(READ_BYTES):
                yield data
    finally:
        os.unlink(path)


def export_response(
    fmt: str, name: str, headers: list[str], rows: Iterable[list[Any]] | AsyncIterable[list[Any]]
) -> Response:
    """A download of ``rows`` (a list, or rows read from the database as they are written)."""
    # The file is named for the time the supervisor reads on their own clock, not the server's UTC.
    stamp = local_now().strftime("%Y%m%d-%H%M")
    if fmt == "xlsx":
        body, media = xlsx_stream(headers, rows, name), XLSX_TYPE
    else:
        body, media = csv_stream(headers, rows), "text/csv; charset=utf-8"
    return Stream(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="fieldloop-{name}-{stamp}.{fmt}"'},
    )
