"""Planted copies and distractors for the benchmark-overlap filter (tests/data/test_overlap.py, bench/data_overlap.py).

A *scene* is a textured background with a vertical colour gradient, panning slowly, and two or three coloured shapes
moving across it. ``scene(background_seed, objects_seed)``: the same background seed with another objects seed is
the hard distractor the filter must not flag (the same place, other things moving in it); another background seed is
a different clip altogether. Copies are made the way they reach a training corpus: re-encoded, rescaled, cropped,
trimmed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FPS = 24.0
SIZE = (192, 144)
SECONDS = 3.0

#: name -> what the copy does to its source
COPY_KINDS = {
    "reencode": "re-encoded at CRF 36 (heavy compression)",
    "scale": "rescaled to 0.75 of the width and height",
    "crop": "4 % of the width and height cut away (left and top)",
    "trim": "the first 0.4 s cut off",
}


def _background(seed: int, w: int, h: int, extra_w: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng([seed, 0])
    top, bottom = rng.integers(40, 220, 3), rng.integers(40, 220, 3)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = np.broadcast_to((1 - t) * top + t * bottom, (h, w + extra_w, 3)).astype(np.float32)
    low = rng.normal(0.0, 30.0, (h // 10 + 2, (w + extra_w) // 10 + 2, 3)).astype(np.float32)
    img = img + cv2.resize(low, (w + extra_w, h), interpolation=cv2.INTER_CUBIC)
    img = img + rng.normal(0.0, 5.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def scene(
    background_seed: int, objects_seed: int, seconds: float = SECONDS, fps: float = FPS, size: tuple[int, int] = SIZE
) -> np.ndarray:
    """Frames [T, H, W, 3] uint8 of a scene (see the module docstring)."""
    import cv2

    w, h = size
    n = int(round(seconds * fps))
    pan = float(np.random.default_rng([background_seed, 1]).uniform(0.0, 1.0))  # px per frame
    bg = _background(background_seed, w, h, int(pan * n) + 2)
    rng = np.random.default_rng([objects_seed, 2])
    shapes = [
        {
            "kind": int(rng.integers(2)),
            "r": int(rng.uniform(0.08, 0.18) * h),
            "x": rng.uniform(0.1, 0.9) * w,
            "y": rng.uniform(0.3, 0.8) * h,
            "vx": rng.uniform(-1.5, 1.5),
            "vy": rng.uniform(-0.6, 0.6),
            "color": tuple(int(c) for c in rng.integers(0, 255, 3)),
        }
        for _ in range(int(rng.integers(2, 4)))
    ]
    frames = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        img = np.ascontiguousarray(bg[:, int(pan * t) : int(pan * t) + w])
        for s in shapes:
            cx, cy, r = int(s["x"] + s["vx"] * t), int(s["y"] + s["vy"] * t), s["r"]
            if s["kind"] == 0:
                cv2.circle(img, (cx, cy), r, s["color"], -1, cv2.LINE_AA)
            else:
                cv2.rectangle(img, (cx - r, cy - int(r * 1.6)), (cx + r, cy + int(r * 1.6)), s["color"], -1)
        frames[t] = img
    return frames


def write_scene(path: str | os.PathLike, background_seed: int, objects_seed: int, **kw) -> Path:
    from alchemist_data.media import write_video

    return write_video(path, scene(background_seed, objects_seed, **kw), fps=FPS, crf=20, threads=1)


def make_copy(source: str | os.PathLike, path: str | os.PathLike, kind: str) -> Path:
    """Write a copy of ``source`` made as ``COPY_KINDS[kind]`` says."""
    import cv2

    from alchemist_data.media import decode_all_frames, write_video

    if kind not in COPY_KINDS:
        raise ValueError(f"unknown copy kind {kind!r}; choose one of {', '.join(COPY_KINDS)}")
    frames = np.stack(list(decode_all_frames(str(source))))
    h, w = frames.shape[1:3]
    crf = 23
    if kind == "reencode":
        crf = 36
    elif kind == "scale":
        size = (int(w * 0.75) // 2 * 2, int(h * 0.75) // 2 * 2)
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    elif kind == "crop":
        frames = frames[:, int(round(0.04 * h)) :, int(round(0.04 * w)) :]
    else:
        frames = frames[int(round(0.4 * FPS)) :]
    return write_video(path, np.ascontiguousarray(frames), fps=FPS, crf=crf, threads=1)


def planted_set(root: str | os.PathLike, num_references: int, seed: int = 100) -> tuple[Path, list[dict]]:
    """Write ``num_references`` reference scenes under ``root/references`` and the queries under ``root/queries``:
    every reference's four copies (``is_copy``, ``source`` = its reference file name), a same-background distractor
    per reference and as many unrelated scenes. Returns the reference folder and the query rows."""
    root = Path(root)
    refs, queries = root / "references", root / "queries"
    refs.mkdir(parents=True, exist_ok=True)
    queries.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_references):
        b = seed + i
        ref = write_scene(refs / f"ref{i:03d}.mp4", b, b)
        for kind in COPY_KINDS:
            q = make_copy(ref, queries / f"{kind}{i:03d}.mp4", kind)
            rows.append({"video": str(q), "kind": kind, "is_copy": True, "source": ref.name})
        q = write_scene(queries / f"same_background{i:03d}.mp4", b, b + 10_000)
        rows.append({"video": str(q), "kind": "same_background", "is_copy": False, "source": None})
        q = write_scene(queries / f"other{i:03d}.mp4", b + 20_000, b + 20_000)
        rows.append({"video": str(q), "kind": "other_scene", "is_copy": False, "source": None})
    return refs, rows


def precision_recall(rows: list[dict], matched: dict[str, str | None]) -> dict[str, float | int]:
    """Precision and recall of ``matched`` (query video -> matched reference file name, or None), per copy kind
    too. A copy counts as found only when it is matched to its own source."""
    found = {r["video"]: matched.get(r["video"]) for r in rows}
    right = {r["video"] for r in rows if r["is_copy"] and found[r["video"]] == r["source"]}
    tp = len(right)
    fp = sum(1 for r in rows if found[r["video"]] is not None and r["video"] not in right)
    positives = sum(1 for r in rows if r["is_copy"])
    out: dict[str, float | int] = {
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / positives if positives else 1.0,
        "num_copies": positives,
        "num_distractors": len(rows) - positives,
        "false_positives": fp,
    }
    for kind in COPY_KINDS:
        of_kind = [r for r in rows if r["kind"] == kind]
        out[f"recall_{kind}"] = sum(found[r["video"]] == r["source"] for r in of_kind) / max(1, len(of_kind))
    for kind in ("same_background", "other_scene"):
        out[f"flagged_{kind}"] = sum(found[r["video"]] is not None for r in rows if r["kind"] == kind)
    return out
