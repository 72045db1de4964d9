"""Reference crops (RGBA, alpha = mask), white fill, centred square padding."""

from __future__ import annotations

import numpy as np
import pytest

from alchemist_data.crops import (
    face_crop,
    mask_crop,
    pad_to_square,
    rgba_crop,
    subject_square,
    white_fill,
)


@pytest.fixture()
def scene():
    rng = np.random.RandomState(0)
    img = (rng.rand(40, 60, 3) * 200 + 20).astype(np.uint8)  # never pure white
    mask = np.zeros((40, 60), bool)
    mask[10:30, 20:35] = True
    return img, mask


def test_rgba_crop_alpha_is_mask(scene):
    img, mask = scene
    box = [15, 5, 45, 35]
    crop = rgba_crop(img, mask, box)
    assert crop.shape == (30, 30, 4) and crop.dtype == np.uint8
    assert np.array_equal(crop[..., :3], img[5:35, 15:45])
    assert np.array_equal(crop[..., 3] == 255, mask[5:35, 15:45])
    assert set(np.unique(crop[..., 3])) == {0, 255}
    # a mask already cropped to the box (the benchmark's stored form) gives the same result
    assert np.array_equal(rgba_crop(img, mask_crop(mask, box), box), crop)


def test_crops_clip_boxes_to_the_frame(scene):
    img, mask = scene
    crop = rgba_crop(img, mask, [-5, -3, 10, 8])
    assert crop.shape == (8, 10, 4) and np.array_equal(crop[..., :3], img[:8, :10])
    assert face_crop(img, [50, 30, 70, 50]).shape == (10, 10, 3)
    with pytest.raises(ValueError, match="no area"):
        rgba_crop(img, mask, [70, 0, 80, 10])


def test_white_fill_keeps_mask_and_whitens_the_rest(scene):
    img, mask = scene
    rgb = white_fill(rgba_crop(img, mask, [0, 0, 60, 40]))
    assert rgb.shape == (40, 60, 3)
    assert np.array_equal(rgb[mask], img[mask])
    assert (rgb[~mask] == 255).all()
    half = np.zeros((1, 1, 4), np.uint8)
    half[0, 0] = (0, 100, 200, 128)  # partial alpha composites over white
    assert white_fill(half)[0, 0].tolist() == [127, 177, 227]
    with pytest.raises(ValueError, match="RGBA"):
        white_fill(img)


def test_pad_to_square_centres_like_the_benchmark():
    wide = np.zeros((3, 8, 3), np.uint8)
    sq = pad_to_square(wide)
    assert sq.shape == (8, 8, 3)
    top = (8 - 3) // 2  # PIL paste offset used by the benchmark
    assert (sq[top : top + 3] == 0).all() and (sq[:top] == 255).all() and (sq[top + 3 :] == 255).all()
    tall = np.zeros((7, 2), np.uint8)
    sq = pad_to_square(tall, fill=9)
    assert sq.shape == (7, 7) and (sq[:, 2:4] == 0).all() and (sq[:, :2] == 9).all() and (sq[:, 4:] == 9).all()
    rgba = np.full((2, 4, 4), 50, np.uint8)
    sq = pad_to_square(rgba)
    assert (sq[0, :, 3] == 0).all() and (sq[1, :, 3] == 50).all()  # padding is transparent


def test_subject_square(scene):
    img, mask = scene
    sq = subject_square(img, [15, 5, 45, 25], mask)
    assert sq.shape == (30, 30, 3)
    # 30x20 crop centred vertically: 5 white rows above
    assert (sq[:5] == 255).all()
    assert np.array_equal(sq[5 + 5, 10], img[10, 25])  # inside the mask: original pixel
