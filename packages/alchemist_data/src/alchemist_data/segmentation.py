"""SAM masks for GroundingDINO boxes, with the MSRVTT-Personalization thresholds and validity check (spec §7.3).

Mirrors the benchmark's ``get_sam_output`` (box prompts of one image in one ``predict_torch`` call,
``multimask_output=False``, keep if the predicted IoU > 0.9) and its box/mask validity check, both in
``evaluation_protocol/evaluation/metrics/distributed_subject_dino_similarity.py`` (tsaishien-chen/VideoAlchemy).

Backends: :class:`SegmentAnything` (segment-anything, the benchmark's; real checkpoint or a small random model)
and :class:`HFSam` (transformers ``SamModel``).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from alchemist_data.tiny_models import RANDOM_SIZES

SAM_CHECKPOINT_URLS = {
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
}


@dataclass
class MaskResult:
    mask: np.ndarray  # bool HxW, full frame
    iou_score: float  # SAM's predicted IoU, clamped to [0, 1]


def is_valid_mask_for_box(mask: np.ndarray, box_xyxy: Sequence[int], tolerance_px: int = 3) -> bool:
    """The benchmark's check that the mask cropped to the box has the box's size (≤ ``tolerance_px`` short on ONE
    side).

    Verbatim semantics of the benchmark: ``m = mask[y0:y1, x0:x1]`` (plain numpy slicing, so negative coordinates
    wrap around and coordinates past the image are cut), then valid iff
    ``(m.h == box_h and box_w - 3 <= m.w <= box_w) or (m.w == box_w and box_h - 3 <= m.h <= box_h)``.
    This rejects boxes that run off the image by more than the tolerance.

    One deliberate addition: a box without area (``x1 <= x0`` or ``y1 <= y0``, possible after int truncation of a
    sub-pixel box) is invalid. The benchmark's check would pass it (0 == 0) and then crash on the empty crop.
    """
    x0, y0, x1, y1 = (int(v) for v in box_xyxy)
    box_h = y1 - y0
    box_w = x1 - x0
    if box_h <= 0 or box_w <= 0:
        return False
    mask_h, mask_w = np.asarray(mask)[y0:y1, x0:x1].shape[:2]
    t = int(tolerance_px)
    return bool(
        (mask_h == box_h and box_w - t <= mask_w <= box_w) or (mask_w == box_w and box_h - t <= mask_h <= box_h)
    )


def accept_mask(
    result: MaskResult, box_xyxy: Sequence[int], iou_threshold: float = 0.9, tolerance_px: int = 3
) -> bool:
    """Both benchmark filters: predicted IoU > ``iou_threshold`` and :func:`is_valid_mask_for_box`."""
    return result.iou_score > iou_threshold and is_valid_mask_for_box(result.mask, box_xyxy, tolerance_px)


def _check_inputs(image: np.ndarray, boxes: Sequence[Sequence[int]]) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"image must be an RGB uint8 array of shape HxWx3, got {arr.shape} {arr.dtype}")
    for b in boxes:
        if len(b) != 4:
            raise ValueError(f"box {b!r} must have 4 numbers (x0, y0, x1, y1)")
    return arr


def _clamp01(x: float) -> float:
    # SAM's IoU head is an unbounded linear output. Clamping to [0, 1] keeps every `score > t` decision unchanged for
    # thresholds t in [0, 1) and gives a well-defined column in the tables.
    return float(min(1.0, max(0.0, x)))


class Segmenter(ABC):
    """Base: ``setup()`` loads once; ``segment(image, boxes)`` gives one full-frame mask per box (same order)."""

    is_random: bool = False
    name: str = "segmenter"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._ready = False

    def setup(self) -> None:
        if not self._ready:
            self._load()
            self._ready = True

    @abstractmethod
    def _load(self) -> None:
        """Load the model (called once by setup())."""

    @abstractmethod
    def _segment(self, image: np.ndarray, boxes: list[list[int]]) -> list[MaskResult]:
        """All box prompts of one image in one batched call."""

    def segment(self, image: np.ndarray, boxes: Sequence[Sequence[int]]) -> list[MaskResult]:
        self.setup()
        arr = _check_inputs(image, boxes)
        if len(boxes) == 0:
            return []
        return self._segment(arr, [[int(v) for v in b] for b in boxes])


class SegmentAnything(Segmenter):
    """segment-anything ``SamPredictor`` (``model_type`` vit_b/vit_l/vit_h + checkpoint, or "random-tiny"/
    "random-small" for a small random ``Sam`` that keeps the predictor unchanged)."""

    name = "segment_anything"

    def __init__(self, model_type: str = "vit_b", checkpoint: str = "", device: str = "cpu") -> None:
        super().__init__(device=device)
        self.model_type = model_type
        self.checkpoint = checkpoint
        self.is_random = model_type in RANDOM_SIZES
        self.predictor: Any = None

    def _load(self) -> None:
        from segment_anything import SamPredictor, sam_model_registry

        if self.is_random:
            from alchemist_data.tiny_models import random_segment_anything

            sam = random_segment_anything(self.model_type)
        else:
            if self.model_type not in sam_model_registry or self.model_type == "default":
                raise ValueError(
                    f"unknown SAM model_type {self.model_type!r}; choose vit_b, vit_l, vit_h, random-small or "
                    "random-tiny"
                )
            if not self.checkpoint or not os.path.isfile(self.checkpoint):
                url = SAM_CHECKPOINT_URLS.get(self.model_type, "https://github.com/facebookresearch/segment-anything")
                raise FileNotFoundError(
                    f"SAM checkpoint not found: {self.checkpoint or '(empty)'}. Download the {self.model_type} "
                    f"checkpoint from {url} and pass its path (segmentation.checkpoint or ALCHEMIST_SAM_CHECKPOINT)."
                )
            sam = sam_model_registry[self.model_type](checkpoint=self.checkpoint)
        self.predictor = SamPredictor(sam.to(self.device).eval())

    @torch.inference_mode()
    def _segment(self, image: np.ndarray, boxes: list[list[int]]) -> list[MaskResult]:
        self.predictor.set_image(image)  # RGB uint8, as the benchmark passes its frames
        boxes_t = torch.tensor(boxes)
        transformed = self.predictor.transform.apply_boxes_torch(boxes_t, image.shape[:2]).to(self.device)
        masks, scores, _ = self.predictor.predict_torch(
            point_coords=None, point_labels=None, boxes=transformed, multimask_output=False
        )
        masks_np = masks[:, 0].cpu().numpy().astype(bool)
        scores_np = scores[:, 0].float().cpu().numpy()
        return [MaskResult(mask=masks_np[i], iou_score=_clamp01(scores_np[i])) for i in range(len(boxes))]


class HFSam(Segmenter):
    """transformers ``SamModel`` + ``SamProcessor`` from a hub id / local dir, or "random-tiny"/"random-small"."""

    name = "hf_sam"

    def __init__(self, model: str = "facebook/sam-vit-base", device: str = "cpu") -> None:
        super().__init__(device=device)
        self.model_id = model
        self.is_random = model in RANDOM_SIZES
        self.model: Any = None
        self.processor: Any = None

    def _load(self) -> None:
        if self.is_random:
            from alchemist_data.tiny_models import random_hf_sam

            self.model, self.processor = random_hf_sam(self.model_id)
        else:
            from transformers import SamModel, SamProcessor

            from alchemist_data.grounding import check_local_path

            check_local_path(self.model_id, "SAM model directory")
            try:
                self.processor = SamProcessor.from_pretrained(self.model_id)
                self.model = SamModel.from_pretrained(self.model_id)
            except (OSError, ValueError) as exc:
                offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
                hint = " (HF_HUB_OFFLINE is set: only local dirs or cached ids work)" if offline else ""
                raise OSError(f"could not load SAM {self.model_id!r}{hint}: {exc}") from exc
        self.model = self.model.to(self.device).eval()

    @torch.inference_mode()
    def _segment(self, image: np.ndarray, boxes: list[list[int]]) -> list[MaskResult]:
        inputs = self.processor(
            images=image, input_boxes=[[[float(v) for v in b] for b in boxes]], return_tensors="pt"
        )
        original_sizes = inputs.pop("original_sizes")
        reshaped_sizes = inputs.pop("reshaped_input_sizes")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        out = self.model(**inputs, multimask_output=False)
        masks = self.processor.image_processor.post_process_masks(
            out.pred_masks.float().cpu(), original_sizes, reshaped_sizes
        )[0]  # (N, 1, H, W) bool
        scores = out.iou_scores[0, :, 0].float().cpu().numpy()
        masks_np = masks[:, 0].numpy().astype(bool)
        return [MaskResult(mask=masks_np[i], iou_score=_clamp01(scores[i])) for i in range(len(boxes))]


def segment_detections(
    segmenter: Segmenter,
    image: np.ndarray,
    detections: Mapping[str, Any],
    iou_threshold: float = 0.9,
    tolerance_px: int = 3,
) -> dict[str, MaskResult]:
    """The benchmark's detection -> mask step for one frame: every tag's box in ONE SAM call, then keep a tag's mask
    if the predicted IoU > ``iou_threshold`` and it passes :func:`is_valid_mask_for_box`.

    ``detections``: ``{tag: Detection}`` from ``Grounder.detect`` (anything with ``.box_xyxy``) or
    ``{tag: box_xyxy}``. Tags that fail either check are absent from the result (Subj-S scores them 0).
    """
    if not detections:
        return {}
    tags = list(detections)
    boxes = [list(getattr(d, "box_xyxy", d)) for d in detections.values()]
    results = segmenter.segment(image, boxes)
    return {
        tag: res
        for tag, box, res in zip(tags, boxes, results, strict=True)
        if accept_mask(res, box, iou_threshold=iou_threshold, tolerance_px=tolerance_px)
    }


def build_segmenter(cfg: Any, device: str = "cpu") -> Segmenter:
    """Segmenter from a ``SegmentationConfig`` (backend ``sam`` or ``hf``)."""
    if cfg.backend == "sam":
        return SegmentAnything(model_type=cfg.model_type, checkpoint=cfg.checkpoint, device=device)
    if cfg.backend == "hf":
        model = cfg.model_type if cfg.model_type in RANDOM_SIZES else (cfg.checkpoint or "facebook/sam-vit-base")
        return HFSam(model=model, device=device)
    raise ValueError(f"unknown segmentation backend {cfg.backend!r}; choose 'sam' or 'hf'")
