"""Android asks the user for dangerous permissions at run time, not only in the manifest."""

from __future__ import annotations

RUNTIME_PERMISSIONS = ("CAMERA", "ACCESS_FINE_LOCATION", "ACCESS_COARSE_LOCATION")


def request_runtime_permissions() -> None:
    """Ask once at start for camera and location; a refusal only disables photos or the track."""
    from kivy.utils import platform

    if platform != "android":
        return
    from android.permissions import Permission, request_permissions  # type: ignore[import-not-found]

    request_permissions([getattr(Permission, name) for name in RUNTIME_PERMISSIONS])
