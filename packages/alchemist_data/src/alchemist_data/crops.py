"""Image codecs for reference crops, masks and frames: lossless PNG (RGBA, gray, bool masks) and JPEG.

The crop rules themselves (RGBA reference crops, white fill, square padding, the masked subject crop) are the
benchmark's, in :mod:`alchemist_data.benchmark_rules`.
"""

from __future__ import annotations

import io

import numpy as np


def encode_png(arr: np.ndarray) -> bytes:
    """Lossless PNG bytes of an HxW, HxWx3 or HxWx4 uint8 array. A bool mask is stored as 0/255 gray (viewable;
    ``decode_png(...).astype(bool)`` gives the mask back)."""
    from PIL import Image

    a = np.asarray(arr)
    a = a.astype(np.uint8) * 255 if a.dtype == bool else a.astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    return buf.getvalue()


def encode_jpg(arr: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB (or gray) uint8 array; RGBA is refused (JPEG has no alpha: white_fill it first)."""
    from PIL import Image

    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 4:
        raise ValueError("JPEG cannot store an alpha channel; encode RGBA as PNG or white_fill() it first")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a.astype(np.uint8))).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """Decode PNG/JPEG bytes to a uint8 array, keeping the stored mode: RGBA -> HxWx4, gray -> HxW, else RGB."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.mode == "RGBA":
            return np.asarray(im.convert("RGBA"))
        if im.mode in ("L", "1"):
            return np.asarray(im.convert("L"))
        if im.mode in ("LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            return np.asarray(im.convert("RGBA"))
        return np.asarray(im.convert("RGB"))


def decode_png(data: bytes) -> np.ndarray:
    """Decode PNG bytes (see :func:`decode_image`)."""
    return decode_image(data)
