"""Location for a patrol's track: a provider that calls back with fixes while started."""

from __future__ import annotations

import time
from typing import Callable, Protocol

# (latitude, longitude, epoch milliseconds)
Fix = tuple[float, float, int]
OnFix = Callable[[Fix], None]


class LocationProvider(Protocol):
    """Start delivering fixes to a callback; stop. ``available`` is False where there is no GPS."""

    available: bool

    def start(self, on_fix: OnFix) -> None: ...

    def stop(self) -> None: ...


class NoLocation:
    """A desktop has no GPS: patrols are recorded without a track."""

    available = False

    def start(self, on_fix: OnFix) -> None:
        return None

    def stop(self) -> None:
        return None


class PlyerGps:
    """Android GPS through plyer; one fix every few seconds, or every few metres walked."""

    available = True

    def __init__(self, min_time_ms: int = 5000, min_distance_m: float = 5.0):
        self._min_time_ms = min_time_ms
        self._min_distance_m = min_distance_m
        self._on_fix: OnFix | None = None

    def start(self, on_fix: OnFix) -> None:
        from plyer import gps

        self._on_fix = on_fix
        gps.configure(on_location=self._location, on_status=lambda *_: None)
        gps.start(minTime=self._min_time_ms, minDistance=self._min_distance_m)

    def stop(self) -> None:
        from plyer import gps

        gps.stop()
        self._on_fix = None

    def _location(self, **kwargs) -> None:
        if self._on_fix is not None and "lat" in kwargs and "lon" in kwargs:
            self._on_fix((float(kwargs["lat"]), float(kwargs["lon"]), time.time_ns() // 1_000_000))


def default_location_provider() -> LocationProvider:
    """plyer's GPS on Android, nothing elsewhere."""
    from kivy.utils import platform

    return PlyerGps() if platform == "android" else NoLocation()
