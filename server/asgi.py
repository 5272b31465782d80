"""The app as uvicorn's worker processes load it: settings from the environment."""

from __future__ import annotations

import os

from litestar import Litestar

from server.app import create_app
from server.settings import Settings


def app_from_env() -> Litestar:
    """Factory for ``uvicorn --factory``; FIELDLOOP_MIGRATED=1 means the parent already migrated."""
    return create_app(Settings.from_env(), migrate=os.environ.get("FIELDLOOP_MIGRATED") != "1")
