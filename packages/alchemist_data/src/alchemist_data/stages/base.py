"""The stage base and the work table (DESIGN.md §3): plain classes, no Ray import.

A stage is built from its own config object (NeMo Curator's pattern), which carries its ``resources`` and
``batch_size``; ``setup()`` loads models once per worker and ``process_batch(table) -> table`` does the work. Stages
pass one Arrow *work table* along, one row per clip; each stage adds its columns. A row that fails or is filtered
gets ``reject_stage`` / ``reject_reason`` / ``reject_detail`` and every later stage passes it through untouched, so
one bad video never stops a job and nothing is dropped silently.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from alchemist_data.config import StageConfig

log = logging.getLogger(__name__)


def columns(types: Mapping[str, pa.DataType]) -> list[pa.Field]:
    """Nullable Arrow fields from ``{column name: type}``, in order (how work columns and stage ``adds`` are given)."""
    return [pa.field(name, type_) for name, type_ in types.items()]


# Columns every work table starts with (built by the runner from the manifest).
#
# A stage may split one row into several (the shots stage cuts a multi-shot video into clips). Such a stage
# overrides ``process_batch`` and emits all rows derived from one input row in the same output batch, each a copy
# of the input row with its own ``clip_id`` / ``start_s`` / ``end_s``, and sets ``num_siblings`` on every one of
# them to the number of rows derived from that input row (clips and rejects alike). The runner counts a manifest
# row as finished once it has seen ``num_siblings`` rows with its ``source_index``, so splitting never breaks shard
# accounting or resume.
WORK_FIELDS = columns(
    {
        "clip_id": pa.string(),
        "video": pa.string(),
        "caption": pa.string(),
        "start_s": pa.float64(),
        "end_s": pa.float64(),
        "shard": pa.string(),
        "source_index": pa.int64(),  # the manifest row this work row comes from
        "num_siblings": pa.int32(),  # work rows that manifest row has become (1 unless a stage splits it)
        "reject_stage": pa.string(),
        "reject_reason": pa.string(),
        "reject_detail": pa.string(),
    }
)
WORK_SCHEMA = pa.schema(WORK_FIELDS)

BOX = pa.list_(pa.int32())
# One grounded entity word on one reference frame; later stages fill the mask, face and crop fields.
DETECTION = pa.struct(
    columns(
        {
            "frame_index": pa.int8(),
            "entity_word": pa.string(),
            "category": pa.string(),
            "is_detected": pa.bool_(),
            "drop_reason": pa.string(),
            "box_xyxy_px": BOX,
            "box_score": pa.float32(),
            "mask_iou_score": pa.float32(),
            "mask_area_frac": pa.float32(),
            "mask_png": pa.binary(),
            "crop_png": pa.binary(),
            "has_face": pa.bool_(),
            "face_box_xyxy_px": BOX,
            "face_score": pa.float32(),
            "face_crop_png": pa.binary(),
        }
    )
)


class RowReject(Exception):
    """Raised inside a stage to reject the current clip with a reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(eq=False)
class Stage:
    """Base of every curation stage: ``Stage(cfg, device=...)``; ``cfg`` is the stage's own config section."""

    #: the stage's name, which is also its profile section and its name in ``rejects.stage`` and ``run.json``:
    #: ``FramesStage`` is ``"frames"`` (set from the class name unless the subclass states one)
    name: ClassVar[str] = "stage"
    #: columns this stage adds to the work table
    adds: ClassVar[list[pa.Field]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__.removesuffix("Stage").lower()

    cfg: StageConfig
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        """A stage that is switched off by its config (``StageConfig.enabled``) is left out of the pipeline."""
        return self.cfg.enabled

    @property
    def model_device(self) -> str:
        """The profile's device for a stage that asks Ray for a GPU, else the CPU: a Ray worker sees no CUDA device
        unless its stage requested one."""
        return self.device if self.cfg.resources.gpus > 0 else "cpu"

    def setup(self) -> None:
        """Load models; called once per worker before the first batch."""

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        """Mutate the (non-rejected) rows in place. Default: one row at a time through ``process_row``."""
        for row in rows:
            self._guard(row, self.process_row)

    def process_row(self, row: dict[str, Any]) -> None:
        raise TypeError(f"{type(self).__name__} must override process_row or process_rows")

    def process_batch(self, table: pa.Table) -> pa.Table:
        rows = self._rows_with_adds(table)
        live = [r for r in rows if r["reject_reason"] is None]
        if live:
            self.process_rows(live)
        return pa.Table.from_pylist(rows, schema=output_schema(table.schema, self.adds))

    def _rows_with_adds(self, table: pa.Table) -> list[dict[str, Any]]:
        """The table's rows, each with this stage's added columns present (None until the stage fills them)."""
        rows = table.to_pylist()
        for row in rows:
            for f in self.adds:
                row.setdefault(f.name, None)
        return rows

    def _built(self, build: Callable[..., Any]) -> Any:
        """``build(cfg, device=...)``'s model for this stage, set up (loaded) once for this worker."""
        model = build(self.cfg, device=self.model_device)
        model.setup()
        return model

    def _batched(
        self,
        rows: list[dict[str, Any]],
        run_batch: Callable[[list[dict[str, Any]]], list[Any]],
        apply: Callable[[dict[str, Any], Any], None],
    ) -> None:
        """One model call for the whole batch (``run_batch`` gives one result per row), each result applied under
        ``_guard``; if the batched call itself fails, retry clip by clip to isolate the bad clip."""
        try:
            results = run_batch(rows)
        except Exception:
            log.warning("stage %s: batched call failed, retrying clip by clip", self.name, exc_info=True)
            for row in rows:
                self._guard(row, self.process_row)
            return
        for row, result in zip(rows, results, strict=True):
            self._guard(row, lambda r, result=result: apply(r, result))

    def _guard(self, row: dict[str, Any], fn: Callable[[dict[str, Any]], None]) -> None:
        """Run ``fn(row)``; turn any failure into a reject row instead of failing the batch."""
        try:
            fn(row)
        except RowReject as rej:
            reject(row, self.name, rej.reason, rej.detail)
        except Exception as err:  # one bad clip must never stop the job; the traceback goes to the log
            log.warning("stage %s failed on %s: %s", self.name, row.get("clip_id"), traceback.format_exc(limit=3))
            reason = getattr(err, "reason", None) or "error"
            detail = getattr(err, "detail", None) or f"{type(err).__name__}: {err}"
            reject(row, self.name, reason, detail)


def reject(row: dict[str, Any], stage: str, reason: str, detail: str) -> None:
    row["reject_stage"], row["reject_reason"], row["reject_detail"] = stage, reason, detail


def output_schema(schema: pa.Schema, adds: list[pa.Field]) -> pa.Schema:
    for f in adds:
        if schema.get_field_index(f.name) < 0:
            schema = schema.append(f)
    return schema


def split_per_clip(items: list[Any], sizes: list[int]) -> list[list[Any]]:
    """Cut a flat list of per-frame results back into per-clip lists."""
    out, pos = [], 0
    for n in sizes:
        out.append(items[pos : pos + n])
        pos += n
    return out


def frames_of(row: dict[str, Any]) -> list[np.ndarray]:
    h, w = row["frame_height_px"], row["frame_width_px"]
    return [np.frombuffer(b, dtype=np.uint8).reshape(h, w, 3) for b in row["frames"]]


def full_mask(det: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
    """The frame-sized boolean mask of a detection, rebuilt from its box-cropped mask PNG."""
    from alchemist_data.benchmark_rules import paste_box_mask
    from alchemist_data.media import decode_image

    return paste_box_mask(decode_image(det["mask_png"]), det["box_xyxy_px"], shape)
