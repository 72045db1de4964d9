"""Precomputed training inputs (``alchemist encode``): VAE latents of the target clips and the captions' text.

On the fly, every training step decodes the target clip, runs the VAE on it and runs the text encoder on the
caption. ``alchemist encode CURATED --output LATENTS`` does that once per (clip, target size) and
``alchemist train --latents LATENTS`` reads it back. Reference images stay on the fly: their augmentations are
random per step.

* Latents: the VAE posterior mean x scaling factor (deterministic: what the on-the-fly path computes) of the
  window that starts at the clip start (training with latents sets ``DataConfig.clip_start="start"``), at every
  target size training can ask for: the profile's, or each bucket group's the clip belongs to (``buckets``).
* Text: the truncated caption's valid token embeddings (training zeroes the padding too) and, for every entity
  word a reference can bind to, its token span in them, or its tokens from an untruncated encoding when the
  truncation cut the word off (``encoders.entity_word_tokens``, the same function training uses).

Layout: the curation writer's (``alchemist_data.writer``), one latents shard per curated shard:
``LATENTS/latents/part-XXXXX.parquet`` (schema ``alchemist_data.schema.LATENTS``, one row group per row so a
sample is one read), ``_done/part-XXXXX.json`` markers, ``run.json`` (config, fingerprint, counts) and
``encoders/``: the text encoder and VAE that made the tensors, which training with ``--latents`` loads.

``LatentEncoder`` is a stage (``setup()`` once per worker, ``process_batch(pa.Table) -> pa.Table``), so the job
(pipelines/encode.py) runs it in a Ray Data actor pool or in-process.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from alchemist_data import schema
from alchemist_data.catalog import committed_files, query, read_table
from alchemist_model.buckets import BucketPlan, parse_cells
from alchemist_model.configs import VIDEO_FPS, DataConfig, ModelProfile, TrainConfig
from alchemist_model.encoders import Components, entity_word_tokens, kept_word_indices

TABLE = "latents"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: A work row: the curated clip's columns the encoder reads, then what it keys and tags the latents row with.
#: Each column is typed as in the table it comes from (``schema.CLIPS``) or goes to (``schema.LATENTS``).
_CLIP_COLUMNS = ("clip_id", "video", "caption", "start_s", "end_s")
_TARGET_COLUMNS = ("width_px", "height_px", "num_frames", "entity_words", "shard")
WORK_SCHEMA = pa.schema(
    [schema.CLIPS.field(name).with_nullable(True) for name in _CLIP_COLUMNS]
    + [schema.LATENTS.field(name).with_nullable(True) for name in _TARGET_COLUMNS]
)


@dataclass(kw_only=True)
class LatentEncodeConfig:
    """What ``alchemist encode`` computes (fingerprinted: a resume with other values is refused) and how."""

    profile: str = "tiny"
    #: Seed of random-tiny encoders (a real checkpoint ignores it); training with these latents uses these encoders.
    seed: int = 0
    #: Image encoder saved beside the text encoder and VAE (training may swap it: it is not used for the latents).
    image_encoder: Literal["dinov2", "clip"] = "dinov2"
    #: Storage precision of latents and text embeddings; float32 reproduces the on-the-fly inputs exactly.
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    #: The target sizes, as training's ``DataConfig`` fields of the same names.
    fps: float = VIDEO_FPS
    buckets: str = ""
    bucket_aspect_ratios: tuple[float, ...] = DataConfig().bucket_aspect_ratios
    #: Runtime only (not fingerprinted): rows per process_batch call, GPUs per Ray actor (None: 1 when the
    #: cluster has GPUs), curated rows per output shard come from the curated shards.
    batch_size: int = 4
    gpus_per_worker: float | None = None

    def content(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        for runtime in ("batch_size", "gpus_per_worker"):
            raw.pop(runtime)
        raw["bucket_aspect_ratios"] = list(raw["bucket_aspect_ratios"])
        return raw

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(self.content(), sort_keys=True).encode()).hexdigest()[:16]


def tensor_bytes(tensor: torch.Tensor, dtype: str) -> bytes:
    tensor = tensor.detach().to("cpu", DTYPES[dtype]).contiguous()
    if dtype == "bfloat16":  # numpy has no bfloat16: store its bits
        tensor = tensor.view(torch.int16)
    return tensor.numpy().tobytes()


def bytes_tensor(data: bytes, dtype: str, shape: list[int] | tuple[int, ...]) -> torch.Tensor:
    """The inverse of ``tensor_bytes``, as float32."""
    return torch.frombuffer(bytearray(data), dtype=DTYPES[dtype]).reshape(tuple(shape)).float()


def target_sizes(
    clips: list[dict[str, Any]], cfg: LatentEncodeConfig, profile: ModelProfile
) -> dict[str, list[tuple[int, int, int]]]:
    """clip_id -> every (width, height, frames) training can ask for: the profile's, or its bucket groups'."""
    if not cfg.buckets:
        return {c["clip_id"]: [(profile.width_px, profile.height_px, profile.num_frames)] for c in clips}
    ordered = sorted(clips, key=lambda c: c["clip_id"])  # the dataset's order (membership is per clip anyway)
    plan = BucketPlan(ordered, parse_cells(cfg.buckets), tuple(cfg.bucket_aspect_ratios), cfg.fps)
    return {c["clip_id"]: sizes for c, sizes in zip(ordered, plan.clip_sizes(), strict=True)}


def reference_words(curated_dir: str | Path, captions: dict[str, str]) -> dict[str, list[str]]:
    """clip_id -> every word a reference can bind to (detected subjects/objects with crops, the background word)."""
    from alchemist_model.data import word_occurs

    rows = query(
        curated_dir,
        "SELECT DISTINCT clip_id, entity_word AS word FROM entities WHERE is_detected AND "
        "crop_png IS NOT NULL AND category IN ('subject', 'object') UNION "
        "SELECT DISTINCT clip_id, background_word AS word FROM backgrounds WHERE "
        "image_jpg IS NOT NULL AND background_word IS NOT NULL AND background_word <> ''",
    )
    words: dict[str, list[str]] = {}
    for row in sorted(rows.to_pylist(), key=lambda r: (r["clip_id"], r["word"])):
        caption = captions.get(row["clip_id"])
        if caption is not None and word_occurs(caption, row["word"]):
            words.setdefault(row["clip_id"], []).append(row["word"])
    return words


def encode_work_table(curated_dir: str | Path, cfg: LatentEncodeConfig, profile: ModelProfile) -> pa.Table:
    """One work row per (clip, target size), tagged with the clip's curated shard, in shard order."""
    clips = read_table(curated_dir, "clips").to_pylist()
    words = reference_words(curated_dir, {c["clip_id"]: c["caption"] for c in clips})
    sizes = target_sizes(clips, cfg, profile)
    rows = []
    for clip in sorted(clips, key=lambda c: (c["shard"] or "", c["clip_id"])):
        for width, height, frames in sorted(sizes[clip["clip_id"]]):
            rows.append(
                {
                    **{name: clip[name] for name in _CLIP_COLUMNS},
                    "width_px": width,
                    "height_px": height,
                    "num_frames": frames,
                    "entity_words": words.get(clip["clip_id"], []),
                    "shard": clip["shard"] or "part-00000",
                }
            )
    return pa.Table.from_pylist(rows, schema=WORK_SCHEMA)


class LatentEncoder:
    """The encode stage: work rows (``encode_work_table``) -> ``schema.LATENTS`` rows."""

    def __init__(self, cfg: LatentEncodeConfig, encoders_dir: str | Path) -> None:
        self.cfg, self.encoders_dir = cfg, str(encoders_dir)
        self.components: Components | None = None

    def setup(self) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.components = Components.load_saved(Path(self.encoders_dir)).to(self.device)

    @torch.no_grad()
    def process_batch(self, table: pa.Table) -> pa.Table:
        from alchemist_model.data import decode_target_clip, resize_cover_crop

        assert self.components is not None, "call setup() first"
        rows = table.to_pylist()
        if not rows:
            return schema.empty_table(TABLE)
        dtype = self.cfg.dtype
        captions = [r["caption"] for r in rows]
        text_encoder = self.components.text_encoder
        text = text_encoder.encode(captions)
        words = [list(r["entity_words"] or []) for r in rows]
        tokens = entity_word_tokens(text_encoder, captions, text, words)
        out: list[dict[str, Any]] = []
        videos: dict[tuple[int, int, int], list[tuple[int, torch.Tensor]]] = {}
        for i, row in enumerate(rows):
            num_valid = int(text.mask[i].sum())
            spans, extra = [], []
            for word in words[i]:
                indices = kept_word_indices(row["caption"], word, text.offsets[i])
                if indices:
                    spans.append([indices[0], indices[-1] + 1])
                    extra.append(None)
                else:  # cut off by the truncation: keep the tokens entity_word_tokens took from the full caption
                    spans.append(None)
                    extra.append(tensor_bytes(tokens[i][word], dtype))
            out.append(
                {
                    "clip_id": row["clip_id"],
                    "width_px": row["width_px"],
                    "height_px": row["height_px"],
                    "num_frames": row["num_frames"],
                    "fps": self.cfg.fps,
                    "start_s": row["start_s"],
                    "latent_dtype": dtype,
                    "caption": row["caption"],
                    "num_text_tokens": num_valid,
                    "text_dim": text.hidden_states.shape[-1],
                    "text_embeddings": tensor_bytes(text.hidden_states[i, :num_valid], dtype),
                    "entity_words": words[i],
                    "word_token_spans": spans,
                    "word_tokens": extra,
                    "shard": row["shard"],
                }
            )
            size = (row["width_px"], row["height_px"], row["num_frames"])
            try:
                frames = decode_target_clip(
                    row["video"], row["start_s"], row["end_s"], row["num_frames"], self.cfg.fps, size[:2]
                )
                videos.setdefault(size, []).append((i, resize_cover_crop(frames, *size[:2])))
            except Exception as err:  # noqa: BLE001 - one bad video never stops the job; its row says why
                out[i]["error"] = f"{type(err).__name__}: {err}"
        for items in videos.values():
            latents = self.components.vae.encode(torch.stack([v for _, v in items]).to(self.device))
            for (i, _), latent in zip(items, latents, strict=True):
                out[i].update(latent_shape=list(latent.shape), latents=tensor_bytes(latent, dtype))
        return pa.Table.from_pylist(out, schema=schema.LATENTS)


class LatentStore:
    """Random access to a LATENTS folder: one row per (clip, size), read one row group at a time.

    Picklable for DataLoader workers: each process opens its own Parquet files on first use.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        run = self.root / "run.json"
        if not run.exists() or not (self.root / "encoders" / "components.json").exists():
            raise ValueError(
                f"--latents {str(self.root)!r} is not an `alchemist encode` output (no run.json or "
                "encoders/); run `alchemist encode CURATED --output LATENTS` first"
            )
        self.meta = json.loads(run.read_text())
        if self.meta.get("status") != "complete":
            raise ValueError(
                f"--latents {str(self.root)!r}: the encode job has not finished (status "
                f"{self.meta.get('status')!r}); re-run the same `alchemist encode` command to resume it"
            )
        saved = self.meta["config"]
        self.config = LatentEncodeConfig(**{**saved, "bucket_aspect_ratios": tuple(saved["bucket_aspect_ratios"])})
        self.max_text_tokens = int(self.meta["max_text_tokens"])
        located = committed_files(self.root, TABLE)
        self.files = [f.path for f in located]
        self.fs = located[0].fs if located else None
        self._open: dict[int, tuple[pq.ParquetFile, list[int]]] = {}
        self._pid = os.getpid()

    @functools.cached_property
    def index(self) -> dict[tuple[str, int, int, int], tuple[int, int]]:
        """(clip, width, height, frames) -> (file, row) of every latent that encoded without error.

        Read on first use, not when the store is opened: a run's preparation only checks the folder's settings
        (``check``), and the data loader that samples from the store builds the index once (workers inherit it)."""
        index = {}
        for f, path in enumerate(self.files):
            keys = pq.read_table(
                path, columns=["clip_id", "width_px", "height_px", "num_frames", "error"], filesystem=self.fs
            )
            for row, key in enumerate(keys.to_pylist()):
                if key["error"] is None:
                    index[(key["clip_id"], key["width_px"], key["height_px"], key["num_frames"])] = (f, row)
        return index

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": {}}

    def check(self, cfg: TrainConfig, profile: ModelProfile) -> None:
        """The latents must be the inputs this run would compute: same profile, rate and target sizes."""
        mine = self.config
        for field, theirs, ours in (
            ("profile", mine.profile, cfg.profile),
            ("data.fps", mine.fps, cfg.data.fps),
            ("data.buckets", mine.buckets, cfg.data.buckets),
            ("data.bucket_aspect_ratios", tuple(mine.bucket_aspect_ratios), tuple(cfg.data.bucket_aspect_ratios)),
        ):
            if theirs != ours:
                raise ValueError(
                    f"--latents {str(self.root)!r} was encoded with {field}={theirs!r} but this run has "
                    f"{ours!r}; encode again with matching --profile/--set, or train with them"
                )

    def has(self, clip_id: str, width: int, height: int, num_frames: int) -> bool:
        return (clip_id, width, height, num_frames) in self.index

    def _row(self, f: int, row: int) -> dict[str, Any]:
        if self._pid != os.getpid():  # a forked DataLoader worker opens its own files
            self._open, self._pid = {}, os.getpid()
        if f not in self._open:
            handle = pq.ParquetFile(self.fs.open_input_file(self.files[f]))
            starts, total = [], 0
            for g in range(handle.metadata.num_row_groups):
                starts.append(total)
                total += handle.metadata.row_group(g).num_rows
            self._open[f] = (handle, starts)
        handle, starts = self._open[f]
        group = bisect.bisect_right(starts, row) - 1  # encode writes one row group per row: thousands per file
        return handle.read_row_group(group).slice(row - starts[group], 1).to_pylist()[0]

    def read(self, clip_id: str, width: int, height: int, num_frames: int, start_s: float) -> dict[str, Any]:
        """Latents (C, T, H, W), the caption's valid text embeddings (n, E) and word -> its (k, E) tokens."""
        key = (clip_id, width, height, num_frames)
        if key not in self.index:
            raise KeyError(f"{clip_id} at {width}x{height}x{num_frames} is not in {self.root}")
        row = self._row(*self.index[key])
        assert abs(row["start_s"] - start_s) < 1e-6, (row["start_s"], start_s)  # the window training asks for
        dtype, dim = row["latent_dtype"], row["text_dim"]
        text = bytes_tensor(row["text_embeddings"], dtype, (row["num_text_tokens"], dim))
        words = {}
        for word, span, extra in zip(row["entity_words"], row["word_token_spans"], row["word_tokens"], strict=True):
            words[word] = text[span[0] : span[1]] if span is not None else bytes_tensor(extra, dtype, (-1, dim))
        return {
            "latents": bytes_tensor(row["latents"], dtype, row["latent_shape"]),
            "text_embeddings": text,
            "word_tokens": words,
        }
