"""Every console list exports as CSV (UTF-8 with a BOM, so Excel reads Chinese) or XLSX."""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Iterable
from typing import Any

from litestar import Response
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from server.console.web import local_now

FORMATS = ("csv", "xlsx")
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


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


def to_csv(headers: list[str], rows: Iterable[list[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(headers)
    for row in rows:
        writer.writerow([_safe_text(_cell(v)) for v in row])
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def to_xlsx(headers: list[str], rows: Iterable[list[Any]], title: str = "export") -> bytes:
    book = Workbook(write_only=True)
    sheet = book.create_sheet(title[:31] or "export")
    sheet.append(headers)
    for row in rows:
        cells = []
        for v in row:
            v = _safe_text(_cell(v))
            if isinstance(v, str):
                v = ILLEGAL_CHARACTERS_RE.sub("", v)
            cells.append(v)
        sheet.append(cells)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def export_response(fmt: str, name: str, headers: list[str], rows: Iterable[list[Any]]) -> Response:
    # The file is named for the time the supervisor reads on their own clock, not the server's UTC.
    stamp = local_now().strftime("%Y%m%d-%H%M")
    if fmt == "xlsx":
        body, media = to_xlsx(headers, rows, name), XLSX_TYPE
    else:
        body, media = to_csv(headers, rows), "text/csv; charset=utf-8"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="fieldloop-{name}-{stamp}.{fmt}"'},
    )
