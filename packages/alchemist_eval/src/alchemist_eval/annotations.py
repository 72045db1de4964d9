"""The released MSRVTT-Personalization annotation format, read from a folder or the zip itself.

Per clip ``<name>`` (``prepare_msrvtt_personalization_data.py``):

* ``<name>.vid_info.json``: ``{"video": "video123.mp4", "resolution": [W, H],
  "timestamp": ["HH:MM:SS.fff", "HH:MM:SS.fff"], "caption": str,
  "word_tags": {"subject": [...], "object": [...], "background": [...], "subject_with_face": [...]}}``
* ``<name>.word_tags_masks.pkl.gz``: ``{word_tag: [{"filename": "frame1.jpg"|"frame2.jpg"|"frame3.jpg",
  "box_xyxy": [x0, y0, x1, y1], "mask": bool array cropped to the box, "is_face_crop": bool}, ...]}``

The clip id is the file name up to its first dot, as the official script does.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alchemist_eval.safe_pickle import restricted_loads

FRAME_FILES = {"frame1.jpg": 0, "frame2.jpg": 1, "frame3.jpg": 2}


class AnnotationError(ValueError):
    """An annotation file that does not follow the released format."""


def parse_timestamp(timestamp: str) -> float:
    """``HH:MM:SS.fff`` -> seconds (``convert_timestamp_to_second`` with ``%H:%M:%S.%f``)."""
    try:
        hms, _, frac = timestamp.strip().partition(".")
        hours, minutes, seconds = (int(p) for p in hms.split(":"))
        micro = int((frac + "000000")[:6]) if frac else 0
    except ValueError as err:
        raise ValueError(f"bad timestamp {timestamp!r}: expected HH:MM:SS.fff") from err
    if not (0 <= minutes < 60 and 0 <= seconds < 60 and hours >= 0):
        raise ValueError(f"bad timestamp {timestamp!r}: expected HH:MM:SS.fff")
    return hours * 3600 + minutes * 60 + seconds + micro / 1_000_000


@dataclass
class MaskEntry:
    frame_index: int  # 0, 1, 2 = frame1/2/3 (5 %, 50 %, 95 %)
    box_xyxy: list[int]
    mask: np.ndarray  # bool, cropped to the box
    is_face_crop: bool


@dataclass
class Annotation:
    clip_id: str
    video: str  # file name inside the MSR-VTT video folder
    resolution_wh: tuple[int, int] | None
    start_s: float
    end_s: float
    caption: str
    subject: list[str]
    object: list[str]
    background: list[str]
    subject_with_face: list[str]
    masks: dict[str, list[MaskEntry]] = field(default_factory=dict)


def _parse(name: str, info_bytes: bytes, masks_bytes: bytes | None) -> Annotation:
    try:
        info = json.loads(info_bytes)
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{name}.vid_info.json is not valid JSON: {err}") from err
    missing = [k for k in ("video", "timestamp", "caption", "word_tags") if k not in info]
    if missing:
        raise AnnotationError(f"{name}.vid_info.json lacks {', '.join(missing)}")
    tags = info["word_tags"]
    ts = info["timestamp"]
    if not isinstance(ts, (list, tuple)) or len(ts) != 2:
        raise AnnotationError(f"{name}.vid_info.json: timestamp must be [start, end] as HH:MM:SS.fff")
    try:
        start_s, end_s = parse_timestamp(ts[0]), parse_timestamp(ts[1])
    except ValueError as err:
        raise AnnotationError(f"{name}.vid_info.json: {err}") from err
    res = info.get("resolution")
    ann = Annotation(
        clip_id=name,
        video=str(info["video"]),
        resolution_wh=(int(res[0]), int(res[1])) if res else None,
        start_s=start_s,
        end_s=end_s,
        caption=str(info["caption"]),
        subject=list(tags.get("subject", [])),
        object=list(tags.get("object", [])),
        background=list(tags.get("background", [])),
        subject_with_face=list(tags.get("subject_with_face", [])),
    )
    if masks_bytes is not None:
        raw = restricted_loads(masks_bytes)
        if not isinstance(raw, dict):
            raise AnnotationError(f"{name}.word_tags_masks.pkl.gz must hold a dict word_tag -> list of masks")
        for tag, entries in raw.items():
            parsed = []
            for e in entries:
                if e.get("filename") not in FRAME_FILES:
                    raise AnnotationError(f"{name}: mask of {tag!r} names unknown frame {e.get('filename')!r}")
                parsed.append(
                    MaskEntry(
                        frame_index=FRAME_FILES[e["filename"]],
                        box_xyxy=[int(v) for v in e["box_xyxy"]],
                        mask=np.asarray(e["mask"], dtype=bool),
                        is_face_crop=bool(e.get("is_face_crop", False)),
                    )
                )
            ann.masks[str(tag)] = parsed
    return ann


def load_annotations(source: str | Path) -> list[Annotation]:
    """All clips of an annotation folder or zip, sorted by clip id (the official ``sorted(glob(...))`` order)."""
    source = Path(source)
    if not source.exists():
        raise AnnotationError(f"annotations {source} do not exist: pass the released zip or its unpacked folder")
    files: dict[str, bytes] = {}
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            for info in zf.infolist():
                base = info.filename.rsplit("/", 1)[-1]
                if base.endswith((".vid_info.json", ".word_tags_masks.pkl.gz")) and not base.startswith("._"):
                    files[base] = zf.read(info)
    elif source.is_dir():
        for path in source.rglob("*"):
            if path.name.endswith((".vid_info.json", ".word_tags_masks.pkl.gz")) and not path.name.startswith("._"):
                files[path.name] = path.read_bytes()
    else:
        raise AnnotationError(f"annotations {source} are neither a folder nor a zip file")
    names = sorted(n[: -len(".vid_info.json")].split(".")[0] for n in files if n.endswith(".vid_info.json"))
    if not names:
        raise AnnotationError(f"no *.vid_info.json under {source}")
    out = []
    for name in names:
        out.append(_parse(name, files[f"{name}.vid_info.json"], files.get(f"{name}.word_tags_masks.pkl.gz")))
    return out
