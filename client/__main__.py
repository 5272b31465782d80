"""``python -m client [--data DIR]`` (or ``fieldloop-app``): start the field app."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def default_data_dir() -> Path:
    """Where the app keeps its encrypted store: the app's private folder on Android, else ~/.fieldloop-app."""
    if "ANDROID_PRIVATE" in os.environ:
        return Path(os.environ["ANDROID_PRIVATE"]) / "fieldloop"
    return Path(os.environ.get("FIELDLOOP_APP_DATA", Path.home() / ".fieldloop-app"))


def trust_bundled_certificates() -> None:
    """On Android, have HTTPS trust certifi's certificate bundle.

    python-for-android's Python does not find Android's system certificates, so without a
    bundle every HTTPS sync would fail certificate verification (and be retried forever).
    Elsewhere the system's certificates are used, as urllib3 does by default.
    """
    if "ANDROID_PRIVATE" not in os.environ or "SSL_CERT_FILE" in os.environ:
        return
    try:
        import certifi
    except ImportError:
        return
    os.environ["SSL_CERT_FILE"] = certifi.where()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fieldloop-app", description="FieldLoop field app")
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: ~/.fieldloop-app)")
    parser.add_argument("--size", default="480x900", help="window size on a desktop, WIDTHxHEIGHT")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    trust_bundled_certificates()
    # Kivy must not parse our arguments, and reads these before it is first imported.
    os.environ["KIVY_NO_ARGS"] = "1"
    os.environ.setdefault("KIVY_NO_FILELOG", "1")
    from kivy.config import Config

    width, _, height = args.size.partition("x")
    Config.set("graphics", "width", width or "480")
    Config.set("graphics", "height", height or "900")
    Config.set("kivy", "exit_on_escape", "0")
    from client.ui.app import FieldLoopApp

    FieldLoopApp(args.data or default_data_dir()).run()


if __name__ == "__main__":
    main()
