"""Photos as the app keeps them: upright, at most 1600 px, JPEG, without EXIF.

A phone camera writes 4000 px photos of 3 to 6 MB with the GPS position in EXIF. Downscaled,
a stairwell photo still shows the cracked drain pipe, costs about 200 KB of a prepaid data
plan, and says nothing about where the worker stood.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_SIDE_PX = 1600
THUMBNAIL_SIDE_PX = 240  # a preview in a form's row of photos
JPEG_QUALITY = 82


class NotAPhoto(ValueError):
    """The bytes are not an image Pillow can read."""


def _fitted(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` scaled down (never up) to fit in a square of ``max_side``."""
    scale = min(1.0, max_side / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def downscale_photo(data: bytes, max_side: int = MAX_SIDE_PX) -> bytes:
    """The photo turned upright (EXIF orientation), fitted in ``max_side`` px, as a JPEG without metadata."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            # libjpeg decodes a JPEG at 1/2, 1/4 or 1/8 of its size when asked before the first
            # read: a 4000x3000 camera photo becomes 2000x1500 pixels (9 MB), not 36 MB, and a
            # preview is decoded from a quarter of the stored photo. exif_transpose reads it.
            image.draft(None, _fitted(image.size, max_side))
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


def thumbnail(data: bytes, max_side: int = THUMBNAIL_SIDE_PX) -> bytes:
    """A small JPEG for a row of previews: a cheap phone's GPU should not hold 1600 px textures for that."""
    return downscale_photo(data, max_side)
