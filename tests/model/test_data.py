"""Dataset over curated tables: reference sampling (spec §5.3), augmentations (spec §5.2), determinism."""

from __future__ import annotations

import io
import math
from collections import Counter

import numpy as np
import pytest
import torch

from alchemist_model.augment import (
    AugmentParams,
    apply_augment,
    crop_size,
    sample_augment_params,
)
from alchemist_model.configs import DataConfig
from alchemist_model.data import (
    BACKGROUND,
    FACE,
    ResumableSampler,
    collate_samples,
    sample_references,
)
from alchemist_model.encoders import white_fill
from tests.model.helpers import tiny_dataset


def test_reference_sampling_counts_and_cap():
    cfg = DataConfig()
    counts = {"man": ("subject", 3), "dog": ("subject", 2), "ball": ("object", 1)}
    num_entity_images, has_background = Counter(), 0
    for seed in range(3000):
        slots = sample_references(np.random.default_rng(seed), counts, True, "park", cfg)
        assert 1 <= len(slots) <= 6
        entity = [s for s in slots if s.kind != BACKGROUND]
        background = [s for s in slots if s.kind == BACKGROUND]
        assert len(entity) >= 1 and len(background) <= 1
        if background:
            has_background += 1
            assert slots[-1].kind == BACKGROUND and slots[-1].word == "park"  # never dropped, always last
        for s in entity:
            assert 0 <= s.image_index < counts[s.word][1]
            assert s.kind == counts[s.word][0]
        num_entity_images[len(entity)] += 1
    assert has_background / 3000 == pytest.approx(0.5, abs=0.04)
    # up to 3 entities x 3 images; the cap of 6 (5 with a background) truncates the rest
    assert max(num_entity_images) == 6 and min(num_entity_images) == 1


def test_reference_sampling_without_background_and_with_replacement():
    cfg = DataConfig(background_prob=0.5)
    words = Counter()
    duplicates = 0
    for seed in range(500):
        slots = sample_references(np.random.default_rng(seed), {"dog": ("subject", 1)}, False, "", cfg)
        assert all(s.kind == "subject" and s.word == "dog" and s.image_index == 0 for s in slots)
        assert 1 <= len(slots) <= 6
        duplicates += len(slots) > 1
        words.update(s.word for s in slots)
    assert duplicates > 0  # the same crop drawn several times (with replacement)


def test_augment_parameter_ranges():
    rng = np.random.default_rng(0)
    h, w = 300, 200
    draws = [sample_augment_params(rng, h, w) for _ in range(2000)]

    def values(name: str) -> np.ndarray:
        return np.array([getattr(p, name) for p in draws], dtype=float)

    assert values("crop_scale").min() >= 0.67 and values("crop_scale").max() <= 1.0
    assert values("rotation_deg").min() >= -20 and values("rotation_deg").max() <= 20
    assert abs(values("shear_x_px")).max() <= 0.05 * w and abs(values("shear_y_px")).max() <= 0.05 * h
    assert values("shear_x_px").max() > 0.04 * w  # the range is used, not only a corner of it
    kernels = values("blur_kernel_px")
    assert kernels.min() >= 1 and kernels.max() <= 300 / 50 and set(kernels % 2) == {1.0}
    assert values("downscale").min() >= 112 / 300 and values("downscale").max() <= 1.0
    assert values("brightness").min() >= 0.9 and values("brightness").max() <= 1.1
    assert abs(values("hue")).max() <= 0.05
    assert values("flip").mean() == pytest.approx(0.5, abs=0.04)
    small = sample_augment_params(rng, 40, 30)
    assert small.downscale == 1.0 and small.blur_kernel_px == 1  # below 112 px / 50 px nothing shrinks
    # Every range is on the size it applies to: the crop (rotation and shear keep the crop's canvas).
    for p in draws:
        crop_h, crop_w = crop_size(h, w, p.crop_scale)
        assert abs(p.shear_x_px) <= 0.05 * crop_w + 1e-9 and abs(p.shear_y_px) <= 0.05 * crop_h + 1e-9
        assert p.blur_kernel_px <= max(1, max(crop_h, crop_w) / 50)
        assert p.downscale >= min(1.0, 112 / max(crop_h, crop_w)) - 1e-12


def test_downscale_never_goes_below_the_112_px_floor():
    """Spec §5.2: scale in [112 / max(h, w), 1], so the augmented reference keeps a longest side of 112 px."""
    rgba = np.full((300, 400, 4), 200, dtype=np.uint8)
    sides = []
    for seed in range(150):
        params = sample_augment_params(np.random.default_rng(seed), 300, 400)
        sides.append(max(apply_augment(rgba, params).shape[:2]))
    assert min(sides) >= 112 and min(sides) < 130  # the floor is reached, never crossed


def test_augment_moves_alpha_with_pixels_and_fills_white():
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[10:30, 5:15] = (255, 0, 0, 255)  # opaque red bar on the left, transparent elsewhere
    flip = AugmentParams(1.0, 0.0, 0.0, True, 0.0, 0.0, 0.0, 1, 1.0, 1.0, 0.0)
    out = apply_augment(rgba, flip)
    assert out.shape == (40, 40, 4)
    assert out[20, 30, 3] == 255 and out[20, 10, 3] == 0  # the bar is now on the right
    rgb = white_fill(out)
    assert rgb[20, 10].tolist() == [255, 255, 255] and rgb[20, 30].tolist() == [255, 0, 0]
    rotate = AugmentParams(0.8, 0.5, 0.5, False, 20.0, 2.0, -2.0, 5, 0.5, 1.1, 0.05)
    small = apply_augment(rgba, rotate)
    assert small.shape == (16, 16, 4)


def test_dataset_sample_shapes_and_determinism(curated_run):
    ds = tiny_dataset(curated_run, seed=3)
    assert len(ds) == 3
    a, b = ds[4], ds[4]
    assert a["video"].shape == (3, 9, 48, 64)
    assert float(a["video"].min()) >= -1.0 and float(a["video"].max()) <= 1.0
    torch.testing.assert_close(a["video"], b["video"])
    torch.testing.assert_close(a["ref_images"], b["ref_images"])
    assert a["ref_words"] == b["ref_words"]
    assert a["ref_images"].shape[1:] == (3, 56, 56) and 1 <= len(a["ref_words"]) <= 6
    for word, kind in zip(a["ref_words"], a["ref_kinds"], strict=True):
        assert (kind == BACKGROUND) or word.lower() in a["caption"].lower()
    # another epoch of the same clip draws other references/augmentations
    other = ds[4 + len(ds)]
    assert other["clip_id"] == a["clip_id"]
    assert other["ref_words"] != a["ref_words"] or not torch.equal(other["ref_images"], a["ref_images"])


def test_no_augmentation_gives_clean_references(curated_run):
    ds = tiny_dataset(curated_run, data=DataConfig(augment=False, background_prob=0.0))
    sample = ds[0]
    # a clean disc crop over white: the corners are pure white
    assert torch.allclose(sample["ref_images"][:, :, 0, 0], torch.ones(len(sample["ref_words"]), 3), atol=0.02)


def test_background_plate_augmentation_switch(curated_run):
    """frame_safe (default): no rotation/shear, so the plate never gets white corners; all: it does; none: clean."""
    from PIL import Image

    from alchemist_data.catalog import read_table
    from alchemist_model.encoders import reference_to_tensor

    def plates(mode: str) -> list[torch.Tensor]:
        ds = tiny_dataset(curated_run, data=DataConfig(background_prob=1.0, background_augment=mode))
        return [ds[k]["ref_images"][-1] for k in range(12)]

    def white_corners(image: torch.Tensor) -> bool:
        # The plate is never white; reference_to_tensor pads it to a white square above and below, so look only
        # inside the rows the plate covers (minus the resampled border row).
        white = (image > 0.97).all(dim=0)
        rows = torch.nonzero(~white.all(dim=1)).flatten()
        inside = white[int(rows[0]) + 1 : int(rows[-1]), 1:-1]
        return bool(inside[[0, -1]][:, [0, -1]].any())

    assert DataConfig().background_augment == "frame_safe"
    assert not any(white_corners(p) for p in plates("frame_safe"))
    assert any(white_corners(p) for p in plates("all"))
    clean = {}
    for row in read_table(curated_run, "backgrounds").to_pylist():
        image = np.asarray(Image.open(io.BytesIO(row["image_jpg"])).convert("RGB"))
        clean[row["clip_id"]] = reference_to_tensor(image, 56)
    ds = tiny_dataset(curated_run, data=DataConfig(background_prob=1.0, background_augment="none"))
    for k in range(3):
        torch.testing.assert_close(ds[k]["ref_images"][-1], clean[ds[k]["clip_id"]])
    with pytest.raises(ValueError, match="background_augment"):
        tiny_dataset(curated_run, data=DataConfig(background_augment="rotate"))


def test_collate_pads_references(curated_run):
    ds = tiny_dataset(curated_run)
    samples = [ds[i] for i in range(3)]
    batch = collate_samples(samples)
    counts = [len(s["ref_words"]) for s in samples]
    assert batch["video"].shape == (3, 3, 9, 48, 64)
    assert batch["ref_images"].shape[:2] == (3, max(counts))
    assert batch["ref_mask"].sum(1).tolist() == counts


def test_sampler_resumes_and_shards():
    full = ResumableSampler(5, seed=1)
    it = iter(full)
    keys = [next(it) for _ in range(12)]
    assert sorted(k % 5 for k in keys[:5]) == list(range(5))  # an epoch is a permutation
    assert [k // 5 for k in keys[:10]] == [0] * 5 + [1] * 5
    resumed = iter(ResumableSampler(5, seed=1, start=7))
    assert [next(resumed) for _ in range(5)] == keys[7:12]
    rank0 = iter(ResumableSampler(5, seed=1, rank=0, world_size=2))
    rank1 = iter(ResumableSampler(5, seed=1, rank=1, world_size=2))
    assert [next(rank0) for _ in range(3)] == keys[0:6:2]
    assert [next(rank1) for _ in range(3)] == keys[1:6:2]


@pytest.mark.slow
def test_dataloader_workers_give_the_same_samples(curated_run):
    ds = tiny_dataset(curated_run)
    batches = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(
            ds, batch_size=2, sampler=ResumableSampler(len(ds), 0), num_workers=workers, collate_fn=collate_samples
        )
        it = iter(loader)
        batches.append([next(it) for _ in range(2)])
        del it
    for a, b in zip(*batches, strict=True):
        assert a["keys"] == b["keys"] and a["ref_words"] == b["ref_words"]
        torch.testing.assert_close(a["video"], b["video"])
        torch.testing.assert_close(a["ref_images"], b["ref_images"])


def test_stage1_dataset_and_empty_run(curated_run, tmp_path):
    ds = tiny_dataset(curated_run, with_references=False)
    assert "ref_images" not in ds[0]
    with pytest.raises(ValueError, match="num_frames"):
        tiny_dataset(curated_run, **{}).__class__(curated_run, 64, 48, 8, 56)
    from alchemist_model.testing import write_tiny_curated_run

    empty = write_tiny_curated_run(tmp_path / "empty", num_clips=0)
    with pytest.raises(ValueError, match="no clips"):
        tiny_dataset(empty, with_references=False)
    assert math.isfinite(float(ds[1]["video"].mean()))


def test_face_crops_stand_in_for_subject_images_with_their_probability(tmp_path):
    cfg = DataConfig(background_prob=0.0)
    counts = {"man": ("subject", 3), "ball": ("object", 1)}
    kinds = Counter()
    for seed in range(2000):
        for slot in sample_references(np.random.default_rng(seed), counts, False, "", cfg, {"man": 2}):
            kinds[(slot.word, slot.kind)] += 1
            if slot.kind == FACE:
                assert slot.word == "man" and 0 <= slot.image_index < 2  # bound to the subject's word
    assert kinds[("ball", FACE)] == 0
    share = kinds[("man", FACE)] / (kinds[("man", FACE)] + kinds[("man", "subject")])
    assert share == pytest.approx(cfg.face_crop_prob, abs=0.03) and cfg.face_crop_prob == 0.5
    off = DataConfig(face_crop_prob=0.0)
    assert all(
        s.kind != FACE
        for seed in range(200)
        for s in sample_references(np.random.default_rng(seed), counts, False, "", off, {"man": 2})
    )
    # through the dataset: face slots decode the curated RGB face crops
    from alchemist_model.testing import write_tiny_curated_run

    run = write_tiny_curated_run(tmp_path / "faces", num_clips=2, faces=True)
    ds = tiny_dataset(run, data=DataConfig(face_crop_prob=1.0, augment=False, background_prob=0.0))
    sample = ds[0]
    subjects = {"man", "dog", "woman", "horse"}
    for word, kind, image in zip(sample["ref_words"], sample["ref_kinds"], sample["ref_images"], strict=True):
        assert kind == (FACE if word in subjects else "object")
        if kind == FACE:  # the skin-tone patch fills the square's middle
            assert torch.allclose(image[:, 28, 28], torch.tensor([224, 172, 140]) / 255.0, atol=0.02)
