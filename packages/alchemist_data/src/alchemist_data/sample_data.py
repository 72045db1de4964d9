"""A small synthetic captioned video corpus for the demo and the tests (no downloads).

Each clip is a textured, slowly panning background with one to three moving shapes that stand for what the caption
names: a person (garment-coloured body with a face-like disk: skin tone, eyes, mouth), an animal (body, head, legs)
and objects (ball, box, kite, ...). Captions come from a small grammar that always names exactly one singular human
or animal subject first, then objects and a background word, for example
"A woman in a red coat carries a small blue box across a sunny park." so the entity extractor finds a subject.

Everything is deterministic for a seed: clip ``i`` depends only on ``(seed, i)``, so a larger corpus starts with
the same clips as a smaller one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 45),
    "blue": (40, 80, 200),
    "green": (40, 150, 60),
    "yellow": (235, 200, 40),
    "orange": (240, 130, 30),
    "purple": (120, 50, 160),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
HUMANS = [
    ("man", ["shirt", "jacket", "coat"]),
    ("woman", ["dress", "coat", "sweater"]),
    ("boy", ["shirt", "jacket"]),
    ("girl", ["dress", "sweater"]),
    ("chef", ["apron"]),
    ("dancer", ["dress", "shirt"]),
]
ANIMALS = {
    "dog": (150, 100, 60),
    "cat": (120, 120, 125),
    "horse": (110, 70, 40),
    "rabbit": (200, 190, 180),
    "goat": (215, 210, 200),
}
# object -> (shape, size adjectives)
OBJECTS = {
    "ball": "circle",
    "box": "rect",
    "kite": "diamond",
    "suitcase": "rect",
    "umbrella": "dome",
    "guitar": "guitar",
    "basket": "basket",
}
# background -> (adjectives, top colour, bottom colour)
BACKGROUNDS: dict[str, tuple[list[str], tuple[int, int, int], tuple[int, int, int]]] = {
    "park": (["sunny", "green"], (150, 200, 240), (70, 150, 60)),
    "beach": (["sandy", "quiet"], (120, 180, 235), (225, 200, 150)),
    "street": (["busy", "wet"], (170, 170, 180), (90, 90, 95)),
    "kitchen": (["bright", "small"], (235, 225, 200), (170, 130, 90)),
    "forest": (["misty", "dark"], (150, 170, 160), (40, 80, 45)),
    "field": (["wide", "grassy"], (160, 200, 235), (150, 170, 70)),
}
SIZES = ["small", "large", "bright", "old"]
ANIMAL_SIZES = ["small", "large", "young", "old"]
HUMAN_VERBS = [("carries", "across"), ("holds", "in"), ("throws", "in"), ("kicks", "across"), ("drags", "through")]
ANIMAL_VERBS = [("chases", "across"), ("sniffs", "in"), ("pushes", "through")]
SKIN = [(235, 200, 170), (200, 150, 110), (140, 95, 65), (250, 220, 195)]


@dataclass
class ClipSpec:
    caption: str
    subject: str
    subject_kind: str  # human | animal
    objects: list[str]
    background: str
    garment_rgb: tuple[int, int, int]
    animal_rgb: tuple[int, int, int] | None
    object_rgbs: list[tuple[int, int, int]]
    companion: str | None  # an animal walked by the human subject
    verb: str = ""


def _pick(rng: np.random.Generator, items: list[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def make_caption(rng: np.random.Generator) -> ClipSpec:
    """One caption from the grammar, with what the renderer needs to draw it."""
    bg = _pick(rng, list(BACKGROUNDS))
    bg_adj = _pick(rng, BACKGROUNDS[bg][0])
    obj = _pick(rng, list(OBJECTS))
    obj_color = _pick(rng, list(COLORS))
    size = _pick(rng, SIZES)
    form = int(rng.integers(3))
    if form == 2:
        animal = _pick(rng, list(ANIMALS))
        verb, prep = _pick(rng, ANIMAL_VERBS)
        caption = f"A {animal} {verb} {_a(size)} {obj_color} {obj} {prep} {_a(bg_adj)} {bg}."
        return ClipSpec(
            caption, animal, "animal", [obj], bg, (0, 0, 0), ANIMALS[animal], [COLORS[obj_color]], None, verb
        )
    human, garments = _pick(rng, HUMANS)
    garment = _pick(rng, garments)
    color = _pick(rng, [c for c in COLORS if c != obj_color])
    if form == 1:
        animal = _pick(rng, list(ANIMALS))
        animal_size = _pick(rng, ANIMAL_SIZES)
        caption = (
            f"A {human} in {_a(color)} {garment} walks {_a(animal_size)} {animal} and holds "
            f"{_a(obj_color)} {obj} across {_a(bg_adj)} {bg}."
        )
        return ClipSpec(
            caption, human, "human", [obj], bg, COLORS[color], ANIMALS[animal], [COLORS[obj_color]], animal, "holds"
        )
    verb, prep = _pick(rng, HUMAN_VERBS)
    caption = f"A {human} in {_a(color)} {garment} {verb} {_a(size)} {obj_color} {obj} {prep} {_a(bg_adj)} {bg}."
    return ClipSpec(caption, human, "human", [obj], bg, COLORS[color], None, [COLORS[obj_color]], None, verb)


def _background(rng: np.random.Generator, bg: str, w: int, h: int, pan_px: int) -> np.ndarray:
    """Vertical colour gradient of the background's palette plus soft texture, wide enough to pan."""
    import cv2

    _, top, bottom = BACKGROUNDS[bg]
    total_w = w + pan_px
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    horizon = 0.45
    mix = np.clip((t - horizon + 0.1) / 0.2, 0.0, 1.0)
    grad = (1 - mix) * np.array(top, np.float32) + mix * np.array(bottom, np.float32)
    img = np.broadcast_to(grad, (h, total_w, 3)).copy()
    low = rng.normal(0.0, 18.0, (max(2, h // 12), max(2, total_w // 12), 1)).astype(np.float32)
    tex = cv2.resize(low, (total_w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    fine = rng.normal(0.0, 6.0, (h, total_w, 1)).astype(np.float32)
    return np.clip(img + tex + fine, 0, 255).astype(np.uint8)


def _draw_face(img: np.ndarray, cx: int, cy: int, r: int, skin: tuple[int, int, int]) -> None:
    """A frontal face (hair, oval, eye whites with pupils, brows, nose, lips): real face detectors such as MTCNN
    find it, so the faces stage of the demo has something to crop."""
    import cv2

    aa = cv2.LINE_AA
    shade = tuple(int(c * 0.75) for c in skin)
    cv2.ellipse(img, (cx, cy - int(r * 0.15)), (int(r * 0.95), int(r * 1.15)), 0, 0, 360, (50, 35, 25), -1, aa)
    cv2.ellipse(img, (cx, cy + int(r * 0.1)), (int(r * 0.8), int(r * 1.05)), 0, 0, 360, skin, -1, aa)
    ey, ex = cy - int(r * 0.12), int(r * 0.33)
    for sx in (-1, 1):
        cv2.ellipse(
            img, (cx + sx * ex, ey), (max(1, int(r * 0.2)), max(1, int(r * 0.1))), 0, 0, 360, (245, 245, 245), -1, aa
        )
        cv2.circle(img, (cx + sx * ex, ey), max(1, int(r * 0.08)), (40, 30, 20), -1, aa)
        cv2.line(
            img,
            (cx + sx * int(r * 0.18), ey - int(r * 0.22)),
            (cx + sx * int(r * 0.5), ey - int(r * 0.25)),
            (60, 40, 30),
            max(1, int(r * 0.07)),
            aa,
        )
    cv2.line(img, (cx, ey + int(r * 0.1)), (cx - int(r * 0.06), cy + int(r * 0.3)), shade, max(1, int(r * 0.07)), aa)
    cv2.ellipse(
        img, (cx, cy + int(r * 0.55)), (max(1, int(r * 0.25)), max(1, int(r * 0.09))), 0, 0, 360, (170, 70, 70), -1, aa
    )


def _draw_person(
    img: np.ndarray,
    cx: int,
    base_y: int,
    height: int,
    garment: tuple[int, int, int],
    skin: tuple[int, int, int],
    phase: float,
) -> tuple[int, int]:
    """Body ellipse, legs, arm and a frontal face; returns the hand position (for carried objects)."""
    import cv2

    aa = cv2.LINE_AA
    head_r = max(6, height // 8)
    body_h = int(height * 0.42)
    leg_h = height - body_h - 2 * head_r
    hip_y = base_y - leg_h
    swing = int(np.sin(phase) * leg_h * 0.35)
    for dx in (-swing, swing):  # legs
        cv2.line(img, (cx, hip_y), (cx + dx, base_y), (50, 50, 70), max(2, height // 25), aa)
    body_cy = hip_y - body_h // 2
    cv2.ellipse(img, (cx, body_cy), (max(3, height // 7), body_h // 2), 0, 0, 360, garment, -1, aa)
    head_cy = hip_y - body_h - head_r + 2
    _draw_face(img, cx, head_cy, head_r, skin)
    hand = (cx + int(height * 0.2), body_cy)
    cv2.line(img, (cx, body_cy - body_h // 4), hand, garment, max(2, height // 22), aa)
    return hand


def _draw_animal(
    img: np.ndarray, cx: int, base_y: int, length: int, color: tuple[int, int, int], phase: float, facing: int = 1
) -> None:
    import cv2

    aa = cv2.LINE_AA
    body_h = max(4, length // 3)
    leg = max(3, length // 4)
    body_cy = base_y - leg - body_h // 2
    swing = int(np.sin(phase) * leg * 0.4)
    for i, lx in enumerate((-length // 3, -length // 5, length // 5, length // 3)):
        dx = swing if i % 2 else -swing
        cv2.line(img, (cx + lx, body_cy), (cx + lx + dx, base_y), color, max(2, length // 14), aa)
    cv2.ellipse(img, (cx, body_cy), (length // 2, body_h // 2), 0, 0, 360, color, -1, aa)
    head = (cx + facing * length // 2, body_cy - body_h // 2)
    cv2.circle(img, head, max(3, body_h // 2), color, -1, aa)
    cv2.circle(
        img,
        (head[0] + facing * max(1, body_h // 5), head[1] - max(1, body_h // 6)),
        max(1, body_h // 10),
        (20, 20, 20),
        -1,
        aa,
    )
    tail = cx - facing * length // 2
    cv2.line(
        img, (tail, body_cy), (tail - facing * length // 5, body_cy - body_h // 2), color, max(2, length // 16), aa
    )


def _draw_object(img: np.ndarray, kind: str, cx: int, cy: int, r: int, color: tuple[int, int, int]) -> None:
    import cv2

    aa = cv2.LINE_AA
    dark = tuple(int(c * 0.6) for c in color)
    if kind == "circle":
        cv2.circle(img, (cx, cy), r, color, -1, aa)
        cv2.ellipse(img, (cx, cy), (r, r // 3), 0, 0, 360, dark, max(1, r // 8), aa)
    elif kind == "rect":
        cv2.rectangle(img, (cx - r, cy - int(r * 0.75)), (cx + r, cy + int(r * 0.75)), color, -1, aa)
        cv2.rectangle(img, (cx - r, cy - int(r * 0.75)), (cx + r, cy + int(r * 0.75)), dark, max(1, r // 8), aa)
    elif kind == "diamond":
        pts = np.array([[cx, cy - r], [cx + int(r * 0.7), cy], [cx, cy + r], [cx - int(r * 0.7), cy]], np.int32)
        cv2.fillPoly(img, [pts], color, aa)
        cv2.line(img, (cx, cy + r), (cx - r // 2, cy + 2 * r), dark, 1, aa)
    elif kind == "dome":
        cv2.ellipse(img, (cx, cy), (r, int(r * 0.7)), 0, 180, 360, color, -1, aa)
        cv2.line(img, (cx, cy), (cx, cy + r), dark, max(1, r // 8), aa)
    elif kind == "guitar":
        cv2.circle(img, (cx, cy + r // 3), int(r * 0.6), color, -1, aa)
        cv2.circle(img, (cx, cy - r // 4), int(r * 0.45), color, -1, aa)
        cv2.line(img, (cx, cy - r // 4), (cx, cy - int(r * 1.4)), dark, max(2, r // 6), aa)
    else:  # basket
        cv2.ellipse(img, (cx, cy), (r, int(r * 0.6)), 0, 0, 180, color, -1, aa)
        cv2.ellipse(img, (cx, cy), (int(r * 0.8), int(r * 0.8)), 0, 180, 360, dark, max(1, r // 8), aa)


def render_clip(spec: ClipSpec, rng: np.random.Generator, size: tuple[int, int], num_frames: int) -> np.ndarray:
    """Frames [T, H, W, 3] uint8 for a caption spec."""
    w, h = size
    pan = max(1, w // 160)
    bg = _background(rng, spec.background, w, h, pan * num_frames + 1)
    ground = int(h * (0.82 + 0.08 * rng.random()))
    direction = 1 if rng.random() < 0.5 else -1
    start_x = int(w * (0.25 if direction > 0 else 0.75))
    speed = w * (0.25 + 0.15 * rng.random()) / max(1, num_frames)
    scale = 0.55 + 0.2 * rng.random()
    skin = SKIN[int(rng.integers(len(SKIN)))]
    obj_kind = OBJECTS[spec.objects[0]]
    obj_r = max(5, int(h * (0.07 + 0.04 * rng.random())))
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    for t in range(num_frames):
        img = np.ascontiguousarray(bg[:, t * pan : t * pan + w])
        x = int(start_x + direction * speed * t)
        phase = t * 0.5
        if spec.subject_kind == "human":
            if spec.companion is not None:
                _draw_animal(
                    img,
                    x - direction * int(w * 0.18),
                    ground,
                    int(h * 0.3 * scale),
                    spec.animal_rgb,
                    phase + 1.0,
                    direction,
                )
            hand = _draw_person(img, x, ground, int(h * scale), spec.garment_rgb, skin, phase)
            if spec.verb in ("throws", "kicks"):
                # Thrown/kicked objects fly ahead of the subject on an arc.
                ox = x + direction * int(w * 0.12 + speed * t * 0.5)
                oy = int(ground - obj_r - abs(np.sin(t / max(1, num_frames) * np.pi * 2)) * h * 0.3)
            else:
                ox, oy = hand[0] + obj_r // 2, hand[1] + obj_r // 2
            _draw_object(img, obj_kind, ox, oy, obj_r, spec.object_rgbs[0])
        else:
            _draw_animal(img, x, ground, int(w * 0.3 * scale), spec.animal_rgb, phase, direction)
            ox = x + direction * int(w * 0.22)
            oy = int(ground - obj_r - abs(np.sin(t * 0.25)) * h * 0.08)
            _draw_object(img, obj_kind, ox, oy, obj_r, spec.object_rgbs[0])
        frames[t] = img
    return frames


def write_sample_corpus(
    out_dir: str | os.PathLike,
    num_clips: int = 24,
    seed: int = 0,
    size: tuple[int, int] = (320, 240),
    seconds: float = 2.0,
    fps: float = 24,
    on_clip: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``num_clips`` synthetic H.264 clips under ``out_dir/videos`` and ``out_dir/manifest.jsonl``.

    Manifest rows: ``video`` (relative to the manifest), ``caption``, ``clip_id`` (``sample-0000`` ...), plus
    ``subjects``, ``objects`` and ``background`` (the nouns the grammar drew in the clip; the curation manifest reader
    ignores these columns).
    ``on_clip(done, total)`` is called after each clip (progress bars). Returns the manifest path.
    """
    from alchemist_data.manifest import write_manifest
    from alchemist_data.media import write_video

    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if size[0] < 32 or size[1] < 32:
        raise ValueError(f"size must be at least 32x32 pixels, got {size}")
    if seconds * fps < 3:
        raise ValueError(f"seconds * fps must give at least 3 frames (the 3 reference frames), got {seconds * fps}")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    num_frames = int(round(seconds * fps))
    rows = []
    for i in range(num_clips):
        rng = np.random.default_rng([seed, i])
        spec = make_caption(rng)
        frames = render_clip(spec, rng, size, num_frames)
        rel = f"videos/sample_{i:04d}.mp4"
        # One encoder thread: the bytes are then identical for a seed on any machine.
        write_video(out / rel, frames, fps=fps, gop=int(fps), options={"preset": "veryfast"}, crf=23, threads=1)
        subjects = [spec.subject] + ([spec.companion] if spec.companion else [])
        rows.append(
            {
                "video": rel,
                "caption": spec.caption,
                "clip_id": f"sample-{i:04d}",
                "subjects": subjects,
                "objects": list(spec.objects),
                "background": spec.background,
            }
        )
        if on_clip is not None:
            on_clip(i + 1, num_clips)
    return write_manifest(out / "manifest.jsonl", rows)
