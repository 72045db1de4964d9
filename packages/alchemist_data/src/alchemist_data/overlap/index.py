"""The overlap filter's reference index: settings, reference videos, sampling, matching and the on-disk cache."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alchemist_data import config
from alchemist_data.config import StageConfig
from alchemist_data.overlap.codes import (
    CROP_VARIANT,
    HASH_BITS,
    LAYOUT_CELLS,
    Codes,
    EmbeddingCoder,
    FrameCoder,
    PHashCoder,
    take,
)

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts")
BACKENDS = ("phash", "dinov2", "clip")
# Decoded frames one reference_frames call may hold while sampling a reference video: one call per video keeps the
# decoder going forward (each call seeks back and probes again), and the bound keeps 1080p sources within memory.
_SAMPLE_BYTES = 64 * 2**20
# Side of the frames decoded for the index: the hash looks at a 32x32 thumbnail, so more pixels buy nothing.
_INDEX_SIDE_PX = 96


@dataclass(kw_only=True)
class OverlapConfig(StageConfig):
    """The ``overlap`` section of a curation profile (``--set overlap.reference_dir=DIR`` turns the filter on)."""

    reference_dir: str = ""  # folder of videos, or a benchmark folder from `alchemist benchmark prepare`; "" = off
    backend: str = "phash"  # phash (offline, no model) | dinov2 | clip (embeddings, for the paper profile)
    model: str = ""  # dinov2/clip: hub id or local dir ("" = facebook/dinov2-base / openai/clip-vit-large-patch14)
    reference_step_s: float = 0.1  # sampling interval of the reference videos
    max_hamming: int = 12  # phash: candidates are reference frames within this many of 64 bits of a clip frame
    max_layout_diff: float = 20.0  # phash: ... and whose 4x4 colour layout differs by at most this (0-255) per cell
    min_similarity: float = 0.92  # dinov2/clip: the same, as a cosine similarity
    min_matched_frames: int = 2  # of the clip's reference frames (3), at one common time offset
    time_tolerance_s: float = 0.25  # slack on that common offset (reference sampling + frame durations)

    @property
    def enabled(self) -> bool:
        return bool(self.reference_dir)

    def validate(self) -> None:
        """Fail before any work on settings the filter cannot use."""
        super().validate()
        if self.backend not in BACKENDS:
            raise ValueError(f"overlap.backend={self.backend!r} is not one of {', '.join(BACKENDS)}")
        if not 0 <= self.max_hamming < HASH_BITS:
            raise ValueError(f"overlap.max_hamming must be in [0, {HASH_BITS}), got {self.max_hamming}")
        if self.max_layout_diff < 0:
            raise ValueError(f"overlap.max_layout_diff must be >= 0, got {self.max_layout_diff}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ValueError(f"overlap.min_similarity must be a cosine in [-1, 1], got {self.min_similarity}")
        if self.reference_step_s <= 0:
            raise ValueError(f"overlap.reference_step_s must be > 0, got {self.reference_step_s}")
        if self.min_matched_frames < 1:
            raise ValueError(f"overlap.min_matched_frames must be at least 1, got {self.min_matched_frames}")
        if self.time_tolerance_s < 0:
            raise ValueError(f"overlap.time_tolerance_s must be >= 0, got {self.time_tolerance_s}")


def build_coder(cfg: OverlapConfig, device: str = "cpu") -> FrameCoder:
    cfg.validate()
    if cfg.backend == "phash":
        return PHashCoder(cfg.max_hamming, cfg.max_layout_diff)
    return EmbeddingCoder(cfg.backend, cfg.model, cfg.min_similarity, device=device)


# --------------------------------------------------------------------------------------------------------------
# reference videos


@dataclass(frozen=True)
class ReferenceVideo:
    ref_id: str  # benchmark clip id, or the path relative to the reference folder
    path: str


def list_references(reference_dir: str | os.PathLike[str]) -> list[ReferenceVideo]:
    """The reference videos of a benchmark folder (its ``clips`` table) or of a plain folder (every video file under
    it, recursively, sorted). Raises ``ValueError`` naming the folder when it is missing or holds no video."""
    from alchemist_data.writer import DONE_DIR

    root = Path(reference_dir).expanduser()
    if not root.is_dir():
        raise ValueError(
            f"overlap.reference_dir {str(reference_dir)!r} is not a folder: give a folder of videos or a benchmark "
            "folder made by `alchemist benchmark prepare`"
        )
    if (root / DONE_DIR).is_dir() and (root / "clips").is_dir():
        from alchemist_data.catalog import read_table

        clips = read_table(root, "clips", columns=["clip_id", "video"]).to_pylist()
        refs = []
        for c in clips:
            video = c["video"]
            path = video if os.path.isabs(video) or "://" in video else str(root / video)
            refs.append(ReferenceVideo(c["clip_id"], path))
        where = f"the clips table of benchmark folder {str(root)!r}"
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        refs = [ReferenceVideo(str(p.relative_to(root)), str(p)) for p in files]
        where = f"{str(root)!r} (looked for {', '.join(VIDEO_EXTENSIONS)})"
    if not refs:
        raise ValueError(f"overlap.reference_dir: no reference video in {where}")
    return refs


def sample_video(path: str, step_s: float, max_side_px: int = _INDEX_SIDE_PX) -> tuple[list[float], list[np.ndarray]]:
    """Frames every ``step_s`` seconds over the whole video (never closer than one frame apart), with their times."""
    from alchemist_data.media import VideoError, probe, reference_frames

    info = probe(path)
    duration = info.duration_s
    step = max(step_s, 1.0 / info.fps) if info.fps else step_s
    n = max(1, int(math.floor(duration / step - 1e-9)) + 1)
    fractions = [min(k * step / duration, 1.0) for k in range(n)] if duration > 0 else [0.0]
    times: list[float] = []
    frames: list[np.ndarray] = []
    per_call = max(8, _SAMPLE_BYTES // max(1, int(info.width_px * info.height_px * 1.5)))  # decoded 4:2:0 frames
    for i in range(0, len(fractions), per_call):
        chunk = fractions[i : i + per_call]
        try:
            _, ts, fs = reference_frames(path, fractions=chunk, max_side_px=max_side_px)
        except VideoError as err:
            if err.reason != "too_few_frames" or len(chunk) < 3:
                raise
            # Variable frame rate: three targets fell inside fewer than three frames; take them one at a time.
            ts, fs = [], []
            for f in chunk:
                _, t1, f1 = reference_frames(path, fractions=[f], max_side_px=max_side_px)
                ts += t1
                fs += f1
        for t, f in zip(ts, fs, strict=True):
            if not times or t > times[-1] + 1e-6:  # two targets inside one long frame give the same frame
                times.append(t)
                frames.append(f)
    return times, frames


# --------------------------------------------------------------------------------------------------------------
# the index

# Bump when the codes of a frame change (hash, variants, sampling), so stale cached indexes are never read.
_INDEX_FORMAT = 1


def _fingerprint(cfg: OverlapConfig, refs: list[ReferenceVideo]) -> str:
    """What the codes depend on: the coding settings and every reference file (path, size, mtime)."""
    import hashlib
    import json

    files = []
    for r in refs:
        try:
            st = os.stat(r.path)
            files.append([r.ref_id, r.path, st.st_size, st.st_mtime_ns])
        except OSError:
            files.append([r.ref_id, r.path, None, None])
    settings = {
        "format": _INDEX_FORMAT,
        "backend": cfg.backend,
        "model": cfg.model,
        "step": cfg.reference_step_s,
        "side": _INDEX_SIDE_PX,
        "crop": CROP_VARIANT,
        "layout": LAYOUT_CELLS,
        "files": files,
    }
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class OverlapMatch:
    ref_id: str
    path: str
    similarity: float  # mean over the matched frames of their best similarity
    num_matched: int
    num_frames: int
    offset_s: float  # reference time minus clip time
    description: str

    def detail(self) -> str:
        return (
            f"near-duplicate of reference video {self.ref_id!r} ({self.path}): {self.description}; "
            f"{self.num_matched} of {self.num_frames} frames match at a time offset of {self.offset_s:+.2f} s"
        )


@dataclass
class OverlapIndex:
    """Codes of every sampled reference frame, with the video (index into ``refs``) and time of each."""

    coder: FrameCoder
    cfg: OverlapConfig
    refs: list[ReferenceVideo]
    codes: Codes  # the coder's arrays, first axis the N indexed frames
    video: np.ndarray  # int32 [N]
    time_s: np.ndarray  # float32 [N]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (ref_id, why) of unreadable videos

    def __post_init__(self) -> None:
        self.coder.prepare(self.codes)

    @classmethod
    def build(
        cls,
        cfg: OverlapConfig,
        device: str = "cpu",
        refs: list[ReferenceVideo] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> OverlapIndex:
        """Sample and code every reference video of ``cfg.reference_dir`` (or ``refs``). An unreadable reference
        video is logged and left out (``skipped``); no readable one at all is a ``ValueError``."""
        from alchemist_data.media import VideoError

        cfg.validate()
        refs = list_references(cfg.reference_dir) if refs is None else refs
        if not refs:
            raise ValueError("overlap: no reference video to index")
        coder = build_coder(cfg, device)
        coder.setup()
        codes: list[Codes] = []
        video, times, skipped = [], [], []
        for v, ref in enumerate(refs):
            try:
                ts, frames = sample_video(ref.path, cfg.reference_step_s)
            except VideoError as err:
                log.warning("overlap: reference video %s left out of the index: %s", ref.path, err)
                skipped.append((ref.ref_id, f"{err.reason}: {err.detail}"))
                continue
            for i in range(0, len(frames), 64):  # bounded batches for the embedding backends
                c = coder.encode_reference(frames[i : i + 64])
                keep = np.flatnonzero(c.pop("informative"))
                codes.append(take(c, keep))
                video.append(np.full(len(keep), v, np.int32))
                times.append(np.asarray(ts[i : i + 64], np.float32)[keep])
            if progress is not None:
                progress(v + 1, len(refs))
        if len(skipped) == len(refs):
            raise ValueError(
                f"overlap.reference_dir {cfg.reference_dir!r}: none of its {len(refs)} videos could be "
                f"read (first: {skipped[0][1]})"
            )
        merged = {k: np.concatenate([c[k] for c in codes]) for k in codes[0]}
        return cls(coder, cfg, refs, merged, np.concatenate(video), np.concatenate(times), skipped)

    @classmethod
    def load_or_build(
        cls,
        cfg: OverlapConfig,
        device: str = "cpu",
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> OverlapIndex:
        """The index of ``cfg.reference_dir``, from the cache when an identical one was built before.

        The cache key covers the settings that change codes and every reference file's path, size and mtime, so an
        edited reference folder is re-indexed. A lock file makes the workers of one machine build it once: the
        first builds while the others wait, then they read its file. An unwritable cache folder only costs a
        rebuild per worker (logged).
        """
        import fcntl

        cfg.validate()
        refs = list_references(cfg.reference_dir)
        root = Path(cache_dir) if cache_dir is not None else config.cache_dir() / "overlap"
        key = _fingerprint(cfg, refs)
        path = root / f"index-{key}.npz"
        try:
            root.mkdir(parents=True, exist_ok=True)
            lock = open(root / f"index-{key}.lock", "w")  # noqa: SIM115 - held across the build below
        except OSError as err:
            log.warning("overlap: cache folder %s is not writable (%s); building the index in memory", root, err)
            return cls.build(cfg, device, refs)
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if path.exists():
                try:
                    return cls._load(path, cfg, device, refs)
                except (OSError, ValueError, KeyError) as err:  # a torn or foreign file: rebuild it
                    log.warning("overlap: cached index %s is unreadable (%s); rebuilding it", path, err)
            index = cls.build(cfg, device, refs)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
            np.savez(
                tmp,
                **{f"code_{k}": v for k, v in index.codes.items()},
                video=index.video,
                time_s=index.time_s,
                skipped_ids=np.array([s[0] for s in index.skipped], str),
                skipped_why=np.array([s[1] for s in index.skipped], str),
            )
            os.replace(tmp, path)
            log.info("overlap: indexed %d reference frames of %d videos into %s", index.num_frames, len(refs), path)
            return index

    @classmethod
    def _load(cls, path: Path, cfg: OverlapConfig, device: str, refs: list[ReferenceVideo]) -> OverlapIndex:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        coder = build_coder(cfg, device)
        coder.setup()
        skipped = list(zip(arrays["skipped_ids"].tolist(), arrays["skipped_why"].tolist(), strict=True))
        codes = {k.removeprefix("code_"): v for k, v in arrays.items() if k.startswith("code_")}
        return cls(coder, cfg, refs, codes, arrays["video"], arrays["time_s"], skipped)

    @property
    def num_frames(self) -> int:
        return int(len(self.video))

    def query_many(self, clips: Sequence[tuple[Sequence[np.ndarray], Sequence[float]]]) -> list[OverlapMatch | None]:
        """:meth:`query` for several clips, coding all their frames in one call (one forward for embeddings)."""
        flat = [f for frames, _ in clips for f in frames]
        codes = self.coder.encode(flat) if flat else None
        out, pos = [], 0
        for frames, times in clips:
            n = len(frames)
            out.append(self._match(take(codes, slice(pos, pos + n)), times) if n and codes is not None else None)
            pos += n
        return out

    def query(self, frames: Sequence[np.ndarray], times_s: Sequence[float]) -> OverlapMatch | None:
        """The reference video this clip's frames (taken at ``times_s``) copy, or None."""
        return self.query_many([(frames, times_s)])[0]

    def _match(self, query: Codes, times_s: Sequence[float]) -> OverlapMatch | None:
        num_frames = len(query["informative"])
        if num_frames != len(times_s):
            raise ValueError(f"got {num_frames} frames but {len(times_s)} frame times")
        # Candidates: (clip frame, indexed frame, similarity) for every near-duplicate pair.
        q_idx, r_idx, sims = [], [], []
        for i in np.flatnonzero(query["informative"]):
            hit, sim = self.coder.candidates(self.codes, query, int(i))
            q_idx.append(np.full(len(hit), i, np.int32))
            r_idx.append(hit)
            sims.append(sim)
        if not q_idx:
            return None
        q = np.concatenate(q_idx)
        r = np.concatenate(r_idx)
        s = np.concatenate(sims)
        if len(np.unique(q)) < self.cfg.min_matched_frames:
            return None
        offsets = self.time_s[r] - np.asarray(times_s, np.float64)[q]
        best: tuple[int, float, int, float] | None = None  # (frames matched, mean similarity, video, offset)
        for v in np.unique(self.video[r]):
            sel = np.flatnonzero(self.video[r] == v)
            if len(np.unique(q[sel])) < self.cfg.min_matched_frames:
                continue
            found = _best_offset(q[sel], offsets[sel], s[sel], self.cfg.time_tolerance_s)
            if found[0] >= self.cfg.min_matched_frames:
                key = (found[0], found[1], int(v), found[2])
                if best is None or key[:2] > best[:2]:
                    best = key
        if best is None:
            return None
        count, sim, v, offset = best
        ref = self.refs[v]
        return OverlapMatch(
            ref.ref_id, ref.path, float(sim), int(count), num_frames, float(offset), self.coder.describe(float(sim))
        )


def _best_offset(q: np.ndarray, offsets: np.ndarray, sims: np.ndarray, tol: float) -> tuple[int, float, float]:
    """The time offset shared by the most distinct clip frames (each frame's offsets within ``tol`` of it count).

    Returns ``(number of clip frames, mean of their best similarities, offset)``; ties go to the higher similarity.
    """
    order = np.argsort(offsets, kind="stable")
    q, offsets, sims = q[order], offsets[order], sims[order]
    best = (0, 0.0, 0.0)
    lo = 0
    for hi in range(len(offsets)):
        while offsets[hi] - offsets[lo] > 2 * tol:
            lo += 1
        window = slice(lo, hi + 1)
        frames = np.unique(q[window])
        if len(frames) < best[0]:
            continue
        ws, wo, wq = sims[window], offsets[window], q[window]
        top = [int(np.argmax(np.where(wq == f, ws, -np.inf))) for f in frames]  # each frame's best candidate
        cand = (len(frames), float(np.mean(ws[top])), float(np.median(wo[top])))
        if cand[:2] > best[:2]:
            best = cand
    return best
