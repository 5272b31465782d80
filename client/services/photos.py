"""Photos as the app keeps them: upright, at most 1600 px, JPEG, without EXIF.

A phone camera writes 4000 px photos of 3 to 6 MB with the GPS position in EXIF. Downscaled,
a stairwell photo still shows the cracked drain pipe, costs about 200 KB of a prepaid data
plan, and says nothing about where the worker stood.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_SIDE_PX = 1600
JPEG_QUALITY = 82


class NotAPhoto(ValueError):
    """The bytes are not an image Pillow can read."""


def downscale_photo(data: bytes, max_side: int = MAX_SIDE_PX) -> bytes:
    """The photo turned upright (EXIF orientation), fitted in ``max_side`` px, as a JPEG without metadata."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = ImageOps.exif_transpose(image)
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            if image.mode != "RGB":
                image = image.convert("RGB")
            out = io.BytesIO()
            # No exif= argument: Pillow writes none, so the GPS position is dropped.
            image.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise NotAPhoto(str(exc)) from exc
    return out.getvalue()


def thumbnail(data: bytes, max_side: int = 240) -> bytes:
    """A small JPEG for a row of previews: a cheap phone's GPU should not hold 1600 px textures for that."""
    return downscale_photo(data, max_side)
