"""The benchmark as tables: preparation from the released annotations, conditioning lists, ground truth loading.

A benchmark folder is a curated run folder (``alchemist_data.schema`` tables ``clips``, ``entities``,
``backgrounds``, ``rejects`` + ``_done`` markers, queryable with ``alchemist_data.catalog``) plus three tables of
ours, written per shard before the shard's marker:

* ``gt_frames``: the ground-truth frames at 5/50/95 % of each clip, JPEG as the official ``frame{1,2,3}.jpg``;
* ``conditioning``: the conditioning lists of every mode (see :func:`build_conditioning`);
* ``gt_embeddings``: ground-truth embeddings made with the preparation profile's models (reused by ``alchemist
  eval`` when it runs with the same models, recomputed otherwise).

Because only the schema tables are required, ``alchemist eval`` scores equally against any curated run folder:
GT frames are then decoded from the clip's video at ``ref_times_s`` and embeddings computed on the fly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from alchemist_data.media import (
    decode_image,
    reference_frames,
)
from alchemist_eval.scorer import GroundTruth

GT_FRAMES = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("frame_index", pa.int8(), nullable=False),  # 0, 1, 2 = 5 %, 50 %, 95 %
        pa.field("frame_time_s", pa.float64()),  # absolute time in the source video
        pa.field("image_jpg", pa.binary(), nullable=False),
    ]
)

CONDITIONING = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("mode", pa.string(), nullable=False),  # subject | face | multi_subject
        pa.field("variant", pa.string(), nullable=False),  # single | multiple | multiple_background
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("entity_word", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),  # subject | object | background | face
        pa.field("frame_index", pa.int8()),  # which reference frame the image comes from (null: background)
        # where the image is: entities.crop_png | entities.face_crop_png | backgrounds.image_jpg
        pa.field("source", pa.string(), nullable=False),
    ]
)

GT_EMBEDDINGS = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # text | frames | subject | face
        pa.field("entity_word", pa.string()),  # subject kind only
        pa.field("embeddings", pa.list_(pa.list_(pa.float32())), nullable=False),  # rows of one matrix
        pa.field("models", pa.string(), nullable=False),  # JSON signature of the models that made them
    ]
)

EXTRA_TABLES = {"gt_frames": GT_FRAMES, "conditioning": CONDITIONING, "gt_embeddings": GT_EMBEDDINGS}
MODES = ("subject", "face", "multi_subject")


# ---------------------------------------------------------------------------------------------------------------
# conditioning lists


def build_conditioning(clips: pa.Table, entities: pa.Table, background_ids: set[str]) -> pa.Table:
    """Conditioning lists of every mode, with ``prepare_conditional_prompts_and_images_list.py``'s rules.

    * subject: clips with exactly one subject word (objects may exist); ``multiple`` = all its crops in frame order,
      ``single`` = ``multiple[len // 2]``, ``multiple_background`` = multiple + the background plate under the
      first background word.
    * face: clips with exactly one subject word that has face crops; same single/multiple rule on the face crops.
    * multi_subject (ours; the official lists lack it): clips with at least two subject/object words that have
      crops; ``single`` = the middle crop of every such word, ``multiple`` = all of them.

    ``entities`` is the light projection of the entities table (see :func:`_light_entities`: ``has_crop`` and
    ``has_face_crop`` instead of the images); ``background_ids`` the clips that have a background plate.
    A clip whose conditioned word has no crop at all is left out of that mode (the official script would crash).
    """
    crops: dict[tuple[str, str], list[int]] = {}
    faces: dict[tuple[str, str], list[int]] = {}
    for e in entities.to_pylist():
        key = (e["clip_id"], e["entity_word"])
        if e["is_detected"] and e["has_crop"]:
            crops.setdefault(key, []).append(int(e["frame_index"]))
        if e["has_face"] and e["has_face_crop"]:
            faces.setdefault(key, []).append(int(e["frame_index"]))
    has_bg = background_ids
    rows: list[dict[str, Any]] = []

    def add(cid, mode, variant, prompt, word, category, frame, source):
        rows.append(
            {
                "clip_id": cid,
                "mode": mode,
                "variant": variant,
                "prompt": prompt,
                "entity_word": word,
                "category": category,
                "frame_index": frame,
                "source": source,
            }
        )

    for c in clips.select(["clip_id", "caption", "subject_words", "object_words", "background_words"]).to_pylist():
        cid, prompt = c["clip_id"], c["caption"]
        subjects, objects = list(c["subject_words"] or []), list(c["object_words"] or [])
        if len(subjects) == 1 and crops.get((cid, subjects[0])):
            word = subjects[0]
            multi = sorted(crops[(cid, word)])
            add(cid, "subject", "single", prompt, word, "subject", multi[len(multi) // 2], "entities.crop_png")
            for v in ("multiple", "multiple_background"):
                for f in multi:
                    add(cid, "subject", v, prompt, word, "subject", f, "entities.crop_png")
            if c["background_words"] and cid in has_bg:
                add(
                    cid,
                    "subject",
                    "multiple_background",
                    prompt,
                    c["background_words"][0],
                    "background",
                    None,
                    "backgrounds.image_jpg",
                )
        with_face = [w for w in subjects if faces.get((cid, w))]
        if len(with_face) == 1:
            word = with_face[0]
            multi = sorted(faces[(cid, word)])
            add(cid, "face", "single", prompt, word, "face", multi[len(multi) // 2], "entities.face_crop_png")
            for f in multi:
                add(cid, "face", "multiple", prompt, word, "face", f, "entities.face_crop_png")
        words = [(w, "subject") for w in subjects] + [(w, "object") for w in objects]
        words = [(w, cat) for w, cat in words if crops.get((cid, w))]
        if len(words) >= 2:
            for w, cat in words:
                multi = sorted(crops[(cid, w)])
                add(cid, "multi_subject", "single", prompt, w, cat, multi[len(multi) // 2], "entities.crop_png")
                for f in multi:
                    add(cid, "multi_subject", "multiple", prompt, w, cat, f, "entities.crop_png")
    return pa.Table.from_pylist(rows, schema=CONDITIONING)


# ---------------------------------------------------------------------------------------------------------------
# reading a benchmark (or any curated run)


_CURATED = ("clips", "entities", "backgrounds", "rejects")


def _committed_markers(root: Path) -> dict[str, dict[str, Any]]:
    """The committed shards' markers (torn ones are not committed), or a clear error for a folder without any."""
    from alchemist_data.storage import resolve
    from alchemist_data.writer import DONE_DIR, read_markers

    if not (root / DONE_DIR).is_dir():
        raise ValueError(
            f"benchmark {str(root)!r} is not a prepared benchmark or curated run folder (no {DONE_DIR}/): run "
            "`alchemist benchmark prepare` or `alchemist curate` first"
        )
    return read_markers(resolve(root))


def _shard_files(root: Path, name: str) -> dict[str, list[Path]]:
    """The files of table ``name`` of each committed shard: the parts its marker lists (a curated run), else the
    shard's one file (a benchmark folder, whose extra tables are written next to the curated ones)."""
    from alchemist_data.storage import resolve
    from alchemist_data.writer import marker_files

    markers, run = _committed_markers(root), resolve(root)
    out = {}
    for shard in sorted(markers):
        listed = marker_files(run, name, shard, markers[shard]) if name in _CURATED else []
        files = [Path(f.path) for f in listed] or [root / name / f"{shard}.parquet"]
        files = [f for f in files if f.exists()]
        if files:
            out[shard] = files
    return out


def read_extra_table(root: Path, name: str) -> pa.Table | None:
    """One of our extra tables over the committed shards, or None when the folder has none (a curated run)."""
    files = [f for fs in _shard_files(root, name).values() for f in fs]
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f, schema=EXTRA_TABLES[name]) for f in files])


class RowSource:
    """Rows of a table by clip id, without holding the table: a run's image columns (crops, frames) can be far
    larger than memory, so each request reads only the shard files of the clips asked for (``clips.shard`` says
    which), filtered on ``clip_id``. An in-memory table works too (``RowSource.of(table)``)."""

    def __init__(
        self,
        files: dict[str, list[Path]],
        schema: pa.Schema,
        shard_of: dict[str, str] | None = None,
        table: pa.Table | None = None,
    ):
        self.files, self.schema, self.shard_of, self.table = files, schema, shard_of or {}, table

    @classmethod
    def of(cls, table: pa.Table) -> RowSource:
        return cls({}, table.schema, None, table)

    @classmethod
    def open(cls, root: Path, name: str, schema: pa.Schema, shard_of: dict[str, str]) -> RowSource | None:
        files = _shard_files(root, name)
        return cls(files, schema, shard_of) if files else None

    def rows(self, clip_ids: set[str]) -> list[dict[str, Any]]:
        ids = pa.array(sorted(clip_ids), pa.string())
        if self.table is not None:
            return self.table.filter(pc.is_in(self.table["clip_id"], ids)).to_pylist()
        shards = {self.shard_of.get(c) for c in clip_ids}
        wanted = self.files if None in shards or not shards <= set(self.files) else {s: self.files[s] for s in shards}
        files = [f for s in sorted(wanted) for f in wanted[s]]
        out: list[dict[str, Any]] = []
        for f in files:
            out += pq.read_table(f, schema=self.schema, filters=pc.field("clip_id").isin(ids)).to_pylist()
        return out

    def project(self, columns: dict[str, Any]) -> pa.Table:
        """Computed columns over the whole table, streamed batch by batch (e.g. ``pc.is_valid`` of an image)."""
        import pyarrow.dataset as ds

        if self.table is not None:
            return ds.dataset(self.table).to_table(columns=columns)
        paths = [str(f) for fs in self.files.values() for f in fs]
        return ds.dataset(paths, schema=self.schema, format="parquet").to_table(columns=columns)


def _light_entities(entities: RowSource) -> pa.Table:
    f = pc.field
    return entities.project(
        {
            "clip_id": f("clip_id"),
            "entity_word": f("entity_word"),
            "frame_index": f("frame_index"),
            "is_detected": f("is_detected"),
            "has_face": f("has_face"),
            "has_crop": pc.is_valid(f("crop_png")),
            "has_face_crop": pc.is_valid(f("face_crop_png")),
        }
    )


def _background_ids(backgrounds: RowSource) -> set[str]:
    t = backgrounds.project({"clip_id": pc.field("clip_id"), "ok": pc.is_valid(pc.field("image_jpg"))})
    return set(t.filter(t["ok"])["clip_id"].to_pylist())


@dataclass
class Benchmark:
    root: Path
    clips: pa.Table  # light (no image column): held in memory
    entities: RowSource
    backgrounds: RowSource
    gt_frames: RowSource | None
    conditioning: pa.Table
    gt_embeddings: RowSource | None
    info: dict[str, Any]

    @classmethod
    def load(cls, root: str | Path) -> Benchmark:
        from alchemist_data import schema
        from alchemist_data.catalog import read_table

        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"benchmark folder {str(root)!r} does not exist")
        _committed_markers(root)  # a clear error for a folder that is neither a benchmark nor a run
        clips = read_table(root, "clips")
        shard_of = dict(zip(clips["clip_id"].to_pylist(), clips["shard"].to_pylist(), strict=True))
        empty = {n: RowSource.of(schema.empty_table(n)) for n in ("entities", "backgrounds")}
        entities = RowSource.open(root, "entities", schema.ENTITIES, shard_of) or empty["entities"]
        backgrounds = RowSource.open(root, "backgrounds", schema.BACKGROUNDS, shard_of) or empty["backgrounds"]
        conditioning = read_extra_table(root, "conditioning")
        if conditioning is None:
            conditioning = build_conditioning(clips, _light_entities(entities), _background_ids(backgrounds))
        info = {}
        for name in ("benchmark.json", "run.json"):
            if (root / name).exists():
                info = json.loads((root / name).read_text())
                break
        return cls(
            root,
            clips,
            entities,
            backgrounds,
            RowSource.open(root, "gt_frames", GT_FRAMES, shard_of),
            conditioning,
            RowSource.open(root, "gt_embeddings", GT_EMBEDDINGS, shard_of),
            info,
        )

    def storage_order(self, clip_ids: list[str]) -> list[str]:
        """``clip_ids`` ordered by (shard, clip id), so that a chunk of consecutive ids reads few shard files."""
        shard = dict(zip(self.clips["clip_id"].to_pylist(), self.clips["shard"].to_pylist(), strict=True))
        return sorted(clip_ids, key=lambda c: (shard.get(c) or "", c))

    def clip_ids(self, mode: str) -> list[str]:
        """Clips of a mode, sorted (the official lists are sorted by video name)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        ids = {r["clip_id"] for r in self.conditioning.select(["clip_id", "mode"]).to_pylist() if r["mode"] == mode}
        return sorted(ids)

    def _video_path(self, video: str) -> str:
        return video if os.path.isabs(video) or "://" in video else str(self.root / video)

    def ground_truth(
        self, clip_ids: list[str], mode: str, embeddings_signature: str | None = None
    ) -> list[GroundTruth]:
        """Ground truth of the given clips (GT frames, reference crops, face crops, cached embeddings if any)."""
        wanted = set(clip_ids)
        clips = {c["clip_id"]: c for c in RowSource.of(self.clips).rows(wanted)}
        missing = wanted - set(clips)
        if missing:
            raise ValueError(f"clip ids not in the benchmark: {', '.join(sorted(missing)[:5])}")
        ents: dict[str, list[dict]] = {}
        for e in self.entities.rows(wanted):
            ents.setdefault(e["clip_id"], []).append(e)
        frames: dict[str, dict[int, bytes]] = {}
        if self.gt_frames is not None:
            for r in self.gt_frames.rows(wanted):
                frames.setdefault(r["clip_id"], {})[int(r["frame_index"])] = r["image_jpg"]
        face_word = {
            r["clip_id"]: r["entity_word"] for r in RowSource.of(self.conditioning).rows(wanted) if r["mode"] == "face"
        }
        cached = self._cached_embeddings(wanted, embeddings_signature)
        out = []
        for cid in clip_ids:
            c = clips[cid]
            if cid in frames:
                gt_frames = [decode_image(frames[cid][k], "RGB") for k in sorted(frames[cid])]
            else:
                gt_frames = self._decode_ref_frames(c)
            tags = list(c["subject_words"] or []) + list(c["object_words"] or [])
            rows = sorted(ents.get(cid, []), key=lambda e: int(e["frame_index"]))
            refs = {
                t: [
                    decode_image(e["crop_png"], "RGBA")
                    for e in rows
                    if e["entity_word"] == t and e["is_detected"] and e["crop_png"] is not None
                ]
                for t in tags
            }
            word = face_word.get(cid)
            faces = [
                decode_image(e["face_crop_png"], "RGB")
                for e in rows
                if word is not None and e["entity_word"] == word and e["has_face"] and e["face_crop_png"]
            ]
            out.append(GroundTruth(cid, c["caption"], gt_frames, refs, faces, cached.get(cid)))
        return out

    def _decode_ref_frames(self, clip: dict[str, Any]) -> list[np.ndarray]:
        _, _, frames = reference_frames(self._video_path(clip["video"]), clip["start_s"], clip["end_s"])
        return [np.asarray(f) for f in frames]

    def _cached_embeddings(self, wanted: set[str], signature: str | None) -> dict[str, dict[str, Any]]:
        if self.gt_embeddings is None or signature is None:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for r in self.gt_embeddings.rows(wanted):
            if r["models"] != signature:
                continue
            e = out.setdefault(r["clip_id"], {"subjects": {}})
            mat = np.asarray(r["embeddings"], dtype=np.float32)
            if r["kind"] == "text":
                e["text"] = mat[0]
            elif r["kind"] == "frames":
                e["frames"] = mat
            elif r["kind"] == "subject":
                e["subjects"][r["entity_word"]] = mat
            elif r["kind"] == "face":
                e["faces"] = mat
        # only complete caches are used; a partial one (other metrics at preparation) is recomputed
        return {k: v for k, v in out.items() if "text" in v and "frames" in v and "faces" in v}


def embeddings_rows(clip_id: str, emb: dict[str, Any], signature: str) -> list[dict[str, Any]]:
    rows = [
        {
            "clip_id": clip_id,
            "kind": "text",
            "entity_word": None,
            "embeddings": [emb["text"].tolist()],
            "models": signature,
        },
        {
            "clip_id": clip_id,
            "kind": "frames",
            "entity_word": None,
            "embeddings": emb["frames"].tolist(),
            "models": signature,
        },
        {
            "clip_id": clip_id,
            "kind": "face",
            "entity_word": None,
            "embeddings": np.asarray(emb["faces"]).tolist(),
            "models": signature,
        },
    ]
    for tag, mat in emb["subjects"].items():
        rows.append(
            {
                "clip_id": clip_id,
                "kind": "subject",
                "entity_word": tag,
                "embeddings": mat.tolist(),
                "models": signature,
            }
        )
    return rows


def __getattr__(name: str) -> Any:
    # ``prepare_benchmark`` moved to prepare.py; the old import path keeps working (a lazy import, since prepare.py
    # imports this module).
    if name == "prepare_benchmark":
        from alchemist_eval.prepare import prepare_benchmark

        return prepare_benchmark
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
