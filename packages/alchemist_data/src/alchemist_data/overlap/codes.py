"""Frame codes of the overlap filter: 64-bit perceptual hashes (offline) and DINOv2 / CLIP embeddings (paper)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from alchemist_data.benchmark_rules import IMAGENET_MEAN, IMAGENET_STD
from alchemist_data.models.base import LazyModel, PretrainedPair, check_rgb

HASH_BITS = 64
# A frame whose 32x32 grey thumbnail varies less than this (std of 0-255 values) is flat: fades, black or white
# frames hash alike whatever video they come from, so they are neither indexed nor matched.
FLAT_STD = 3.0
#: Fraction of width and height the crop variants of an indexed frame cut away (see :func:`crop_variants`).
CROP_VARIANT = 0.05
#: Cells per side of the colour layout that confirms a hash match (4: coarse enough that a copy cropped by a few
#: per cent stays within a few levels per cell, fine enough that another object in the scene shows).
LAYOUT_CELLS = 4


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: ``D @ x`` is the DCT of a column vector ``x``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)


# Only the 8 lowest frequencies are kept, so only those rows of the DCT are computed.
_DCT_LOW = _dct_matrix(32)[:8]


def _thumbnail(frame: np.ndarray) -> np.ndarray:
    """32x32 float32 luma of an RGB (or already grey) frame; area resampling, so the frame's size does not matter."""
    import cv2

    if frame.ndim == 2 and frame.dtype == np.uint8:
        grey = frame
    else:
        grey = cv2.cvtColor(check_rgb(frame, "frame"), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)


def phash(frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit perceptual hashes of RGB (or grey) frames, and which frames are informative (not flat).

    The hash is the classic pHash: the 8x8 lowest frequencies of the 32x32 DCT of the grey thumbnail, each bit set
    when its coefficient is above their median (the first coefficient is the most significant bit). Low frequencies
    survive re-encoding, rescaling and trimming. Returns ``(uint64 [N], bool [N])``.
    """
    if not len(frames):
        return np.zeros(0, np.uint64), np.zeros(0, bool)
    thumbs = np.stack([_thumbnail(f) for f in frames])
    low = (_DCT_LOW @ thumbs @ _DCT_LOW.T).reshape(len(thumbs), HASH_BITS)
    bits = low > np.median(low, axis=1, keepdims=True)
    codes = np.packbits(bits, axis=1).view(">u8").astype(np.uint64).ravel()
    return codes, thumbs.std(axis=(1, 2)) >= FLAT_STD


def crop_variants(frame: np.ndarray, frac: float = CROP_VARIANT) -> list[np.ndarray]:
    """The frame and the five ways a copy may have cut ``frac`` of its width and height: at each corner and evenly
    around the centre. A copy cropped by a few per cent hashes up to 16 bits away from its source, as far as a
    different clip of the same scene; one of these variants is within a few bits of it (measured in the tests)."""
    h, w = frame.shape[:2]
    dy, dx = int(round(frac * h)), int(round(frac * w))
    return [
        frame,
        frame[dy:, dx:],
        frame[dy:, : w - dx],
        frame[: h - dy, dx:],
        frame[: h - dy, : w - dx],
        frame[dy // 2 : h - dy // 2, dx // 2 : w - dx // 2],
    ]


def hamming(codes: np.ndarray, code: int | np.uint64) -> np.ndarray:
    """Bits that differ between every code of ``codes`` (uint64, any shape) and ``code``, as uint8 of that shape."""
    return np.bitwise_count(codes ^ np.uint64(code)).astype(np.uint8)


def colour_layout(frames: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 [N, 4, 4, 3]: each frame's mean colour in a 4x4 grid of cells."""
    import cv2

    out = np.zeros((len(frames), LAYOUT_CELLS, LAYOUT_CELLS, 3), np.uint8)
    for i, f in enumerate(frames):
        out[i] = cv2.resize(check_rgb(f, "frame"), (LAYOUT_CELLS, LAYOUT_CELLS), interpolation=cv2.INTER_AREA)
    return out


def layout_difference(layouts: np.ndarray, layout: np.ndarray) -> np.ndarray:
    """float32 [N]: the largest difference (0-255, mean over RGB) between any cell of each of ``layouts`` and of
    ``layout``, after removing each layout's mean colour (so a brightness shift of the whole copy costs nothing).

    One cell that differs is enough: where something else moves through the same scene, that region differs."""
    a = layouts.astype(np.float32)
    a -= a.mean(axis=(1, 2), keepdims=True)
    b = layout.astype(np.float32)
    b -= b.mean(axis=(0, 1), keepdims=True)
    return np.abs(a - b[None]).mean(axis=3).reshape(len(a), LAYOUT_CELLS * LAYOUT_CELLS).max(axis=1, initial=0.0)


#: Codes of N frames: named arrays whose first axis is the frame, plus ``informative`` (bool [N]).
Codes = dict[str, np.ndarray]


def take(codes: Codes, index: np.ndarray | slice) -> Codes:
    return {k: v[index] for k, v in codes.items()}


class FrameCoder(ABC):
    """Turns frames into codes and finds the indexed frames that are near-duplicates of a clip frame."""

    name = "coder"

    def setup(self) -> None:
        """Load a model, if any (once per worker)."""
        return None  # hashing needs no model

    @abstractmethod
    def encode(self, frames: Sequence[np.ndarray]) -> Codes:
        """Codes of clip frames."""

    def encode_reference(self, frames: Sequence[np.ndarray]) -> Codes:
        """Codes of reference frames (default: the same as a clip frame's)."""
        return self.encode(frames)

    def prepare(self, index: Codes) -> None:
        """Arrange the index's codes for fast search (once, after the index is built or loaded)."""
        return None  # codes searched as stored

    @abstractmethod
    def candidates(self, index: Codes, query: Codes, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Indexed frames that are near-duplicates of clip frame ``i`` of ``query``: (their indices, similarity in
        [0, 1] of each). ``prepare(index)`` has been called."""

    def describe(self, similarity: float) -> str:
        return f"similarity {similarity:.3f}"


class PHashCoder(FrameCoder):
    """Two steps. The 64-bit pHash finds candidates fast: indexed frames carry the hashes of their
    :func:`crop_variants` too, and a candidate is within ``max_hamming`` bits of the clip frame on one of them. The
    colour layout then confirms it: no 4x4 cell may differ by more than ``max_layout_diff``. The hash is a global
    summary, so the same background with other things moving through it can hash a few bits away; the layout sees
    the cells where they differ."""

    name = "phash"

    def __init__(self, max_hamming: int, max_layout_diff: float) -> None:
        self.max_hamming = max_hamming
        self.max_layout_diff = float(max_layout_diff)

    def encode(self, frames: Sequence[np.ndarray]) -> Codes:
        hashes, informative = phash(frames)
        return {"hash": hashes, "layout": colour_layout(frames), "informative": informative}

    def encode_reference(self, frames: Sequence[np.ndarray]) -> Codes:
        import cv2

        # Grey once per frame, then crop: the variants' thumbnails need no colour conversion of their own.
        variants = [v for f in frames for v in crop_variants(cv2.cvtColor(check_rgb(f, "frame"), cv2.COLOR_RGB2GRAY))]
        hashes, informative = phash(variants)
        n = len(variants) // len(frames) if len(frames) else 6
        return {
            "hash": hashes.reshape(len(frames), n),
            "layout": colour_layout(frames),
            "informative": informative.reshape(len(frames), n)[:, 0],
        }  # variant 0 is the frame itself

    def prepare(self, index: Codes) -> None:
        # One contiguous row per variant: XOR and popcount then stream through memory instead of reducing the
        # [N, 6] array along its short axis.
        self._by_variant = np.ascontiguousarray(index["hash"].T)

    def candidates(self, index: Codes, query: Codes, i: int) -> tuple[np.ndarray, np.ndarray]:
        by_variant = self._by_variant
        code = np.uint64(query["hash"][i])
        xor = np.empty(by_variant.shape[1], np.uint64)
        bits = np.empty(by_variant.shape[1], np.uint8)
        count = np.empty_like(bits)
        np.bitwise_count(np.bitwise_xor(by_variant[0], code, out=xor), out=bits)
        for row in by_variant[1:]:
            np.minimum(bits, np.bitwise_count(np.bitwise_xor(row, code, out=xor), out=count), out=bits)
        hit = np.flatnonzero(bits <= self.max_hamming)
        hit = hit[layout_difference(index["layout"][hit], query["layout"][i]) <= self.max_layout_diff]
        return hit, 1.0 - bits[hit].astype(np.float32) / HASH_BITS

    def describe(self, similarity: float) -> str:
        bits = (1.0 - similarity) * HASH_BITS
        return (
            f"similarity {similarity:.3f} (perceptual hash: {bits:.1f} of {HASH_BITS} bits differ on average; "
            f"colour layout within {self.max_layout_diff:g}/255 per cell)"
        )


DEFAULT_MODELS = {"dinov2": "facebook/dinov2-base", "clip": "openai/clip-vit-large-patch14"}


class EmbeddingCoder(PretrainedPair, LazyModel, FrameCoder):
    """Unit-length image embeddings: the DINOv2 CLS token (``dinov2``) or CLIP's projected image feature (``clip``)."""

    def __init__(self, backend: str, model: str, min_similarity: float, device: str = "cpu") -> None:
        super().__init__(device=device)
        self.name = backend
        self._init_pair(model or DEFAULT_MODELS[backend])
        self.min_similarity = float(min_similarity)

    def _load(self) -> None:
        from alchemist_data.models.tiny import random_image_encoder

        if self.name == "clip":
            from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

            classes: tuple[Any, ...] = (CLIPVisionModelWithProjection, CLIPImageProcessor)
        else:
            from transformers import AutoImageProcessor, Dinov2Model

            classes = (Dinov2Model, AutoImageProcessor)
        self._load_pair(f"overlap {self.name}", classes, partial(random_image_encoder, kind=self.name))

    def _pixels(self, frames: Sequence[np.ndarray]) -> Any:
        import torch

        if self.processor is not None:
            return self.processor(images=list(frames), return_tensors="pt")["pixel_values"]
        import cv2

        side = self.model.config.image_size
        batch = np.stack([cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA) for f in frames])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode(self, frames: Sequence[np.ndarray]) -> Codes:
        import torch

        self.setup()
        frames = [check_rgb(f, "frame") for f in frames]
        informative = np.array([float(_thumbnail(f).std()) >= FLAT_STD for f in frames], bool)
        if not frames:
            return {"embedding": np.zeros((0, 1), np.float16), "informative": informative}
        with torch.inference_mode():
            pixels = self._pixels(frames).to(self.device)
            if self.name == "clip":
                emb = self.model(pixel_values=pixels).image_embeds
            else:
                emb = self.model(pixel_values=pixels).pooler_output
            emb = torch.nn.functional.normalize(emb.float(), dim=-1)
        # float16 halves the cached index (2,130 videos x ~150 samples x 768 floats) at no cost to a cosine threshold.
        return {"embedding": emb.cpu().numpy().astype(np.float16), "informative": informative}

    def prepare(self, index: Codes) -> None:
        # Widened once per worker, not once per queried frame: numpy has no fast float16 matrix product, and the
        # conversion of the whole index per frame cost more than the product itself.
        self._index_f32 = index["embedding"].astype(np.float32)

    def candidates(self, index: Codes, query: Codes, i: int) -> tuple[np.ndarray, np.ndarray]:
        sims = self._index_f32 @ query["embedding"][i].astype(np.float32)
        hit = np.flatnonzero(sims >= self.min_similarity)
        return hit, sims[hit]

    def describe(self, similarity: float) -> str:
        return f"cosine similarity {similarity:.3f} ({self.name} embeddings)"
