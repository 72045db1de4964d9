"""Reference crops, as the benchmark writes and reads them (spec §2.3, §7.3); their PNG/JPEG bytes come from
:mod:`alchemist_data.media.image`.

* Reference images are RGBA crops of the box with alpha = mask (``prepare_msrvtt_personalization_data.py``).
* For DINO, the benchmark fills transparent / outside-mask pixels with white and pads to a centred white square
  (``load_subject_image_dino``): :func:`white_fill` + :func:`pad_to_square`, or :func:`subject_square` in one go.
* Face crops are plain RGB box crops (no mask).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _clip_box(box: Sequence[int], h: int, w: int) -> tuple[int, int, int, int]:
    # Boxes from GroundingDINO are not clipped and may start at negative pixels; numpy would wrap negative slice
    # starts around, so crops clip to the frame first.
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, x1 = min(max(x0, 0), w), min(max(x1, 0), w)
    y0, y1 = min(max(y0, 0), h), min(max(y1, 0), h)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {list(box)} has no area inside the {w}x{h} image")
    return x0, y0, x1, y1


def mask_crop(mask: np.ndarray, box: Sequence[int]) -> np.ndarray:
    """The full-frame bool mask cut to the box (clipped to the frame)."""
    m = np.asarray(mask)
    x0, y0, x1, y1 = _clip_box(box, m.shape[0], m.shape[1])
    return m[y0:y1, x0:x1].astype(bool)


def rgba_crop(image: np.ndarray, mask: np.ndarray, box: Sequence[int]) -> np.ndarray:
    """HxWx4 uint8 crop of the box with alpha = 255 inside the mask, 0 outside.

    ``mask`` is either the full-frame mask or one already cropped to the box (the benchmark's stored form; like the
    benchmark, a box-cropped mask larger than the crop is cut to the crop's shape).
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 RGB, got shape {img.shape}")
    x0, y0, x1, y1 = _clip_box(box, img.shape[0], img.shape[1])
    crop = img[y0:y1, x0:x1]
    m = np.asarray(mask).astype(bool)
    if m.shape[:2] == img.shape[:2]:
        m = m[y0:y1, x0:x1]
    else:
        m = m[: crop.shape[0], : crop.shape[1]]
        if m.shape != crop.shape[:2]:
            raise ValueError(f"mask shape {m.shape} matches neither the image {img.shape[:2]} nor the box crop")
    alpha = (m * 255).astype(np.uint8)
    return np.concatenate([crop.astype(np.uint8), alpha[..., None]], axis=2)


def face_crop(image: np.ndarray, box: Sequence[int]) -> np.ndarray:
    """Unmasked RGB crop of a face box (the benchmark's face references are not masked)."""
    img = np.asarray(image)
    x0, y0, x1, y1 = _clip_box(box, img.shape[0], img.shape[1])
    return np.ascontiguousarray(img[y0:y1, x0:x1])


def white_fill(rgba: np.ndarray) -> np.ndarray:
    """RGBA -> RGB over a white background (alpha-composited; for 0/255 alpha it is exactly the benchmark's
    ``mask * crop + (1 - mask) * 255``)."""
    arr = np.asarray(rgba)
    if arr.ndim != 3 or arr.shape[2] != 4:
        raise ValueError(f"white_fill expects an HxWx4 RGBA array, got shape {arr.shape}")
    a = arr[..., 3:4].astype(np.float32) / 255.0
    rgb = arr[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def pad_to_square(img: np.ndarray, fill: int = 255) -> np.ndarray:
    """Pad to a square with ``fill``, the original centred as the benchmark pastes it (offset ``(long - short) // 2``).

    For RGBA input the padding is transparent (alpha 0) with colour ``fill``.
    """
    arr = np.asarray(img)
    h, w = arr.shape[:2]
    if h == w:
        return arr.copy()
    side = max(h, w)
    out = np.full((side, side, *arr.shape[2:]), fill, dtype=arr.dtype)
    if arr.ndim == 3 and arr.shape[2] == 4:
        out[..., 3] = 0
    top, left = ((side - h) // 2, 0) if w > h else (0, (side - w) // 2)
    out[top : top + h, left : left + w] = arr
    return out


def subject_square(image: np.ndarray, box: Sequence[int], mask: np.ndarray) -> np.ndarray:
    """Benchmark's subject image before DINO's resize: box crop, white outside the mask, centred white square."""
    return pad_to_square(white_fill(rgba_crop(image, mask, box)), fill=255)

