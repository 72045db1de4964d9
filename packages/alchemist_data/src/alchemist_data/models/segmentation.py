"""SAM masks for GroundingDINO boxes, run as the MSRVTT-Personalization benchmark runs SAM (spec §7.3).

Mirrors the benchmark's ``get_sam_output`` (box prompts of one image in one ``predict_torch`` call,
``multimask_output=False``) in ``evaluation_protocol/evaluation/metrics/distributed_subject_dino_similarity.py``
(tsaishien-chen/VideoAlchemy). Which masks are kept (predicted IoU > 0.9, then the box/mask validity check) is
:func:`alchemist_data.benchmark_rules.mask_drop_reason`, called by the segmentation stage and the Subj-S scorer.

Backends: :class:`SegmentAnything` (segment-anything, the benchmark's; real checkpoint or a small random model)
and :class:`HFSam` (transformers ``SamModel``).
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from alchemist_data.models.base import LazyModel, PretrainedPair, check_rgb
from alchemist_data.models.tiny import RANDOM_SIZES

SAM_CHECKPOINT_URLS = {
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
}


@dataclass
class MaskResult:
    mask: np.ndarray  # bool HxW, full frame
    iou_score: float  # SAM's predicted IoU, clamped to [0, 1]


def _check_inputs(image: np.ndarray, boxes: Sequence[Sequence[int]], what: str = "image") -> np.ndarray:
    arr = check_rgb(image, what)
    for b in boxes:
        if len(b) != 4:
            raise ValueError(f"box {b!r} must have 4 numbers (x0, y0, x1, y1)")
    return arr


def _clamp01(x: float) -> float:
    # SAM's IoU head is an unbounded linear output. Clamping to [0, 1] keeps every `score > t` decision unchanged for
    # thresholds t in [0, 1) and gives a well-defined column in the tables.
    return float(min(1.0, max(0.0, x)))


def _mask_results(masks: np.ndarray, scores: np.ndarray) -> list[MaskResult]:
    """``[N, H, W]`` masks and ``[N]`` predicted IoUs of one frame's N boxes -> one MaskResult per box."""
    return [MaskResult(mask=m.astype(bool), iou_score=_clamp01(s)) for m, s in zip(masks, scores, strict=True)]


SegmentRequest = tuple[np.ndarray, Sequence[Sequence[int]]]  # one RGB frame and its xyxy box prompts


class Segmenter(LazyModel):
    """Base: ``setup()`` loads once; ``segment_many`` gives one full-frame mask per box of each frame (same order).

    ``batch_size``: frames per image-encoder forward (frames of one forward share a size). Each frame's boxes are
    then decoded against that frame's own embedding, as one prompt batch, exactly as the benchmark's per-frame call.
    """

    name: str = "segmenter"

    def __init__(self, device: str = "cpu", batch_size: int = 8) -> None:
        super().__init__(device=device)
        self.batch_size = max(1, int(batch_size))

    @abstractmethod
    def _segment_batch(self, images: list[np.ndarray], boxes: list[list[list[int]]]) -> list[list[MaskResult]]:
        """Same-size frames (at most ``batch_size``), each with at least one box -> a MaskResult per box per frame."""

    def segment(self, image: np.ndarray, boxes: Sequence[Sequence[int]]) -> list[MaskResult]:
        """All box prompts of one frame (:meth:`segment_many` with one request)."""
        return self.segment_many([(image, boxes)])[0]

    def segment_many(self, requests: Sequence[SegmentRequest]) -> list[list[MaskResult]]:
        """One ``MaskResult`` per box for each ``(image, boxes)`` request, in request order; no boxes -> ``[]``."""
        self.setup()
        images = [_check_inputs(image, boxes, f"image #{i}") for i, (image, boxes) in enumerate(requests)]
        box_lists = [[[int(v) for v in b] for b in boxes] for _, boxes in requests]
        out: list[list[MaskResult]] = [[] for _ in requests]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, boxes in enumerate(box_lists):
            if boxes:
                by_shape.setdefault(images[i].shape, []).append(i)
        for idxs in by_shape.values():
            for start in range(0, len(idxs), self.batch_size):
                chunk = idxs[start : start + self.batch_size]
                results = self._segment_batch([images[i] for i in chunk], [box_lists[i] for i in chunk])
                for i, res in zip(chunk, results, strict=True):
                    out[i] = res
        return out


class SegmentAnything(Segmenter):
    """segment-anything ``Sam`` (``model_type`` vit_b/vit_l/vit_h + checkpoint, or "random-tiny"/"random-small" for a
    small random ``Sam`` that keeps the predictor unchanged), run the way ``SamPredictor`` runs it."""

    name = "segment_anything"

    def __init__(
        self, model_type: str = "vit_b", checkpoint: str = "", device: str = "cpu", batch_size: int = 8
    ) -> None:
        super().__init__(device=device, batch_size=batch_size)
        self.model_type = model_type
        self.checkpoint = checkpoint
        self.is_random = model_type in RANDOM_SIZES
        self.predictor: Any = None

    def _load(self) -> None:
        from segment_anything import SamPredictor, sam_model_registry

        if self.is_random:
            from alchemist_data.models.tiny import random_segment_anything

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
            from alchemist_data.models.checkpoints import load_exact, read_checkpoint

            # segment-anything's own loading (checkpoint=...) raises a bare key list that names no file
            sam = sam_model_registry[self.model_type](checkpoint=None)
            state = read_checkpoint(self.checkpoint, "SAM")
            layout = f"a plain state dict of segment-anything's {self.model_type} Sam, as sam_vit_b_01ec64.pth"
            load_exact(sam, state, self.checkpoint, "SAM", layout)
        # The predictor holds the model, its ResizeLongestSide transform and the device; its one-image state
        # (set_image) is not used, so that several frames can share one encoder forward.
        self.predictor = SamPredictor(sam.to(self.device).eval())

    @torch.inference_mode()
    def _segment_batch(self, images: list[np.ndarray], boxes: list[list[list[int]]]) -> list[list[MaskResult]]:
        pred = self.predictor
        sam = pred.model
        original_size = images[0].shape[:2]
        # SamPredictor.set_image for each frame (RGB uint8, as the benchmark passes its frames), stacked: resize the
        # long side, HWC -> 1CHW, normalise and pad (Sam.preprocess), then one image_encoder forward for all.
        inputs = []
        for image in images:
            if sam.image_format != "RGB":
                image = image[..., ::-1]
            resized = torch.as_tensor(pred.transform.apply_image(image), device=pred.device)
            inputs.append(sam.preprocess(resized.permute(2, 0, 1).contiguous()[None, :, :, :]))
        input_size = tuple(resized.shape[:2])  # the resized (unpadded) size, equal for same-size frames
        features = sam.image_encoder(torch.cat(inputs))
        # Every box of every frame in ONE mask-decoder forward: MaskDecoder.predict_masks with each box's own frame
        # embedding in place of repeat_interleave of a single one (the only line that assumes one image per call).
        # On CPU the decoder's cost is per call (thousands of tiny ops), so this is ~1.5x on SAM for tiny models;
        # masks are bit-identical to the per-frame predictor's, IoU scores equal to ~1e-7.
        owner = torch.tensor([j for j, fb in enumerate(boxes) for _ in fb], device=pred.device)
        flat = torch.tensor([b for fb in boxes for b in fb])
        boxes_t = pred.transform.apply_boxes_torch(flat, original_size).to(pred.device)
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes_t, masks=None)
        low_res, iou = _decode_per_box(
            sam.mask_decoder, features[owner], sam.prompt_encoder.get_dense_pe(), sparse, dense
        )
        masks = (sam.postprocess_masks(low_res, input_size, original_size) > sam.mask_threshold)[:, 0].cpu().numpy()
        scores = iou[:, 0].float().cpu().numpy()
        out, pos = [], 0
        for frame_boxes in boxes:
            out.append(_mask_results(masks[pos : pos + len(frame_boxes)], scores[pos : pos + len(frame_boxes)]))
            pos += len(frame_boxes)
        return out


def _decode_per_box(
    dec: Any, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``MaskDecoder.forward(..., multimask_output=False)`` where ``image_embeddings`` holds one row per box."""
    output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)
    src = image_embeddings + dense
    pos_src = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
    b, c, h, w = src.shape
    hs, src = dec.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : (1 + dec.num_mask_tokens), :]
    src = src.transpose(1, 2).view(b, c, h, w)
    upscaled = dec.output_upscaling(src)
    hyper_in = torch.stack(
        [dec.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(dec.num_mask_tokens)], dim=1
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    return masks[:, 0:1], dec.iou_prediction_head(iou_token_out)[:, 0:1]


class HFSam(PretrainedPair, Segmenter):
    """transformers ``SamModel`` + ``SamProcessor`` from a hub id / local dir, or "random-tiny"/"random-small"."""

    name = "hf_sam"

    def __init__(self, model: str = "facebook/sam-vit-base", device: str = "cpu", batch_size: int = 8) -> None:
        super().__init__(device=device, batch_size=batch_size)
        self._init_pair(model)

    def _load(self) -> None:
        from transformers import SamModel, SamProcessor

        from alchemist_data.models.tiny import random_hf_sam

        self._load_pair("SAM", (SamModel, SamProcessor), random_hf_sam)

    @torch.inference_mode()
    def _segment_batch(self, images: list[np.ndarray], boxes: list[list[list[int]]]) -> list[list[MaskResult]]:
        pixels = self.processor.image_processor(images=images, return_tensors="pt")
        original_sizes = pixels["original_sizes"]
        reshaped_sizes = pixels["reshaped_input_sizes"]
        embeddings = self.model.get_image_embeddings(pixels["pixel_values"].to(self.device))
        out = []
        for j, frame_boxes in enumerate(boxes):
            # SamProcessor's box normalisation: scale x by new_w / old_w and y by new_h / old_h (float64, like it)
            (old_h, old_w), (new_h, new_w) = original_sizes[j].tolist(), reshaped_sizes[j].tolist()
            scaled = np.asarray(frame_boxes, dtype=float) * np.array([new_w / old_w, new_h / old_h] * 2)
            input_boxes = torch.from_numpy(scaled)[None].to(self.device)
            res = self.model(image_embeddings=embeddings[j : j + 1], input_boxes=input_boxes, multimask_output=False)
            masks = self.processor.image_processor.post_process_masks(
                res.pred_masks.float().cpu(), original_sizes[j : j + 1], reshaped_sizes[j : j + 1]
            )[0]  # (N, 1, H, W) bool
            out.append(_mask_results(masks[:, 0].numpy(), res.iou_scores[0, :, 0].float().cpu().numpy()))
        return out


def build_segmenter(cfg: Any, device: str = "cpu") -> Segmenter:
    """Segmenter from a ``SegmentationConfig`` (backend ``sam`` or ``hf``)."""
    if cfg.backend == "sam":
        return SegmentAnything(
            model_type=cfg.model_type, checkpoint=cfg.checkpoint, device=device, batch_size=cfg.batch_size
        )
    if cfg.backend == "hf":
        model = cfg.model_type if cfg.model_type in RANDOM_SIZES else (cfg.checkpoint or "facebook/sam-vit-base")
        return HFSam(model=model, device=device, batch_size=cfg.batch_size)
    raise ValueError(f"unknown segmentation backend {cfg.backend!r}; choose 'sam' or 'hf'")
