"""Synthetic media and a tiny annotation set in the released MSRVTT-Personalization format (made here, not
downloaded): source "MSR-VTT" videos written with PyAV, ``*.vid_info.json`` and ``*.word_tags_masks.pkl.gz``."""

from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SRC_W, SRC_H = 160, 120  # source videos
RES_W, RES_H = 128, 96  # annotated resolution of the clips


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture (optical flow needs texture to lock on)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, size=(h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    return cv2.resize(small, (w + 16, h + 16), interpolation=cv2.INTER_CUBIC)[:h, :w]


def moving_frames(n: int, h: int = 96, w: int = 128, step_px: int = 6, seed: int = 0) -> np.ndarray:
    """A textured scene panning by ``step_px`` per frame."""
    big = texture(h, w + n * step_px + 8, seed)
    return np.stack([big[:, i * step_px : i * step_px + w] for i in range(n)])


def static_frames(n: int, h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    return np.repeat(texture(h, w, seed)[None], n, axis=0)


def astronaut_frames(n: int, size: int = 256) -> np.ndarray:
    """scikit-image's astronaut photo (a real face, shipped in the wheel), slightly shifted per frame."""
    import cv2
    from skimage import data

    img = cv2.resize(data.astronaut(), (size + 2 * n, size + 2 * n))
    return np.stack([img[i : i + size, i : i + size] for i in range(n)])


def write(path: Path, frames: np.ndarray, fps: float = 24.0) -> Path:
    from alchemist_data.media import write_video

    write_video(path, frames, fps)
    return path


def _scene(t: int, n: int) -> np.ndarray:
    """Source frame: textured background, a red 'man' block and a blue 'dog' block moving right."""
    frame = texture(SRC_H, SRC_W, seed=3).copy()
    x = 20 + int(60 * t / max(n - 1, 1))
    frame[30:100, x : x + 30] = (200, 40, 40)  # man
    frame[30:45, x + 5 : x + 25] = (240, 200, 160)  # his head ("face")
    frame[80:110, 100:150] = (40, 40, 200)  # dog
    return frame


@pytest.fixture(scope="session")
def annotation_set(tmp_path_factory) -> dict[str, Path]:
    """3 annotated clips + 1 whose MSR-VTT video is missing, in the official file format."""
    root = tmp_path_factory.mktemp("msrvtt")
    videos, ann = root / "videos", root / "annotations"
    videos.mkdir()
    ann.mkdir()
    n = 48  # 2 s at 24 fps
    src = np.stack([_scene(t, n) for t in range(n)])
    for k in range(3):
        write(videos / f"video{k}.mp4", src)
    sx, sy = RES_W / SRC_W, RES_H / SRC_H

    def box_of(x0, y0, x1, y1):
        return [int(x0 * sx), int(y0 * sy), int(x1 * sx), int(y1 * sy)]

    def entry(frame_file, box, face=False):
        h, w = box[3] - box[1], box[2] - box[0]
        return {"filename": frame_file, "box_xyxy": box, "mask": np.ones((h, w), dtype=bool), "is_face_crop": face}

    def man_entries(with_face: bool):
        out = []
        for fi, frac in enumerate((0.05, 0.5, 0.95)):
            t = int(round((0.25 + frac * 1.5) * 24))
            x = 20 + int(60 * t / (n - 1))
            out.append(entry(f"frame{fi + 1}.jpg", box_of(x, 30, x + 30, 100)))
            if with_face and fi == 1:
                out.append(entry("frame2.jpg", box_of(x + 5, 30, x + 25, 45), face=True))
        return out

    dog = [entry(f"frame{i}.jpg", box_of(100, 80, 150, 110)) for i in (1, 2, 3)]

    def word_tags(subjects: list[str], objects: list[str], background: str, with_face: list[str]) -> dict:
        return {"subject": subjects, "object": objects, "background": [background], "subject_with_face": with_face}

    specs = {  # clip -> (video, word tags, masks per word); clip_d's video9.mp4 does not exist
        "clip_a": ("video0.mp4", word_tags(["man"], ["dog"], "park", ["man"]), {"man": man_entries(True), "dog": dog}),
        "clip_b": ("video1.mp4", word_tags(["dog"], [], "lawn", []), {"dog": dog}),
        "clip_c": (
            "video2.mp4",
            word_tags(["man", "dog"], [], "street", ["man"]),
            {"man": man_entries(False), "dog": dog},
        ),
        "clip_d": ("video9.mp4", word_tags(["cat"], [], "room", []), {}),
    }
    for name, (video, tags, masks) in specs.items():
        info = {
            "video": video,
            "resolution": [RES_W, RES_H],
            "timestamp": ["00:00:00.250", "00:00:01.750"],
            "caption": f"A scene of {' and '.join(tags['subject'])} in a {tags['background'][0]}.",
            "word_tags": tags,
        }
        (ann / f"{name}.vid_info.json").write_text(json.dumps(info))
        with gzip.open(ann / f"{name}.word_tags_masks.pkl.gz", "wb") as f:
            pickle.dump(masks, f)
    return {"root": root, "videos": videos, "annotations": ann}


@pytest.fixture(scope="session")
def prepared_benchmark(annotation_set, tmp_path_factory) -> Path:
    from alchemist_eval.prepare import prepare_benchmark

    out = tmp_path_factory.mktemp("bench") / "bench"
    prepare_benchmark(annotation_set["annotations"], annotation_set["videos"], out, profile="tiny", shard_size=2)
    return out
