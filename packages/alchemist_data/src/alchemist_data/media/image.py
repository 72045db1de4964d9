"""PNG / JPEG bytes <-> uint8 arrays (PIL): the one image codec of curation, training and the benchmark.

Masks, crops and plates are stored in Parquet as PNG/JPEG bytes (``alchemist_data.schema``), so every package
encodes and decodes them here and the stored form cannot drift between writer and reader.
"""

from __future__ import annotations

import io

import numpy as np


def encode_png(arr: np.ndarray) -> bytes:
    """Lossless PNG bytes of an HxW, HxWx3 or HxWx4 uint8 array. A bool mask is stored as 0/255 gray (viewable;
    ``decode_image(...).astype(bool)`` gives the mask back)."""
    from PIL import Image

    a = np.asarray(arr)
    a = a.astype(np.uint8) * 255 if a.dtype == bool else a.astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    return buf.getvalue()


def encode_jpg(arr: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB (or gray) uint8 array; RGBA is refused (JPEG has no alpha: white_fill it first).

    The benchmark's ground-truth frames use ``quality=75``: PIL's default, with which the official ``frame*.jpg``
    were saved.
    """
    from PIL import Image

    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 4:
        raise ValueError("JPEG cannot store an alpha channel; encode RGBA as PNG or white_fill() it first")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a.astype(np.uint8))).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def decode_image(data: bytes, mode: str | None = None) -> np.ndarray:
    """Decode PNG/JPEG bytes to a uint8 array.

    ``mode=None`` keeps the stored mode: RGBA (or gray/palette with transparency) -> HxWx4, gray -> HxW, else RGB.
    A PIL mode (``"RGB"``, ``"RGBA"``, ``"L"``) converts to it, as the benchmark's ``Image.open(...).convert(mode)``.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if mode is not None:
            return np.asarray(im.convert(mode))
        if im.mode == "RGBA":
            return np.asarray(im.convert("RGBA"))
        if im.mode in ("L", "1"):
            return np.asarray(im.convert("L"))
        if im.mode in ("LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            return np.asarray(im.convert("RGBA"))
        return np.asarray(im.convert("RGB"))
