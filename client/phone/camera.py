"""Taking a photo: the phone's camera on Android; on a desktop the UI offers a file chooser."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Callable, Protocol

OnPhoto = Callable[[bytes], None]


class Camera(Protocol):
    """Take one photo and hand its bytes to ``on_photo`` (not called when the user cancels)."""

    available: bool

    def take(self, on_photo: OnPhoto) -> None: ...


class NoCamera:
    """A desktop: the photo comes from a file the user picks instead."""

    available = False

    def take(self, on_photo: OnPhoto) -> None:
        return None


SHOT_PATTERN = "fieldloop-*.jpg"


class PlyerCamera:
    """Android's camera app through plyer: it writes a file, which is read, handed on, then removed.

    Android often kills a cheap phone's app while the camera app is in front; the new process
    never hears of the photo, which would stay behind in plain JPEG (EXIF position included).
    Photos left so are removed when the camera is made, that is at every start of the app.
    """

    available = True

    def __init__(self, folder: Path | None = None):
        self._folder = folder or Path(tempfile.gettempdir())
        for shot in self._folder.glob(SHOT_PATTERN):
            with contextlib.suppress(OSError):  # not ours to remove: the start must go on
                shot.unlink()

    def take(self, on_photo: OnPhoto) -> None:
        from plyer import camera

        target = self._folder / f"fieldloop-{time.time_ns()}.jpg"

        def done(path: str) -> bool:
            shot = Path(path)
            if shot.is_file():
                data = shot.read_bytes()
                # The plain photo must not stay outside the encrypted store.
                shot.unlink(missing_ok=True)
                on_photo(data)
            return False

        camera.take_picture(filename=str(target), on_complete=done)


def default_camera() -> Camera:
    from kivy.utils import platform

    return PlyerCamera() if platform == "android" else NoCamera()
