"""Where the server keeps its data and which database it uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from server.db.engine import database_url

DEFAULT_DATA_DIR = Path("data")


@dataclass(frozen=True)
class Settings:
    """Server settings; ``db`` None means SQLite in the data folder.

    Args:
        data_dir: the data folder (SQLite file, blobs, thumbnails).
        db: a database URL as a user writes it (``postgresql://user@host/db``), or None.
        token_ttl_s: lifetime of an access token.
        enrollment_ttl_s: lifetime of an enrollment code.
    """

    data_dir: Path = DEFAULT_DATA_DIR
    db: str | None = None
    token_ttl_s: int = 15 * 60
    enrollment_ttl_s: int = 24 * 3600
    challenge_ttl_s: int = 60
    overdue_check_s: float = 60.0
    debug: bool = False

    @classmethod
    def from_env(cls, data_dir: str | None = None, db: str | None = None) -> "Settings":
        """Settings from arguments, falling back to FIELDLOOP_DATA and FIELDLOOP_DB."""
        return cls(
            data_dir=Path(data_dir or os.environ.get("FIELDLOOP_DATA") or DEFAULT_DATA_DIR),
            db=db or os.environ.get("FIELDLOOP_DB") or None,
        )

    @property
    def url(self) -> URL:
        return database_url(self.db, self.data_dir)

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"
