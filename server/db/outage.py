"""Telling "the database cannot be reached right now" from a fault in the server.

PostgreSQL restarting, refusing connections or out of connection slots, or SQLite locked by
another program past the busy timeout or its disk full: the request did nothing, and the same
request will work later. The sync API answers those ``503 unavailable`` with ``Retry-After``
(the device retries on its own), the console a page that says to try again; anything else is
still the server's fault, a logged ``500``.
"""

from __future__ import annotations

import socket
import sqlite3

import asyncpg
import sqlalchemy.exc

# SQLSTATEs: connection exceptions (08...), too many connections, the server shutting down or
# starting, a database that does not (yet) allow connections or does not exist.
_UNREACHABLE_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03", "55000", "3D000")
# SQLite result codes (the low byte of an extended code): busy past the timeout, locked, an I/O
# error, the disk full, the file not openable.
_UNREACHABLE_SQLITE_CODES = {
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN
}
# Retry-After for a device, in seconds: long enough for a restart, short enough to catch up soon.
RETRY_AFTER_S = 5


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the database could not be reached or used."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if _unreachable(current):
            return True
        seen += 1
        # SQLAlchemy keeps the driver's error as ``orig``; the driver's own as the cause.
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


def _unreachable(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror, sqlalchemy.exc.TimeoutError)):
        return True
    if getattr(exc, "connection_invalidated", False):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_UNREACHABLE_SQLSTATES):
        return True
    if isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _UNREACHABLE_SQLITE_CODES
    return False
