"""Multi-resolution, multi-duration buckets (spec §4, Table 6) and their deterministic, resumable batch sampler.

A *cell* is a base resolution and a frame count with a sampling weight: Table 6's cells (``table6``, or one of its
columns, ``table6-256x144`` ...) or a custom list ``"WxHxF[:weight],..."`` (``DataConfig.buckets``). Each clip of
the curated tables gets

* an aspect class: the nearest of ``DataConfig.bucket_aspect_ratios`` (in log ratio) to its ``width_px /
  height_px``;
* every cell whose frame count its duration covers at 24 fps (``floor(duration_s * fps) >= frames``).

A *group* is (cell, aspect class): its clips are resized to cover and centre-cropped to the cell's pixel area at
that aspect (sides multiples of 16), at the cell's frame count. Clips too short for every cell are left out (and
counted). Table 6's cells are all 16:9; the aspect classes let portrait or square clips keep their framing.

Sampling, per step ``s`` (from ``numpy.random.default_rng([seed, s, STEP_STREAM])``, so a step's choice never
depends on history): a cell by weight (renormalised over the cells that have clips), then one of its aspect
groups with probability proportional to its clip count (every clip of the cell is equally likely); the batch is
the group's next keys from its own endless stream of seeded permutations. All ranks draw the same group (same
shapes for DDP/FSDP) and rank r takes every world_size-th key of the step's global batch. Resuming at step S
replays the S choices (cheap) to find each group's position, so a resumed run sees the same batches.

Batch size per group [choice]: Table 6's batch column is global and roughly token-balanced (spec §4 [I]); per
rank the group gets ``max(1, budget // tokens)`` clips, ``budget`` being the profile's batch times its own clip's
token count (the memory a profile is sized for).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

#: Spec §4, Table 6: (width, height) -> {frames: (global batch size, sampling weight)}.
TABLE6: dict[tuple[int, int], dict[int, tuple[int, float]]] = {
    (256, 144): {
        17: (1216, 0.10),
        49: (464, 0.033),
        73: (320, 0.033),
        97: (240, 0.033),
        121: (192, 0.033),
        145: (160, 0.033),
        193: (128, 0.033),
        289: (80, 0.033),
    },
    (512, 288): {17: (304, 0.10), 49: (112, 0.058), 73: (80, 0.058), 97: (64, 0.058), 121: (48, 0.058)},
    (1024, 576): {17: (80, 0.10), 49: (32, 0.058), 73: (16, 0.058), 97: (16, 0.058), 121: (16, 0.058)},
}
#: Spatial multiple of a bucket side: the VAE's 8x downsampling times the 2x2 patch.
SIDE_MULTIPLE = 16
STEP_STREAM = 7  # separates the per-step bucket draws from the per-sample streams [seed, epoch, index]


@dataclass(frozen=True)
class Cell:
    width_px: int
    height_px: int
    num_frames: int
    weight: float


class SampleKey(NamedTuple):
    """What the bucketed sampler hands the dataset: a sample key (``epoch * num_clips + index``) and its group."""

    key: int
    group: int


@dataclass(frozen=True)
class Group:
    cell: int
    aspect: int
    width_px: int
    height_px: int
    num_frames: int
    members: tuple[int, ...]  # clip indices (into the dataset's sorted clips)


def parse_cells(spec: str) -> list[Cell]:
    """``table6`` | ``table6-WxH`` | ``"WxHxF[:weight],..."`` (equal weights when left out) -> cells."""
    spec = spec.strip()
    if spec == "table6" or spec.startswith("table6-"):
        columns = (
            TABLE6
            if spec == "table6"
            else {size: cells for size, cells in TABLE6.items() if f"table6-{size[0]}x{size[1]}" == spec}
        )
        if not columns:
            names = ", ".join(f"table6-{w}x{h}" for w, h in TABLE6)
            raise ValueError(f"data.buckets={spec!r}: unknown Table 6 column; use table6 or one of {names}")
        return [Cell(w, h, f, weight) for (w, h), cells in columns.items() for f, (_, weight) in cells.items()]
    cells = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        size, _, weight = item.partition(":")
        try:
            w, h, f = (int(v) for v in size.lower().split("x"))
            cells.append(Cell(w, h, f, float(weight) if weight else 1.0))
        except ValueError as err:
            raise ValueError(
                f"data.buckets: {item!r} is not WIDTHxHEIGHTxFRAMES[:WEIGHT] (e.g. 256x144x49:0.5), "
                "table6 or table6-256x144"
            ) from err
    if not cells:
        raise ValueError(f"data.buckets={spec!r}: no cells")
    for cell in cells:
        if (cell.num_frames - 1) % 4 or cell.width_px % SIDE_MULTIPLE or cell.height_px % SIDE_MULTIPLE:
            raise ValueError(
                f"data.buckets: {cell.width_px}x{cell.height_px}x{cell.num_frames} needs 4k+1 frames "
                f"and sides that are multiples of {SIDE_MULTIPLE}"
            )
        if cell.weight <= 0:
            raise ValueError(f"data.buckets: weight {cell.weight} of {cell} must be positive")
    return cells


def aspect_size(width_px: int, height_px: int, aspect: float) -> tuple[int, int]:
    """The cell's pixel area at ``aspect`` (width / height), sides rounded to multiples of 16."""
    if math.isclose(width_px / height_px, aspect, rel_tol=1e-3):
        return width_px, height_px
    area = width_px * height_px

    def side(x: float) -> int:
        return max(SIDE_MULTIPLE, round(x / SIDE_MULTIPLE) * SIDE_MULTIPLE)

    return side(math.sqrt(area * aspect)), side(math.sqrt(area / aspect))


def nearest_aspect(width_px: float, height_px: float, aspects: tuple[float, ...]) -> int:
    ratio = math.log(width_px / height_px)
    return min(range(len(aspects)), key=lambda i: (abs(math.log(aspects[i]) - ratio), i))


class BucketPlan:
    """Cells, groups and per-step choices for a list of clips (rows with width_px, height_px, duration_s)."""

    def __init__(
        self, clips: list[dict[str, Any]], cells: list[Cell], aspects: tuple[float, ...], fps: float, seed: int = 0
    ) -> None:
        if not aspects or any(a <= 0 for a in aspects):
            raise ValueError(f"data.bucket_aspect_ratios={aspects}: give positive width/height ratios")
        self.cells, self.aspects, self.seed, self.num_clips = cells, tuple(aspects), seed, len(clips)
        members: dict[tuple[int, int], list[int]] = {}
        self.num_too_short = 0
        for index, clip in enumerate(clips):
            if not clip.get("width_px") or not clip.get("height_px"):
                raise ValueError(f"clip {clip.get('clip_id')!r} has no width_px/height_px: buckets need them")
            aspect = nearest_aspect(clip["width_px"], clip["height_px"], self.aspects)
            available = math.floor(clip["duration_s"] * fps + 1e-6)
            fitting = [c for c, cell in enumerate(cells) if cell.num_frames <= available]
            self.num_too_short += not fitting
            for c in fitting:
                members.setdefault((c, aspect), []).append(index)
        if not members:
            shortest = min(cell.num_frames for cell in cells)
            raise ValueError(
                f"no clip is long enough for any bucket (the shortest needs {shortest} frames at "
                f"{fps:g} fps); choose shorter data.buckets"
            )
        self.groups = []
        for (c, a), idx in sorted(members.items()):
            w, h = aspect_size(cells[c].width_px, cells[c].height_px, self.aspects[a])
            self.groups.append(Group(c, a, w, h, cells[c].num_frames, tuple(idx)))
        self._cell_groups = {
            c: [g for g, group in enumerate(self.groups) if group.cell == c]
            for c in sorted({group.cell for group in self.groups})
        }
        weights = np.array([cells[c].weight for c in self._cell_groups], dtype=np.float64)
        self._cell_probs = weights / weights.sum()

    def group_for_step(self, step: int) -> int:
        rng = np.random.default_rng([self.seed, step, STEP_STREAM])
        cell = list(self._cell_groups)[int(rng.choice(len(self._cell_probs), p=self._cell_probs))]
        groups = self._cell_groups[cell]
        counts = np.array([len(self.groups[g].members) for g in groups], dtype=np.float64)
        return groups[int(rng.choice(len(groups), p=counts / counts.sum()))]

    def clip_sizes(self) -> list[list[tuple[int, int, int]]]:
        """Per clip (in the plan's order), every (width, height, frames) of the groups it belongs to (empty for a
        clip too short for every bucket)."""
        sizes: list[list[tuple[int, int, int]]] = [[] for _ in range(self.num_clips)]
        for group in self.groups:
            for index in group.members:
                sizes[index].append((group.width_px, group.height_px, group.num_frames))
        return sizes

    def batch_sizes(self, budget_tokens: int, tokens: Callable[[int, int, int], int]) -> list[int]:
        """Per-rank batch of each group: as many clips as fit the token budget, at least one."""
        return [max(1, budget_tokens // tokens(g.width_px, g.height_px, g.num_frames)) for g in self.groups]

    def describe(self) -> str:
        sizes = sorted({(g.width_px, g.height_px, g.num_frames) for g in self.groups})
        listing = ", ".join(f"{w}x{h}x{f}" for w, h, f in sizes)
        return (
            f"{len(self.groups)} bucket groups over {self.num_clips} clips ({listing}); "
            f"{self.num_too_short} clips are shorter than every bucket and not used"
        )


class BucketBatchSampler:
    """Endless per-rank batches of ``SampleKey`` (a ``DataLoader`` batch_sampler), starting at ``start_step``."""

    def __init__(
        self, plan: BucketPlan, batch_sizes: list[int], start_step: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        assert len(batch_sizes) == len(plan.groups)
        self.plan, self.batch_sizes, self.start_step = plan, batch_sizes, start_step
        self.rank, self.world_size = rank, world_size

    def _key(self, group: int, position: int, cache: dict[tuple[int, int], np.ndarray]) -> SampleKey:
        members = self.plan.groups[group].members
        epoch, offset = divmod(position, len(members))
        if (group, epoch) not in cache:
            cache.clear()
            cache[(group, epoch)] = np.random.default_rng([self.plan.seed, epoch, 1000 + group]).permutation(
                len(members)
            )
        index = members[int(cache[(group, epoch)][offset])]
        return SampleKey(epoch * self.plan.num_clips + index, group)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        positions = [0] * len(self.plan.groups)
        for step in range(self.start_step):  # replay: how far each group's stream has advanced
            group = self.plan.group_for_step(step)
            positions[group] += self.batch_sizes[group] * self.world_size
        step = self.start_step
        cache: dict[tuple[int, int], np.ndarray] = {}
        while True:
            group = self.plan.group_for_step(step)
            size = self.batch_sizes[group]
            base = positions[group]
            yield [self._key(group, base + self.rank + j * self.world_size, cache) for j in range(size)]
            positions[group] += size * self.world_size
            step += 1
