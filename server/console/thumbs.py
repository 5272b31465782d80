"""Photo thumbnails, made by the server with Pillow and cached under the data folder."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from server.blobs.store import FileBlobStore

SIZES = {"s": 240, "l": 1280}


def _make(source: Path, target: Path, size: int) -> bytes | None:
    try:
        with Image.open(source) as image:
            image = ImageOps.exif_transpose(image)
            image.thumbnail((size, size))
            if image.mode not in ("RGB", "L"):
                image = image.convert("RGB")
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=80)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return None
    data = buffer.getvalue()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return data


async def thumbnail(data_dir: Path, blob_root: Path, sha256: str, size: str = "s") -> bytes | None:
    """JPEG bytes of the blob shrunk to fit ``size``; None when the blob is absent or not an image."""
    pixels = SIZES.get(size, SIZES["s"])
    cached = data_dir / "thumbs" / sha256[:2] / f"{sha256}-{pixels}.jpg"
    if cached.exists():
        return cached.read_bytes()
    store = FileBlobStore(blob_root)
    if not store.is_complete(sha256):
        return None
    return await asyncio.to_thread(_make, store.root / sha256[:2] / sha256, cached, pixels)
