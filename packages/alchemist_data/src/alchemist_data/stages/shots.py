"""The shots stage: TransNetV2 over every frame of the clip window; filter multi-shot videos or split them.

Modes (``shots.mode``):

* ``filter`` (the paper, Appendix A.1): a clip window with more than one shot is a reject, ``multi_shot``;
* ``split`` (beyond the paper, as Panda-70M and NeMo Curator do): each shot becomes its own clip with its own
  ``start_s`` / ``end_s`` and a deterministic ``clip_id`` (``<source>-shot003``, pieces ``<source>-shot003-part01``);
  a shot shorter than ``min_s`` is a reject ``shot_too_short``, one longer than ``max_s`` is cut into equal pieces of
  at most ``max_s``. Every shot inherits the source's caption, which may describe other shots too;
* ``off``: nothing runs.

Every shot found lands in the ``shots`` table (``schema.SHOTS``). Manifest windows (``start_s`` / ``end_s``) are
respected: only the frames on screen inside the window are scored.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from alchemist_data.config import StageConfig
from alchemist_data.schema import SHOTS
from alchemist_data.stages.base import RowReject, Stage, columns, output_schema, reject

log = logging.getLogger(__name__)

#: One row of the shots side table, carried in the work column ``shots`` of the first row derived from a source: the
#: table's columns but the source's ``clip_id`` / ``video`` (the work row's own) and ``shard`` (set when written),
#: all nullable.
SHOT = pa.struct([f.with_nullable(True) for f in SHOTS if f.name not in ("clip_id", "video", "shard")])


@dataclass(kw_only=True)
class ShotsConfig(StageConfig):
    mode: str = "filter"  # filter (the paper) | split | off
    threshold: float = 0.5  # TransNetV2 transition probability above which a frame is a cut (the package's default)
    # split mode: spec §5.4 trains on 17-289 frames at 24 fps, i.e. 0.7-12 s; 0 disables a bound
    min_s: float = 0.7
    max_s: float = 12.0
    # 100-frame TransNetV2 windows per forward: 1 on one CPU thread, more on a GPU (neither is benchmarked)
    windows_per_forward: int = 1
    threads: int = 1  # torch CPU threads during a forward (one worker per core); 0 leaves torch's setting
    batch_size: int = 4
    choices = {"shots.mode": ("filter", "split", "off")}

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"shots.threshold must lie in (0, 1), got {self.threshold}")
        if self.min_s < 0 or self.max_s < 0:
            raise ValueError(
                f"shots.min_s and shots.max_s must be >= 0 (0 = no bound), got {self.min_s} and {self.max_s}"
            )
        if self.max_s and self.max_s < 2 * self.min_s:
            # Equal pieces of a shot longer than max_s are longer than max_s / 2, so this keeps them >= min_s.
            raise ValueError(
                f"shots.max_s={self.max_s} must be 0 (no limit) or at least twice shots.min_s={self.min_s}, so that "
                "long shots cut into pieces of at most max_s are never shorter than min_s"
            )
        if self.windows_per_forward < 1:
            raise ValueError(f"shots.windows_per_forward must be at least 1, got {self.windows_per_forward}")


@dataclass
class _Window:
    """The low-resolution frames of one clip window and their times (seconds from the video's first frame)."""

    frames: np.ndarray  # (n, 27, 48, 3) uint8
    first_frame: int  # index in the video of frames[0]
    times_s: np.ndarray  # (n,) start time of each frame
    start_s: float  # the window
    end_s: float


def _lowres_frames(video: str, stop_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every frame from the video's start up to ``stop_s`` at TransNetV2's 48x27, and each frame's start time.

    One sequential decode (no seeks) at TransNetV2's input size through the media layer's fastest full decode, which
    stops at ``stop_s`` (a window near a long video's start decodes no further); times are the frames' presentation
    times, so variable frame rate is handled.
    """
    from alchemist_data.media import decode_all_frames_lowres
    from alchemist_data.models.shots import INPUT_HW

    h, w = INPUT_HW
    frames, _, times = decode_all_frames_lowres(video, width=w, height=h, stop_s=stop_s)
    return frames, np.asarray(times, dtype=np.float64)


class ShotsStage(Stage):
    """TransNetV2 (real weights) over every frame of the clip window; ``filter``, ``split`` or ``off``.

    In ``split`` mode one input row becomes several work rows (the contract in ``stages/base.py``).
    """

    adds = columns(
        {
            "source_clip_id": pa.string(),
            "shot_index": pa.int32(),
            "num_shots_in_source": pa.int32(),
            "shots": pa.list_(SHOT),  # rows for the shots table, on the first row derived from a source
        }
    )

    def setup(self) -> None:
        if self.cfg.mode == "off":
            return
        from alchemist_data.models.shots import TransNetShots

        self.model = TransNetShots(
            device=self.model_device, windows_per_forward=self.cfg.windows_per_forward, threads=self.cfg.threads
        )
        self.model.setup()

    def process_batch(self, table: pa.Table) -> pa.Table:
        rows = self._rows_with_adds(table)
        schema = output_schema(table.schema, self.adds)
        if self.cfg.mode == "off":  # the pipeline leaves it out then; kept for a direct call
            return pa.Table.from_pylist(rows, schema=schema)
        windows: dict[int, _Window] = {}
        for row in rows:
            if row["reject_reason"] is None:
                self._guard(row, lambda r: windows.__setitem__(id(r), self._decode(r)))
        live = [r for r in rows if id(r) in windows and r["reject_reason"] is None]
        derived: dict[int, list[dict[str, Any]]] = {}
        for row, scores in zip(live, self._scores(live, windows), strict=True):
            if scores is not None:
                self._guard(row, lambda r, s=scores: derived.__setitem__(id(r), self._derive(r, windows[id(r)], s)))
        out = [d for row in rows for d in derived.get(id(row), [row])]
        return pa.Table.from_pylist(out, schema=schema)

    # ------------------------------------------------------------------------------------------------------------
    def _decode(self, row: dict[str, Any]) -> _Window:
        from alchemist_data.media.probe import VideoError, _clip_window, probe

        video = row["video"]
        info = probe(video)
        if not info.fps or info.fps <= 0:
            raise VideoError("unreadable", f"{video}: the video stream has no frame rate, so shots cannot be timed")
        a, b = _clip_window(info, row["start_s"], row["end_s"], video)
        frames, times = _lowres_frames(video, stop_s=b)
        # Frames on screen at some time inside [a, b).
        inside = np.flatnonzero((times + 1.0 / info.fps > a + 1e-9) & (times < b - 1e-9))
        if not len(inside):
            raise RowReject("too_few_frames", f"{video}: no frame could be decoded inside [{a:.3f}, {b:.3f}) s")
        return _Window(frames[inside], int(inside[0]), times[inside], a, b)

    def _scores(self, rows: list[dict[str, Any]], windows: dict[int, _Window]) -> list[np.ndarray | None]:
        """Per-frame transition scores of each row's window: one batched call, clip by clip if that fails."""
        if not rows:
            return []
        try:
            return list(self.model.transition_scores([windows[id(r)].frames for r in rows]))
        except Exception:
            log.warning("stage shots: batched TransNetV2 call failed, retrying clip by clip", exc_info=True)
        got: dict[int, np.ndarray] = {}

        def one(r: dict[str, Any]) -> None:
            got[id(r)] = self.model.transition_scores([windows[id(r)].frames])[0]

        for row in rows:
            self._guard(row, one)
        return [got.get(id(r)) for r in rows]

    def _derive(self, row: dict[str, Any], win: _Window, scores: np.ndarray) -> list[dict[str, Any]]:
        """The work rows made from one input row, and its shots-table rows on the first of them."""
        assert row["num_siblings"] == 1, "shots must be the only stage that splits rows"
        cfg = self.cfg
        src = row["clip_id"]
        shots = self._shots(win, scores)
        n = len(shots)
        row.update(source_clip_id=src, num_shots_in_source=n)
        if cfg.mode == "filter":
            if n > 1:
                cuts = ", ".join(f"{s['start_s']:.2f}" for s in shots[1:])
                for s in shots:
                    s["reject_reason"] = "multi_shot"
                row["shots"] = shots
                reject(
                    row,
                    self.name,
                    "multi_shot",
                    f"{n} shots (TransNetV2 cuts at {cuts} s, threshold "
                    f"{cfg.threshold}); the paper keeps single-shot videos only (--set shots.mode=split cuts them)",
                )
                return [row]
            shots[0]["clip_ids"] = [src]
            row.update(shot_index=0, shots=shots)
            return [row]
        out: list[dict[str, Any]] = []
        for shot in shots:
            k, dur = shot["shot_index"], shot["duration_s"]
            base = f"{src}-shot{k:03d}"
            if cfg.min_s and dur < cfg.min_s:
                clip = self._child(row, base, shot["start_s"], shot["end_s"], k)
                reject(
                    clip,
                    self.name,
                    "shot_too_short",
                    f"shot {k} of {src} lasts {dur:.3f} s, less than shots.min_s={cfg.min_s}",
                )
                shot.update(clip_ids=[base], reject_reason="shot_too_short")
                out.append(clip)
                continue
            pieces = max(1, math.ceil(dur / cfg.max_s - 1e-9)) if cfg.max_s else 1
            ids = [base] if pieces == 1 else [f"{base}-part{p:02d}" for p in range(pieces)]
            edges = [shot["start_s"] + dur * p / pieces for p in range(pieces)] + [shot["end_s"]]
            out.extend(self._child(row, cid, edges[p], edges[p + 1], k) for p, cid in enumerate(ids))
            shot["clip_ids"] = ids
        for clip in out:
            clip["num_siblings"] = len(out)
        out[0]["shots"] = shots
        return out

    def _shots(self, win: _Window, scores: np.ndarray) -> list[dict[str, Any]]:
        from alchemist_data.models.shots import TransNetShots

        scenes = TransNetShots.scenes(scores, self.cfg.threshold)
        n_frames = len(win.frames)
        shots = []
        for k, (s, e) in enumerate(scenes):
            s, e = int(s), int(e)
            last = k == len(scenes) - 1
            start = max(win.start_s, float(win.times_s[s]))
            end = win.end_s if e + 1 >= n_frames else min(win.end_s, float(win.times_s[e + 1]))
            # The scene's last frame is the first one above the threshold (the cut); the next scene starts after
            # the cut's frames.
            nxt = int(scenes[k + 1][0]) if not last else None
            inside = scores[s : e + 1] if last else scores[s:e]
            shots.append(
                {
                    "shot_index": k,
                    "num_shots": len(scenes),
                    "start_s": start,
                    "end_s": end,
                    "duration_s": end - start,
                    "start_frame": win.first_frame + s,
                    "end_frame": win.first_frame + e,
                    "transnet_score": None if nxt is None else float(scores[e:nxt].max()),
                    "max_inside_score": float(inside.max()) if len(inside) else None,
                    "clip_ids": [],
                    "reject_reason": None,
                }
            )
        return shots

    def _child(self, row: dict[str, Any], clip_id: str, start_s: float, end_s: float, shot_index: int) -> dict:
        child = copy.deepcopy({k: v for k, v in row.items() if k != "shots"})
        child.update(clip_id=clip_id, start_s=start_s, end_s=end_s, shot_index=shot_index, shots=None)
        return child
