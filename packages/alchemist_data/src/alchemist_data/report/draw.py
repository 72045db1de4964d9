"""Pictures for the report: reference frames with masks, boxes and entity words drawn over them (numpy/Pillow)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Distinct, saturated colours that read on light and dark frames; a word keeps its colour on every frame of a clip.
PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
    (128, 0, 0),
]
MASK_ALPHA = 0.45
# Frames are drawn on a canvas of this width, twice the width the page shows them at: labels and lines keep the same
# size on a 256-px frame of the tiny profile and on a 1080p one, and a large frame costs a small JPEG.
CANVAS_WIDTH_PX = 600


def word_colours(words: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """A colour per distinct word, in order of first appearance."""
    out: dict[str, tuple[int, int, int]] = {}
    for w in words:
        if w not in out:
            out[w] = PALETTE[len(out) % len(PALETTE)]
    return out


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled font (FreeType): no system font needed
    except (TypeError, OSError):
        return ImageFont.load_default()


def draw_detections(
    frame: np.ndarray,
    detections: list[dict[str, Any]],
    colours: dict[str, tuple[int, int, int]],
) -> np.ndarray:
    """The frame with every detection of it drawn: the SAM mask tinted in the word's colour, the box, and a label
    with the entity word and the box score. Boxes that were dropped (``drop_reason``) are drawn thin and grey with
    the reason; face boxes are yellow. Returns a new RGB uint8 array (enlarged when the frame is small)."""
    from PIL import Image, ImageDraw

    from alchemist_data.models.base import check_rgb
    from alchemist_data.stages.base import full_mask

    frame = check_rgb(frame, "frame")
    h, w = frame.shape[:2]
    out = frame.astype(np.float32)
    for det in detections:
        if det.get("is_detected") and det.get("mask_png") and det.get("box_xyxy_px"):
            mask = full_mask(det, (h, w))
            colour = np.array(colours.get(det["entity_word"], PALETTE[0]), np.float32)
            out[mask] = (1 - MASK_ALPHA) * out[mask] + MASK_ALPHA * colour
    scale = CANVAS_WIDTH_PX / w
    img = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    img = img.resize(
        (CANVAS_WIDTH_PX, max(1, round(h * scale))),
        Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC,
    )
    draw = ImageDraw.Draw(img)
    font = _font(20)
    for det in sorted(detections, key=lambda d: bool(d.get("is_detected"))):  # kept boxes drawn last, on top
        box = det.get("box_xyxy_px")
        if not box:
            continue
        x0, y0, x1, y1 = (round(v * scale) for v in box)
        kept = bool(det.get("is_detected"))
        colour = colours.get(det["entity_word"], PALETTE[0]) if kept else (150, 150, 150)
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=4 if kept else 2)
        score = det.get("box_score")
        label = det["entity_word"] + (f" {score:.2f}" if score is not None else "")
        if not kept:
            label += f" ({det.get('drop_reason') or 'dropped'})"
        _label(draw, font, label, x0, y0, colour, img.size)
        face = det.get("face_box_xyxy_px") if det.get("has_face") else None
        if face:
            fx0, fy0, fx1, fy1 = (round(v * scale) for v in face)
            draw.rectangle([fx0, fy0, max(fx0, fx1 - 1), max(fy0, fy1 - 1)], outline=(255, 220, 0), width=3)
    return np.asarray(img)


def _label(
    draw: Any, font: Any, text: str, x: int, y: int, colour: tuple[int, int, int], size: tuple[int, int]
) -> None:
    """Text on a filled tag at the box's top-left corner, kept inside the picture."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 6, bottom - top + 4
    x = min(max(0, x), max(0, size[0] - tw))
    y = y - th if y - th >= 0 else min(y, max(0, size[1] - th))
    draw.rectangle([x, y, x + tw, y + th], fill=colour)
    luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    draw.text((x + 3 - left, y + 2 - top), text, fill=(0, 0, 0) if luma > 150 else (255, 255, 255), font=font)


def placeholder(width: int, height: int, text: str) -> np.ndarray:
    """A grey picture with a message, where a frame could not be decoded."""
    from PIL import Image, ImageDraw

    h = max(1, round(height * CANVAS_WIDTH_PX / max(1, width)))
    img = Image.new("RGB", (CANVAS_WIDTH_PX, h), (70, 70, 70))
    draw = ImageDraw.Draw(img)
    draw.multiline_text((16, 16), _wrap(text, 48), fill=(235, 235, 235), font=_font(22))
    return np.asarray(img)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:8])


def thumbnail(image: np.ndarray, width_px: int) -> np.ndarray:
    """``image`` resized to ``width_px`` wide (keeping its aspect), for tables of many videos."""
    from PIL import Image

    h, w = image.shape[:2]
    if w <= width_px:
        return image
    return np.asarray(
        Image.fromarray(image).resize((width_px, max(1, round(h * width_px / w))), Image.Resampling.LANCZOS)
    )
