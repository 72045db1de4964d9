"""GroundingDINO: one box per entity word per frame, with the MSRVTT-Personalization selection rule (spec §7.3).

The caption/token mapping and the box selection are the benchmark's ``get_grounding_output``, in
:mod:`alchemist_data.benchmark_rules` (:func:`~alchemist_data.benchmark_rules.tag_token_positions`,
:func:`~alchemist_data.benchmark_rules.select_boxes`). Curation and the Subj-S metric both ground through
:meth:`Grounder.detect_many`, so a box found here is the box the benchmark would find.

Two backends produce the raw ``sigmoid(logits)`` / ``pred_boxes``:

* :class:`HFGroundingDino`: transformers ``GroundingDinoForObjectDetection`` (hub id, local dir, or a small random
  model "random-tiny" / "random-small" for offline runs and tests);
* :class:`GroundingDinoPy`: groundingdino-py (the benchmark's implementation: SwinT-OGC config + checkpoint).
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from alchemist_data.benchmark_rules import select_boxes, tag_token_positions
from alchemist_data.models.base import (
    LazyModel,
    ModelLoadError,
    PretrainedPair,
    check_rgb,
    offline_hint,
)
from alchemist_data.models.configs import check_gdino_text_encoder

MAX_TEXT_LEN = 256  # GroundingDINO's text length (pred_logits has this many columns)


@dataclass
class Detection:
    box_xyxy: list[int]
    score: float


Request = tuple[np.ndarray, Sequence[str]]  # one RGB frame and the entity words to ground in it


class Grounder(LazyModel):
    """Base: ``setup()`` loads the model once; ``detect_many`` grounds each frame's own tags, many frames per forward.

    ``batch_size``: frames per forward pass. Frames of one pass must share a size (they are stacked), not a caption:
    each carries its own text, padded to the longest, so frames of different clips share a pass.
    """

    name: str = "grounder"

    def __init__(self, device: str = "cpu", box_threshold: float = 0.4, batch_size: int = 8) -> None:
        super().__init__(device=device)
        self.box_threshold = box_threshold
        self.batch_size = max(1, int(batch_size))

    @property
    def tokenizer(self) -> Any:
        """The BERT tokenizer whose token positions index the logits' text axis (the backend's ``_load`` sets it)."""
        self.setup()
        return self._tokenizer

    # -- backend hooks ------------------------------------------------------------------------------------------

    @abstractmethod
    def _forward(self, images: list[np.ndarray], captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Same-size RGB frames, one caption each -> (sigmoid probs [B, Q, L], normalised cxcywh boxes [B, Q, 4])."""

    # -- public -------------------------------------------------------------------------------------------------
    def detect(self, images: Sequence[np.ndarray], tags: Sequence[str]) -> list[dict[str, Detection]]:
        """Ground every tag in every image (:meth:`detect_many` with the same tags for each image)."""
        return self.detect_many([(image, tags) for image in images])

    def detect_many(self, requests: Sequence[Request]) -> list[dict[str, Detection]]:
        """``{tag: Detection}`` for each ``(image, tags)`` request, in request order.

        Requests are grouped by image size and run ``batch_size`` frames per forward pass whatever their tags; each
        frame is scored on its own caption's token positions, so its result does not depend on which frames shared
        its pass. A request without tags gets ``{}``.
        """
        self.setup()
        results: list[dict[str, Detection]] = [{} for _ in requests]
        images = [check_rgb(image, f"image #{i}") for i, (image, _) in enumerate(requests)]
        tag_lists = [tuple(tags) for _, tags in requests]
        prompts: dict[tuple[str, ...], tuple[str, list[list[int]]]] = {}  # tag list -> (caption, token positions)
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, tags in enumerate(tag_lists):
            if not tags:
                continue
            if tags not in prompts:
                prompts[tags] = tag_token_positions(self.tokenizer, tags)
            by_shape[images[i].shape].append(i)
        for shape, idxs in by_shape.items():
            H, W = shape[:2]
            # similar caption lengths side by side: less text padding per pass (the order does not change results)
            idxs = sorted(idxs, key=lambda i: len(prompts[tag_lists[i]][0]))
            for start in range(0, len(idxs), self.batch_size):
                chunk = idxs[start : start + self.batch_size]
                probs, boxes = self._forward([images[i] for i in chunk], [prompts[tag_lists[i]][0] for i in chunk])
                seq_len = probs.shape[-1]
                for j, i in enumerate(chunk):
                    tags = tag_lists[i]
                    positions = prompts[tags][1]
                    # Tags pushed past the model's text length (captions over 256 tokens) cannot be scored; they get
                    # no box instead of failing the whole batch.
                    keep = [t for t, pos in enumerate(positions) if any(p < seq_len for p in pos)]
                    sel = select_boxes(probs[j], boxes[j], [positions[t] for t in keep], (W, H), self.box_threshold)
                    results[i] = {tags[keep[k]]: Detection(box_xyxy=b, score=s) for k, (b, s) in sel.items()}
        return results


class HFGroundingDino(PretrainedPair, Grounder):
    """transformers GroundingDINO from a hub id / local dir, or a random model ("random-tiny" / "random-small")."""

    name = "hf_grounding_dino"

    def __init__(self, model: str = "IDEA-Research/grounding-dino-tiny", **kw: Any) -> None:
        super().__init__(**kw)
        self._init_pair(model)

    def _load(self) -> None:
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        from alchemist_data.models.tiny import random_grounding_dino

        self._load_pair("GroundingDINO", (GroundingDinoForObjectDetection, AutoProcessor), random_grounding_dino)
        self._tokenizer = self.processor.tokenizer

    def pixel_inputs(self, images: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """``pixel_values`` / ``pixel_mask`` of same-size RGB frames, at the official transform's size.

        The processor's own resize rounds the long side from the unrounded short side (1333 px wide for 480x854
        where groundingdino's ``RandomResize([800], max_size=1333)`` gives 1332), so the size is computed the
        official way and given to it.
        """
        self.setup()
        proc = self.processor.image_processor
        size = proc.size if isinstance(proc.size, dict) else {}
        short, longest = size.get("shortest_edge"), size.get("longest_edge")
        kw: dict[str, Any] = {}
        if short:
            oh, ow = official_resize_hw(images[0].shape[0], images[0].shape[1], int(short), longest)
            kw["size"] = {"height": oh, "width": ow}
        return proc(images=images, return_tensors="pt", **kw)

    @torch.inference_mode()
    def _forward(self, images: list[np.ndarray], captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        # The processor's own __call__ would merge a list of captions into one string (it treats a list of str as
        # candidate labels), so images and text are prepared separately.
        pixels = self.pixel_inputs(images)
        # transformers' GroundingDINO fails on captions longer than max_text_len (groundingdino-py truncates
        # internally), so truncate the same way. Shorter captions are padded; the model masks padding out of the
        # text attention and gives it -inf logits, so a frame's scores do not depend on its neighbours' captions.
        max_len = int(getattr(self.model.config, "max_text_len", MAX_TEXT_LEN))
        text = self.processor.tokenizer(
            list(captions), padding="longest", truncation=True, max_length=max_len, return_tensors="pt"
        )
        inputs = {k: v.to(self.device) for k, v in {**pixels, **text}.items()}
        out = self.model(**inputs)
        return out.logits.float().sigmoid().cpu(), out.pred_boxes.float().cpu()


def official_resize_hw(height: int, width: int, short: int = 800, max_size: int | None = 1333) -> tuple[int, int]:
    """GroundingDINO's ``T.RandomResize([short], max_size)`` output size ``(h, w)`` for a ``height x width`` frame.

    ``get_size_with_aspect_ratio`` of ``groundingdino/datasets/transforms.py``: the short side is lowered to
    ``round(max_size * short_side / long_side)`` when the long side would pass ``max_size``, then the long side is
    ``int(short * long / short_side)`` from that rounded short side.
    """
    size = short
    if max_size is not None:
        lo, hi = float(min(height, width)), float(max(height, width))
        if hi / lo * size > max_size:
            size = int(round(max_size * lo / hi))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def _default_gdino_config() -> str:
    import groundingdino

    return os.path.join(os.path.dirname(groundingdino.__file__), "config", "GroundingDINO_SwinT_OGC.py")


def _batch_major_text_mask(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    # groundingdino-py's text self-attention layer (transformer_vanilla.TransformerEncoderLayer) expands the
    # per-caption mask [B, L, L] with `repeat(nhead, 1, 1)`, i.e. head-major, but nn.MultiheadAttention reads the
    # [B * nhead, L, L] mask batch-major. Captions that differ within a batch then get each other's masks (results
    # change completely); equal captions hide the bug. Expanding batch-major here, before the layer, makes the layer
    # skip its own repeat. One caption per forward (the benchmark's use) is unchanged: the hook then does nothing.
    mask, src = kwargs.get("src_mask"), kwargs.get("src")
    if mask is not None and src is not None and mask.dim() == 3 and mask.shape[0] == src.shape[1] > 1:
        kwargs["src_mask"] = mask.repeat_interleave(module.nhead, dim=0)
    return args, kwargs


def fix_mixed_caption_batches(model: Any) -> None:
    """Let one groundingdino-py forward carry different captions (see :func:`_batch_major_text_mask`)."""
    for layer in getattr(model.transformer.encoder, "text_layers", None) or []:
        layer.register_forward_pre_hook(_batch_major_text_mask, with_kwargs=True)


GDINO_LAYOUT = "{'model': state dict}, keys optionally prefixed 'module.', as groundingdino_swint_ogc.pth"
# Keys the released groundingdino_swint_ogc.pth carries that the model does not use: an unused label encoder, and
# BERT's position ids, a non-persistent buffer in current transformers.
GDINO_HARMLESS_EXTRAS = ("label_enc.weight", "bert.embeddings.position_ids")

GDINO_CHECKPOINT_URL = (
    "https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha/groundingdino_swint_ogc.pth"
)


class GroundingDinoPy(Grounder):
    """groundingdino-py, loaded like the benchmark's ``load_grounding_model`` (config + checkpoint, strict=False).

    ``text_encoder``: a hub id (default ``bert-base-uncased``) or a local BERT directory (groundingdino-py checks
    ``os.path.isdir``). Frames are preprocessed exactly as the benchmark: short side ``resize_short`` (800), long
    side at most ``max_size`` (1333), ImageNet normalisation (groundingdino's own transforms).
    """

    name = "groundingdino_py"

    def __init__(
        self,
        config_file: str = "",
        checkpoint: str = "",
        text_encoder: str = "bert-base-uncased",
        resize_short: int = 800,
        max_size: int = 1333,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.config_file = config_file or _default_gdino_config()
        self.checkpoint = checkpoint
        self.text_encoder = text_encoder
        self.resize_short = resize_short
        self.max_size = max_size
        self.model: Any = None

    def _load(self) -> None:
        from groundingdino.models import build_model
        from groundingdino.util.misc import clean_state_dict
        from groundingdino.util.slconfig import SLConfig

        from alchemist_data.models.checkpoints import load_exact, read_checkpoint, unwrap_state_dict

        if not os.path.isfile(self.config_file):
            raise FileNotFoundError(f"GroundingDINO config file not found: {self.config_file}")
        if not self.checkpoint or not os.path.isfile(self.checkpoint):
            raise FileNotFoundError(
                f"GroundingDINO checkpoint not found: {self.checkpoint or '(empty)'}. Download "
                f"groundingdino_swint_ogc.pth from {GDINO_CHECKPOINT_URL} and pass its path "
                "(grounding.checkpoint or ALCHEMIST_GDINO_CHECKPOINT)."
            )
        check_gdino_text_encoder(self.text_encoder)
        args = SLConfig.fromfile(self.config_file)
        args.device = self.device
        args.text_encoder_type = self.text_encoder
        try:
            model = build_model(args)
        except OSError as exc:
            raise ModelLoadError(offline_hint(f"the GroundingDINO text encoder {self.text_encoder!r}", exc)) from exc
        # The released file may pickle training metadata beside the weights, as the benchmark's torch.load allows.
        ckpt = read_checkpoint(self.checkpoint, "GroundingDINO", weights_only=False)
        state = clean_state_dict(unwrap_state_dict(ckpt, ("model",)))
        # The benchmark loads with strict=False and ignores the result; here the file must fill every tensor (the
        # released file's extras are known), or a file of another layout would run random weights silently.
        load_exact(model, state, self.checkpoint, "GroundingDINO", GDINO_LAYOUT, GDINO_HARMLESS_EXTRAS)
        fix_mixed_caption_batches(model)
        self.model = model.to(self.device).eval()
        self._tokenizer = model.tokenizer

    def _preprocess(self, image: np.ndarray) -> torch.Tensor:
        import groundingdino.datasets.transforms as T
        from PIL import Image

        transform = T.Compose(
            [
                T.RandomResize([self.resize_short], max_size=self.max_size),
                T.ToTensor(),
                T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        )
        tensor, _ = transform(Image.fromarray(image), None)
        return tensor

    @torch.inference_mode()
    def _forward(self, images: list[np.ndarray], captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = torch.stack([self._preprocess(im) for im in images]).to(self.device)
        # groundingdino-py tokenises the captions itself (padding to the longest, truncating at max_text_len)
        out = self.model(batch, captions=list(captions))
        return out["pred_logits"].float().sigmoid().cpu(), out["pred_boxes"].float().cpu()


def build_grounder(cfg: Any, device: str = "cpu") -> Grounder:
    """Grounder from a ``GroundingConfig`` (backend ``hf`` or ``gdino_py``)."""
    common = {"device": device, "box_threshold": cfg.box_threshold, "batch_size": cfg.batch_size}
    if cfg.backend == "hf":
        return HFGroundingDino(model=cfg.model, **common)
    if cfg.backend in ("gdino_py", "groundingdino_py", "groundingdino"):
        return GroundingDinoPy(
            config_file=cfg.config_file, checkpoint=cfg.checkpoint, text_encoder=cfg.text_encoder, **common
        )
    raise ValueError(f"unknown grounding backend {cfg.backend!r}; choose 'hf' or 'gdino_py'")
