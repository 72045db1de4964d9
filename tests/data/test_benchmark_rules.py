"""The benchmark's rules (alchemist_data.benchmark_rules) by hand: mask validity, keep/drop reasons, face-box
extension, white fill, square padding, the masked, reference and face crops. Box selection is in test_grounding.py,
the foreground mask in test_background.py, and the DINO inputs against the official transforms in tests/eval."""

from __future__ import annotations

import numpy as np
import pytest

from alchemist_data.benchmark_rules import (
    crop_to_box,
    extend_face_box,
    face_crop,
    is_valid_mask_for_box,
    mask_drop_reason,
    masked_subject_crop,
    pad_to_square,
    paste_box_mask,
    rgba_crop,
    white_where_alpha_zero,
)

H, W = 60, 80


# ----------------------------------------------------------------------------------------------------- mask validity


def test_validity_box_inside_image():
    mask = np.zeros((H, W), bool)
    assert is_valid_mask_for_box(mask, [10, 10, 50, 40])
    assert is_valid_mask_for_box(mask, [0, 0, W, H])


@pytest.mark.parametrize(
    "box, valid",
    [
        ([50, 10, W + 3, 40], True),  # 3 px off the right edge: mask 3 px narrower -> within tolerance
        ([50, 10, W + 4, 40], False),  # 4 px off -> rejected
        ([10, 30, 50, H + 3], True),  # 3 px off the bottom
        ([10, 30, 50, H + 4], False),
        ([50, 30, W + 1, H + 1], False),  # short on BOTH sides -> rejected even by 1 px
        ([-2, 10, 50, 40], False),  # negative start: numpy slice wraps around -> wrong size -> rejected
        ([10, 40, 50, 30], False),  # y1 < y0: the slice is empty but the box height is negative
    ],
)
def test_validity_tolerance_edges(box, valid):
    assert is_valid_mask_for_box(np.ones((H, W), bool), box) is valid
    assert is_valid_mask_for_box(np.ones((H, W), bool), box, allow_empty_box=False) is valid


@pytest.mark.parametrize("box", [[10, 10, 10, 40], [10, 25, 50, 25], [10, 10, 10, 10], [-1, 10, 2, 40]])
def test_box_without_pixels_is_valid_for_the_benchmark_but_not_for_curation(box):
    # x0 == x1 after truncation (a sub-pixel GroundingDINO box): the official check compares 0 == 0 and passes; a box
    # starting at -1 slices nothing and is within the 3 px tolerance. Curation refuses both (nothing to crop).
    mask = np.ones((H, W), bool)
    assert crop_to_box(mask, box).size == 0
    assert is_valid_mask_for_box(mask, box)
    assert not is_valid_mask_for_box(mask, box, allow_empty_box=False)
    assert mask_drop_reason(0.95, mask, box) is None
    assert mask_drop_reason(0.95, mask, box, allow_empty_box=False) == "empty_box"


def test_validity_allows_three_pixels_on_one_side_only():
    # the official check on a 20x10 box whose mask slice is cut by the frame's edge: 20, 17 wide pass; 16 fails;
    # one row short AND one column short fails
    box = [10, 10, 30, 20]
    assert is_valid_mask_for_box(np.zeros((20, 30)), box)
    assert is_valid_mask_for_box(np.zeros((20, 27)), box)
    assert not is_valid_mask_for_box(np.zeros((20, 26)), box)
    assert not is_valid_mask_for_box(np.zeros((19, 29)), box)


def test_custom_tolerance_and_drop_reasons_in_the_benchmark_order():
    mask = np.zeros((H, W), bool)
    off = [50, 10, W + 5, 40]
    assert not is_valid_mask_for_box(mask, off)
    assert is_valid_mask_for_box(mask, off, tolerance_px=5)
    assert mask_drop_reason(0.95, mask, [10, 10, 50, 40], iou_threshold=0.9) is None
    assert mask_drop_reason(0.9, mask, [10, 10, 50, 40], iou_threshold=0.9) == "low_mask_iou"  # strictly greater
    assert mask_drop_reason(0.95, mask, off, iou_threshold=0.9) == "invalid_box"
    assert mask_drop_reason(0.5, mask, off, iou_threshold=0.9) == "low_mask_iou"  # the IoU is checked first
    assert mask_drop_reason(0.95, mask, off, tolerance_px=5) is None


# ------------------------------------------------------------------------------------------------ face boxes and crops


def test_extend_face_box_by_hand():
    # h = 100: top 100 - 17 = 83; new height 203 - 83... bottom = int(200 + 0.03 * (200 - 83)) = int(203.51) = 203
    assert extend_face_box([100, 100, 200, 200], 640, 1000) == [100, 83, 200, 203]
    assert extend_face_box([10, 100, 60, 200], 640, 480) == [10, 83, 60, 203]
    # truncation: y0 = int(31 - 0.17 * 20) = int(27.6) = 27; y1 = int(51 + 0.03 * 24) = int(51.72) = 51
    assert extend_face_box([10, 31, 30, 51], 640, 480) == [10, 27, 30, 51]


def test_extend_face_box_clips_to_image():
    # top: int(5 - 6.8) = int(-1.8) = -1 -> 0; bottom: int(45 + 0.03 * 45) = 46 -> clipped to H - 1 = 45
    assert extend_face_box([10, 5, 50, 45], 60, 46) == [10, 0, 50, 45]
    assert extend_face_box([0, 0, 10, 470], 640, 480)[1::2] == [0, 479]
    assert extend_face_box([-3, 10, 70, 20], 60, 100)[::2] == [0, 60]


def test_face_crop_is_the_unmasked_box(scene):
    img, _ = scene
    assert np.array_equal(face_crop(img, [5, 2, 15, 12]), img[2:12, 5:15])
    assert face_crop(img, [50, 30, 70, 50]).shape == (10, 10, 3)  # overhang cut, as a numpy slice cuts it


# ------------------------------------------------------------------------------------------------ reference crops


def test_rgba_crop_alpha_is_mask(scene):
    img, mask = scene
    box = [15, 5, 45, 35]
    crop = rgba_crop(img, crop_to_box(mask, box), box)
    assert crop.shape == (30, 30, 4) and crop.dtype == np.uint8
    assert np.array_equal(crop[..., :3], img[5:35, 15:45])
    assert np.array_equal(crop[..., 3] == 255, mask[5:35, 15:45])
    assert set(np.unique(crop[..., 3])) == {0, 255}


def test_rgba_crop_fits_the_mask_to_the_slice_like_the_benchmark(scene):
    img, mask = scene
    box = [50, 30, 70, 50]  # runs 10 px off the right and bottom edges: the slice is 10x10
    crop = rgba_crop(img, np.ones((20, 20), bool), box)  # the stored mask is larger: cut to the slice
    assert crop.shape == (10, 10, 4) and (crop[..., 3] == 255).all()
    small = rgba_crop(img, np.ones((8, 9), bool), box)  # smaller: padded with "outside the mask"
    assert small[:8, :9, 3].all() and not small[8:, :, 3].any() and not small[:, 9:, 3].any()


def test_rgba_crop_slices_like_numpy_and_refuses_empty_crops(scene):
    # The copies disagreed on negative starts: curation's clipped them to the frame, the benchmark's numpy slice
    # wraps around. The official slice is kept: [-5, -3, 10, 8] selects rows 37:8, nothing.
    img, mask = scene
    with pytest.raises(ValueError, match="no pixels"):
        rgba_crop(img, mask, [-5, -3, 10, 8])
    with pytest.raises(ValueError, match="no pixels"):
        rgba_crop(img, mask, [70, 0, 80, 10])
    with pytest.raises(ValueError, match="RGB"):
        rgba_crop(img[..., 0], mask, [0, 0, 5, 5])


def test_paste_box_mask_is_the_inverse_of_crop_to_box(scene):
    _, mask = scene
    box = [15, 5, 45, 35]
    assert np.array_equal(paste_box_mask(crop_to_box(mask, box), box, mask.shape), mask)
    # a larger stored mask is cut at the frame's edge, a 0/255 gray PNG counts as a mask
    full = paste_box_mask(np.full((30, 30), 255, np.uint8), [50, 30, 80, 60], (40, 60, 3))
    assert full.dtype == bool and full.sum() == 100 and full[30:, 50:].all()


# ------------------------------------------------------------------------------------------------ subject images


def test_white_where_alpha_zero_keeps_partly_transparent_pixels(scene):
    img, mask = scene
    box = [0, 0, 60, 40]
    rgb = white_where_alpha_zero(rgba_crop(img, mask, box))
    assert rgb.shape == (40, 60, 3)
    assert np.array_equal(rgb[mask], img[mask])
    assert (rgb[~mask] == 255).all()
    rgba = np.zeros((2, 4, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)
    rgba[1, 1] = (10, 20, 30, 1)
    out = white_where_alpha_zero(rgba)
    assert out[0, 0].tolist() == [255, 255, 255] and out[1, 1].tolist() == [10, 20, 30]
    # The copies disagreed on partial alpha: curation's alpha-composited over white ([127, 177, 227]); the
    # benchmark's add_white_background only whitens alpha == 0, so the colour is kept.
    half = np.zeros((1, 1, 4), np.uint8)
    half[0, 0] = (0, 100, 200, 128)
    assert white_where_alpha_zero(half)[0, 0].tolist() == [0, 100, 200]
    with pytest.raises(ValueError, match="RGBA"):
        white_where_alpha_zero(img)


def test_pad_to_square_centres_like_the_benchmark():
    wide = np.zeros((3, 8, 3), np.uint8)
    sq = pad_to_square(wide)
    assert sq.shape == (8, 8, 3)
    top = (8 - 3) // 2  # PIL paste offset used by the benchmark
    assert (sq[top : top + 3] == 0).all() and (sq[:top] == 255).all() and (sq[top + 3 :] == 255).all()
    sq = pad_to_square(np.zeros((2, 4, 3), np.uint8))
    assert sq.shape == (4, 4, 3) and (sq[1:3] == 0).all() and (sq[0] == 255).all() and (sq[3] == 255).all()
    tall = np.zeros((7, 2), np.uint8)
    sq = pad_to_square(tall, fill=9)
    assert sq.shape == (7, 7) and (sq[:, 2:4] == 0).all() and (sq[:, :2] == 9).all() and (sq[:, 4:] == 9).all()
    rgba = np.full((2, 4, 4), 50, np.uint8)
    sq = pad_to_square(rgba)
    assert (sq[0, :, 3] == 0).all() and (sq[1, :, 3] == 50).all()  # padding is transparent
    # an empty side: all padding; 0x0 stays 0x0 (as PIL's paste leaves it)
    assert (pad_to_square(np.zeros((5, 0, 3), np.uint8)) == 255).all() and pad_to_square(wide[:0, :0]).shape[0] == 0


def test_masked_subject_crop_whitens_outside_the_mask(scene):
    frame = np.full((10, 10, 3), 7, np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    crop = masked_subject_crop(frame, [2, 2, 6, 6], mask)
    assert crop.shape == (4, 4, 3) and (crop[1:3, 1:3] == 7).all() and crop[0, 0].tolist() == [255, 255, 255]
    # crop, white outside the mask, white square: the benchmark's subject image before DINO's resize
    img, full = scene
    box = [15, 5, 45, 25]
    sq = pad_to_square(masked_subject_crop(img, box, crop_to_box(full, box)))
    assert sq.shape == (30, 30, 3)
    assert (sq[:5] == 255).all()  # a 30x20 crop centred vertically: 5 white rows above
    assert np.array_equal(sq[5 + 5, 10], img[10, 25])  # inside the mask: the original pixel
    # a box without area gives an empty crop, which the square padding makes all white
    empty = masked_subject_crop(img, [20, 5, 20, 25], crop_to_box(full, [20, 5, 20, 25]))
    assert empty.shape == (20, 0, 3)
    assert pad_to_square(empty).shape == (20, 20, 3) and (pad_to_square(empty) == 255).all()
