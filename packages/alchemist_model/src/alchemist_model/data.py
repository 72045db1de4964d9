"""Training data over a curated run: clips + entities + backgrounds (read through alchemist_data's schema).

One sample = the target clip (24 fps, ``num_frames`` = 4k+1 frames, resized to cover the profile's size and
centre-cropped, in [-1, 1]) + its caption + up to six reference images with the entity word each is bound to.

Reference sampling (spec §5.3), per sample:

1. number of conditional entities ~ U{1, 2, 3}, drawn with replacement from the clip's detected entity words
   (subjects and, by default, objects: ``DataConfig.include_objects``);
2. for each, number of images ~ U{1, 2, 3}, drawn with replacement from that word's crops (the 5/50/95 % frames);
3. the background plate with probability 0.5 (when the clip has one).

Face crops [choice] (spec §2.3 leaves their use open): an image drawn for a subject that has face crops is one of
them with probability ``DataConfig.face_crop_prob``, bound to the same word (slot kind ``face``).

Cap policy [choice] (spec §10: up to 3 x 3 + 1 = 10 images, but the model takes 6): entity images are kept in
draw order and truncated so that, with the background, at most ``max_reference_images`` remain; a drawn
background is never dropped and comes last. Slot order = index-embedding order.

Determinism: every random choice of sample ``index`` in ``epoch`` comes from
``numpy.random.default_rng([seed, epoch, index])``, so a sample is the same in any worker, process or resume.
``ResumableSampler`` yields keys ``epoch * len(dataset) + index`` and starts at any position.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alchemist_data.catalog import read_table
from alchemist_data.media import decode_clip, decode_image
from alchemist_model.augment import (
    BACKGROUND_AUGMENT,
    apply_augment,
    background_params,
    sample_augment_params,
)
from alchemist_model.buckets import BucketPlan, SampleKey, parse_cells
from alchemist_model.configs import DataConfig, ModelProfile
from alchemist_model.encoders import find_word_span, reference_to_tensor, white_fill

BACKGROUND = "background"
FACE = "face"


@dataclass(frozen=True)
class ReferenceSlot:
    kind: str  # subject | object | face | background
    word: str  # entity word ("" for a background without a background word in the caption)
    image_index: int  # which crop of that word (or 0 for the background)


def sample_references(
    rng: np.random.Generator,
    entity_image_counts: dict[str, tuple[str, int]],
    has_background: bool,
    background_word: str,
    cfg: DataConfig,
    face_counts: dict[str, int] | None = None,
) -> list[ReferenceSlot]:
    """Spec §5.3 sampling; ``entity_image_counts``: word -> (category, number of crops); ``face_counts``: subject
    word -> number of face crops (words without any draw exactly as before)."""
    words = sorted(entity_image_counts)
    slots: list[ReferenceSlot] = []
    if words:
        num_entities = int(rng.integers(1, cfg.max_subjects + 1))
        for _ in range(num_entities):
            word = words[int(rng.integers(len(words)))]
            category, count = entity_image_counts[word]
            num_images = int(rng.integers(1, cfg.max_images_per_subject + 1))
            faces = (face_counts or {}).get(word, 0)
            for _ in range(num_images):
                if faces and rng.uniform() < cfg.face_crop_prob:
                    slots.append(ReferenceSlot(FACE, word, int(rng.integers(faces))))
                else:
                    slots.append(ReferenceSlot(category, word, int(rng.integers(count))))
    use_background = has_background and bool(rng.uniform() < cfg.background_prob)
    cap = cfg.max_reference_images - (1 if use_background else 0)
    slots = slots[:cap]
    if use_background:
        slots.append(ReferenceSlot(BACKGROUND, background_word, 0))
    return slots


def decode_target_clip(
    video: str, start_s: float, end_s: float, num_frames: int, fps: float, size: tuple[int, int] | None = None
) -> np.ndarray:
    """(T, H, W, 3) uint8 at ``fps`` from ``start_s``; a clip shorter than needed holds its last frame.

    ``size=(w, h)`` lets the media layer resize (cover) and centre-crop while decoding.
    """
    frames = np.asarray(decode_clip(video, start_s, end_s, fps=fps, num_frames=num_frames, size=size))
    if len(frames) < num_frames:
        frames = np.concatenate([frames, np.repeat(frames[-1:], num_frames - len(frames), axis=0)])
    return frames[:num_frames]


def resize_cover_crop(frames: np.ndarray, width: int, height: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, height, width) float in [-1, 1]: scale to cover, centre crop."""
    import torch.nn.functional as F

    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    src_h, src_w = video.shape[-2:]
    if (src_h, src_w) == (height, width):
        return (video / 127.5 - 1.0).clamp(-1, 1).permute(1, 0, 2, 3).contiguous()
    scale = max(height / src_h, width / src_w)
    new_h, new_w = max(height, round(src_h * scale)), max(width, round(src_w * scale))
    video = F.interpolate(video, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    video = video[:, :, top : top + height, left : left + width]
    return (video / 127.5 - 1.0).clamp(-1, 1).permute(1, 0, 2, 3).contiguous()


class AlchemistDataset(torch.utils.data.Dataset):
    """Map-style dataset; item keys are ``epoch * len(self) + index`` (see ``ResumableSampler``), or bucketed
    ``SampleKey``s (``buckets.BucketBatchSampler``).

    ``latents`` (a ``latents.LatentStore``): samples carry the stored VAE latents and text embeddings instead of
    the decoded video (``alchemist encode``); clips without stored rows are left out, counted in
    ``num_missing_latents``.
    """

    def __init__(
        self,
        run_dir: str | Path,
        width_px: int,
        height_px: int,
        num_frames: int,
        image_size_px: int,
        data: DataConfig | None = None,
        seed: int = 0,
        with_references: bool = True,
        latents: Any = None,
    ) -> None:
        if (num_frames - 1) % 4 != 0:
            raise ValueError(f"num_frames={num_frames}: the VAE needs 4k+1 frames (e.g. 9, 17, 49)")
        self.run_dir = Path(run_dir)
        self.width_px, self.height_px, self.num_frames = width_px, height_px, num_frames
        self.image_size_px = image_size_px
        self.cfg = data or DataConfig()
        if self.cfg.background_augment not in BACKGROUND_AUGMENT:
            raise ValueError(
                f"data.background_augment={self.cfg.background_augment!r}: choose one of "
                f"{', '.join(BACKGROUND_AUGMENT)}"
            )
        self.seed = seed
        self.with_references = with_references
        self.latents = latents
        if latents is not None and self.cfg.clip_start != "start":
            raise ValueError("precomputed latents hold the window at each clip's start: use data.clip_start=start")

        clips = read_table(self.run_dir, "clips").to_pylist()
        entities: dict[str, dict[str, tuple[str, list[bytes]]]] = {}
        faces: dict[str, dict[str, list[bytes]]] = {}
        captions = {c["clip_id"]: c["caption"] for c in clips}
        allowed = ("subject", "object") if self.cfg.include_objects else ("subject",)
        for row in read_table(self.run_dir, "entities").to_pylist():
            if not row["is_detected"] or not row["crop_png"] or row["category"] not in allowed:
                continue
            caption = captions.get(row["clip_id"])
            if caption is None or not word_occurs(caption, row["entity_word"]):
                continue
            per_clip = entities.setdefault(row["clip_id"], {})
            per_clip.setdefault(row["entity_word"], (row["category"], []))[1].append(row["crop_png"])
            if row["category"] == "subject" and row["has_face"] and row["face_crop_png"]:
                faces.setdefault(row["clip_id"], {}).setdefault(row["entity_word"], []).append(row["face_crop_png"])
        backgrounds = {}
        for row in read_table(self.run_dir, "backgrounds").to_pylist():
            if row["image_jpg"]:
                word = row["background_word"] or ""
                caption = captions.get(row["clip_id"], "")
                backgrounds[row["clip_id"]] = (word if word and word_occurs(caption, word) else "", row["image_jpg"])
        if with_references:
            # Stage II needs at least one entity reference per clip.
            clips = [c for c in clips if c["clip_id"] in entities]
        if not clips:
            what = "clips with a detected entity" if with_references else "clips"
            raise ValueError(f"{self.run_dir}: no {what} in the curated tables; curate more data or check the run")
        self.clips = sorted(clips, key=lambda c: c["clip_id"])
        # Buckets (spec §4, Table 6): groups of clips by aspect and length; None = the profile's size only.
        self.buckets = self._plan()
        self.num_missing_latents = 0
        if latents is not None:
            # the sizes this run asks for: its bucket groups', else the profile's
            profile_size = [(width_px, height_px, num_frames)]
            needed = self.buckets.clip_sizes() if self.buckets else [profile_size] * len(self.clips)
            kept = [
                c
                for c, sizes in zip(self.clips, needed, strict=True)
                if all(latents.has(c["clip_id"], *size) for size in sizes)
            ]
            self.num_missing_latents = len(self.clips) - len(kept)
            if not kept:
                raise ValueError(
                    f"{latents.root}: no stored latents for the clips of {self.run_dir} at this run's "
                    "sizes; encode this curated run with this profile (and buckets)"
                )
            self.clips = kept
            self.buckets = self._plan()
        self.entities = entities
        self.faces = faces
        self.backgrounds = backgrounds

    @classmethod
    def for_profile(
        cls, run_dir: str | Path, profile: ModelProfile, data: DataConfig | None = None, **kwargs: Any
    ) -> AlchemistDataset:
        """The dataset at a profile's sample size: its clip width, height and frames, its reference image side."""
        return cls(
            run_dir, profile.width_px, profile.height_px, profile.num_frames, profile.image_size_px, data, **kwargs
        )

    def _plan(self) -> BucketPlan | None:
        if not self.cfg.buckets:
            return None
        return BucketPlan(
            self.clips, parse_cells(self.cfg.buckets), self.cfg.bucket_aspect_ratios, self.cfg.fps, self.seed
        )

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any]:
        """``key``: ``epoch * len(self) + index`` at the profile's size, or a bucketed ``SampleKey``."""
        width, height, num_frames = self.width_px, self.height_px, self.num_frames
        if isinstance(key, SampleKey):
            group = self.buckets.groups[key.group]
            width, height, num_frames = group.width_px, group.height_px, group.num_frames
            epoch, index = divmod(key.key, len(self.clips))
            rng = np.random.default_rng([self.seed, epoch, index, key.group + 1])
        else:
            epoch, index = divmod(int(key), len(self.clips))
            rng = np.random.default_rng([self.seed, epoch, index])
        clip = self.clips[index]
        needed_s = num_frames / self.cfg.fps
        free_s = max(0.0, clip["end_s"] - clip["start_s"] - needed_s)
        start_s = clip["start_s"] + (float(rng.uniform(0.0, free_s)) if self.cfg.clip_start == "random" else 0.0)
        sample: dict[str, Any] = {
            "key": int(key.key if isinstance(key, SampleKey) else key),
            "clip_id": clip["clip_id"],
            "caption": clip["caption"],
        }
        if self.latents is not None:
            sample.update(
                self.latents.read(clip["clip_id"], width, height, num_frames, start_s),
                text_length=self.latents.max_text_tokens,
            )
        else:
            frames = decode_target_clip(
                clip["video"], start_s, clip["end_s"], num_frames, self.cfg.fps, (width, height)
            )
            sample["video"] = resize_cover_crop(frames, width, height)
        if self.with_references:
            images, words, kinds = self._references(rng, clip["clip_id"])
            sample.update(ref_images=images, ref_words=words, ref_kinds=kinds)
            missing = set(words) - set(sample.get("word_tokens", words)) - {""}
            if missing:
                raise ValueError(
                    f"{self.latents.root}: no word tokens for {sorted(missing)} of {clip['clip_id']}; "
                    "the curated tables changed after `alchemist encode`: encode them again"
                )
        return sample

    def _references(self, rng: np.random.Generator, clip_id: str) -> tuple[torch.Tensor, list[str], list[str]]:
        per_clip = self.entities[clip_id]
        counts = {word: (category, len(crops)) for word, (category, crops) in per_clip.items()}
        faces = self.faces.get(clip_id, {})
        background = self.backgrounds.get(clip_id)
        slots = sample_references(
            rng,
            counts,
            background is not None,
            background[0] if background else "",
            self.cfg,
            {word: len(crops) for word, crops in faces.items()},
        )
        tensors = []
        for slot in slots:
            if slot.kind == BACKGROUND:
                data = background[1]
            elif slot.kind == FACE:
                data = faces[slot.word][slot.image_index]
            else:
                data = per_clip[slot.word][1][slot.image_index]
            image = decode_image(data)
            if self.cfg.augment:
                params = sample_augment_params(rng, *image.shape[:2])
                if slot.kind == BACKGROUND:
                    params = background_params(params, self.cfg.background_augment)
                if params is not None:
                    image = apply_augment(image if image.shape[-1] == 4 else _opaque(image), params)
            tensors.append(reference_to_tensor(white_fill(image), self.image_size_px))
        return torch.stack(tensors), [s.word for s in slots], [s.kind for s in slots]


def _opaque(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, dtype=np.uint8)], axis=-1)


def word_occurs(caption: str, word: str) -> bool:
    try:
        find_word_span(caption, word)
    except ValueError:
        return False
    return True


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack videos; pad reference images to the batch's largest count with a (B, N) mask."""
    batch: dict[str, Any] = {
        "keys": [s["key"] for s in samples],
        "clip_ids": [s["clip_id"] for s in samples],
        "captions": [s["caption"] for s in samples],
    }
    if "latents" in samples[0]:  # precomputed: latents, and the text embeddings padded like the text encoder pads
        batch["latents"] = torch.stack([s["latents"] for s in samples])
        length, dim = samples[0]["text_length"], samples[0]["text_embeddings"].shape[-1]
        batch["text_embeddings"] = torch.zeros(len(samples), length, dim)
        batch["text_mask"] = torch.zeros(len(samples), length, dtype=torch.bool)
        for i, s in enumerate(samples):
            batch["text_embeddings"][i, : len(s["text_embeddings"])] = s["text_embeddings"]
            batch["text_mask"][i, : len(s["text_embeddings"])] = True
        batch["word_tokens"] = [s["word_tokens"] for s in samples]
    else:
        batch["video"] = torch.stack([s["video"] for s in samples])
    if "ref_images" in samples[0]:
        max_n = max(len(s["ref_words"]) for s in samples)
        first = samples[0]["ref_images"]
        images = first.new_zeros((len(samples), max_n) + tuple(first.shape[1:]))
        mask = torch.zeros(len(samples), max_n, dtype=torch.bool)
        for i, s in enumerate(samples):
            n = len(s["ref_words"])
            images[i, :n] = s["ref_images"]
            mask[i, :n] = True
        batch.update(
            ref_images=images,
            ref_mask=mask,
            ref_words=[s["ref_words"] for s in samples],
            ref_kinds=[s["ref_kinds"] for s in samples],
        )
    return batch


class ResumableSampler(torch.utils.data.Sampler[int]):
    """Endless, seeded epoch permutations; rank r of w takes every w-th key; starts after ``start`` keys/rank."""

    def __init__(self, num_items: int, seed: int = 0, start: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.num_items, self.seed, self.start = num_items, seed, start
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[int]:
        position = self.start * self.world_size + self.rank  # global position of this rank's next key
        while True:
            epoch, offset = divmod(position, self.num_items)
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
            yield epoch * self.num_items + int(order[offset])
            position += self.world_size


def to_ray_dataset(dataset: AlchemistDataset, num_samples: int, start: int = 0):
    """The same samples as a Ray Data stream (keys from ``ResumableSampler``), decoded in Ray tasks."""
    import itertools

    import ray.data

    keys = list(itertools.islice(iter(ResumableSampler(len(dataset), dataset.seed, start)), num_samples))

    def decode(row: dict[str, Any]) -> dict[str, Any]:
        sample = dataset[int(row["key"])]
        out = {
            "key": sample["key"],
            "clip_id": sample["clip_id"],
            "caption": sample["caption"],
            "video": sample["video"].numpy(),
        }
        if "ref_images" in sample:
            out.update(
                ref_images=sample["ref_images"].numpy(),
                ref_words=list(sample["ref_words"]),
                ref_kinds=list(sample["ref_kinds"]),
            )
        return out

    return ray.data.from_items([{"key": k} for k in keys]).map(decode)
