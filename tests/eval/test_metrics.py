"""Every metric against values computed by hand, and the preprocessing against the official torchvision/PIL code."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from alchemist_eval import metrics as M

S2 = 1 / math.sqrt(2)


def test_cosine_matrix_matches_hand_values_and_zero_rows_give_zero():
    got = M.cosine_matrix([[1, 0], [1, 1], [0, 0]], [[2, 0], [0, 3]])
    np.testing.assert_allclose(got, [[1, 0], [S2, S2], [0, 0]], atol=1e-12)
    with pytest.raises(ValueError, match="embedding sizes differ"):
        M.cosine_matrix([[1, 0]], [[1, 0, 0]])


def test_text_similarity_is_the_mean_raw_cosine_over_frames():
    assert M.text_similarity(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.0, 0.0])) == pytest.approx(0.5)
    # raw cosine: negative values are kept (no clamping, no x100 / x2.5)
    assert M.text_similarity(np.array([[-1.0, 0.0]]), np.array([3.0, 0.0])) == pytest.approx(-1.0)


def test_video_similarity_is_the_mean_of_the_full_matrix_not_aligned_in_time():
    gen = np.array([[1.0, 0.0], [1.0, 1.0]])
    gt = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # rows: [1, 0, 1/sqrt2] and [1/sqrt2, 1/sqrt2, 1]
    assert M.video_similarity(gen, gt) == pytest.approx((1 + 0 + S2 + S2 + S2 + 1) / 6)


def test_subject_similarity_counts_missed_detections_as_zero():
    gt = {"man": np.array([[1.0, 0.0], [0.0, 1.0]]), "cap": np.array([[1.0, 0.0]])}
    frames = [
        {"man": np.array([1.0, 0.0]), "cap": np.array([0.0, 1.0])},  # man: mean(1, 0) = 0.5 ; cap: 0
        {"cap": np.array([2.0, 0.0])},  # man missed -> 0 ; cap: 1
    ]
    assert M.subject_similarity(frames, gt) == pytest.approx((0.5 + 0 + 0 + 1) / (2 * 2))
    # one frame, nothing detected -> 0 ; no tag at all -> NaN (not applicable)
    assert M.subject_similarity([{}], gt) == 0.0
    assert math.isnan(M.subject_similarity([{}], {}))
    # a tag without reference crops cannot be scored and is not counted
    assert M.subject_similarity(
        [{"man": np.array([1.0, 0.0])}], {"man": np.array([[1.0, 0.0]]), "hat": np.zeros((0, 2))}
    ) == pytest.approx(1.0)


def test_face_similarity_is_weighted_by_the_fraction_of_frames_with_a_face():
    gt = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert M.face_similarity(np.array([[1.0, 0.0]]), gt, num_frames=4) == pytest.approx(0.5 * 1 / 4)
    assert M.face_similarity(np.array([[1.0, 1.0], [1.0, 1.0]]), gt, num_frames=2) == pytest.approx(S2)
    assert M.face_similarity(np.zeros((0, 2)), gt, num_frames=4) == 0.0  # no face detected
    assert math.isnan(M.face_similarity(np.array([[1.0, 0.0]]), np.zeros((0, 2)), num_frames=1))  # no GT face


def test_flow_pair_score_is_the_mean_of_the_top_five_percent_magnitudes():
    flow = np.zeros((20, 20, 2))  # 400 px -> cut = int(400 * 0.05) = 20
    flow.reshape(-1, 2)[:10] = (3.0, 4.0)  # magnitude 5
    flow.reshape(-1, 2)[10:30] = (0.0, 1.0)  # magnitude 1
    assert M.flow_pair_score(flow) == pytest.approx((10 * 5 + 10 * 1) / 20)
    assert M.flow_pair_score(np.zeros((4, 4, 2))) == 0.0  # cut = 0


def test_flow_pair_score_keeps_float32_like_the_official_get_score():
    # distributed_dynamic_degree.py get_score: rad = sqrt(u^2 + v^2) on RAFT's float32 flow, then
    # np.mean(abs(np.sort(-rad_flat))[:cut_index]), all in float32
    flow = np.zeros((20, 20, 2), np.float32)  # cut = 20
    flow.reshape(-1, 2)[:20] = (0.0, 0.7)
    rad = np.sqrt(np.square(flow[:, :, 0]) + np.square(flow[:, :, 1]))
    official = np.mean(abs(np.sort(-rad.flatten()))[: int(20 * 20 * 0.05)]).item()
    assert M.flow_pair_score(flow) == official  # bit-identical, not just close
    assert M.flow_pair_score(flow) == pytest.approx(0.7, abs=1e-6)
    assert M.flow_pair_score(flow.astype(np.float64)) == pytest.approx(0.7, abs=1e-6)


@pytest.mark.parametrize(("fps", "interval"), [(24, 3), (8, 1), (12, 2), (20, 2), (30, 4), (16, 2), (3, 1)])
def test_dynamic_interval_uses_pythons_round(fps, interval):
    assert M.dynamic_interval(fps) == interval


def test_dynamic_threshold_and_count_rules():
    assert M.dynamic_threshold(288, 512) == pytest.approx(6.75)
    assert M.dynamic_threshold(256, 256) == pytest.approx(6.0)
    # 5 sampled frames -> count_num = round(1.25) = 1: one pair strictly above thr is enough
    assert M.is_dynamic([0, 0, 7, 0], 6.75, 5)
    assert not M.is_dynamic([0, 0, 6.75, 0], 6.75, 5)  # strictly greater
    # 6 sampled frames -> round(1.5) = 2
    assert not M.is_dynamic([7, 0, 0, 0, 0], 6.75, 6)
    assert M.is_dynamic([7, 0, 0, 0, 8], 6.75, 6)
    # quirks of check_move kept: 1 frame (no pair) is static; 2 frames -> round(0.5) = 0 -> dynamic
    assert not M.is_dynamic([], 6.0, 1)
    assert M.is_dynamic([0.0], 6.0, 2)
    # 16 frames at 24 fps: 6 sampled -> 5 pairs, needs 2 moving pairs
    idx = M.dynamic_sample_indices(16, 24)
    assert idx == [0, 3, 6, 9, 12, 15]
    assert M.dynamic_degree([9, 9, 0, 0, 0], 288, 512) == 1
    assert M.dynamic_degree([9, 0, 0, 0, 0], 288, 512) == 0


def _official_resize_normalize(img: Image.Image, mean, std, center_crop: bool):
    """The official pipelines' common tail: bicubic 224 px resize (CLIP's adds a center crop), tensor, normalise."""
    import torchvision.transforms as T

    crop = [T.CenterCrop((224, 224))] if center_crop else []
    resize = T.Resize((224, 224), interpolation=T.InterpolationMode.BICUBIC)
    return T.Compose([resize, *crop, T.ToTensor(), T.Normalize(mean, std)])(img).numpy()


def _official_clip(pil: Image.Image):
    import torchvision.transforms.functional as TF

    s = min(pil.size)
    return _official_resize_normalize(TF.center_crop(pil, (s, s)), M.CLIP_MEAN, M.CLIP_STD, center_crop=True)


def _official_pad_to_square_dino(img: Image.Image):
    """The official white square padding, bicubic 224 px resize and ImageNet normalisation: the same steps in
    ``pil_to_tensor(square_mode="padding")`` and ``load_subject_image_dino``."""
    width, height = img.size
    if width == height:
        padded = img
    elif width > height:
        padded = Image.new(img.mode, (width, width), color=(255, 255, 255))
        padded.paste(img, (0, (width - height) // 2))
    else:
        padded = Image.new(img.mode, (height, height), color=(255, 255, 255))
        padded.paste(img, ((height - width) // 2, 0))
    return _official_resize_normalize(padded, M.IMAGENET_MEAN, M.IMAGENET_STD, center_crop=False)


def _official_dino_from_rgba(pil_rgba: Image.Image):
    arr = np.array(pil_rgba)
    arr[arr[:, :, 3] == 0] = [255, 255, 255, 255]
    return _official_pad_to_square_dino(Image.fromarray(arr[:, :, :3], mode="RGB"))


@pytest.mark.parametrize("size", [(97, 160), (160, 97), (64, 64)])
def test_clip_preprocess_matches_the_official_transform(size):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
    np.testing.assert_allclose(M.clip_preprocess(frame), _official_clip(Image.fromarray(frame)), atol=1e-5)


@pytest.mark.parametrize("size", [(30, 51), (51, 30)])
def test_dino_reference_preprocess_matches_the_official_transform(size):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 255, size=(*size, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(rng.random(size) > 0.5, 255, 0)
    rgba[0, 0, 3] = 7  # partially transparent pixels keep their colour (only alpha == 0 turns white)
    np.testing.assert_allclose(
        M.dino_preprocess_rgba(rgba), _official_dino_from_rgba(Image.fromarray(rgba)), atol=1e-5
    )


def _official_subject_dino(image: np.ndarray, box_xyxy: list[int], mask: np.ndarray):
    """``load_subject_image_dino`` written out literally, as the oracle."""
    cropped = image[box_xyxy[1] : box_xyxy[3], box_xyxy[0] : box_xyxy[2]]
    mask = mask[..., None]
    masked = Image.fromarray(
        (mask * cropped + (1 - mask) * np.ones_like(cropped, dtype=np.uint8) * 255).astype(np.uint8)
    )
    return _official_pad_to_square_dino(masked)


@pytest.mark.parametrize(
    "box",
    [
        [10, 5, 50, 30],  # inside the frame
        [40, 20, 66, 46],  # 2 px off the right edge (within the validity tolerance)
        [20, 5, 20, 30],  # zero width after truncation: valid for the benchmark, an all-white subject
        [10, 12, 50, 12],  # zero height
        [20, 12, 20, 12],  # no side at all: PIL resizes the 0x0 image to black
    ],
)
def test_generated_subject_preprocess_matches_the_official_transform(box):
    from alchemist_data.benchmark_rules import crop_to_box, is_valid_mask_for_box

    rng = np.random.default_rng(2)
    frame = rng.integers(0, 255, size=(46, 64, 3), dtype=np.uint8)
    full_mask = rng.random((46, 64)) > 0.4  # SAM's mask is full-frame; the benchmark crops it to the box
    box_mask = crop_to_box(full_mask, box)
    assert is_valid_mask_for_box(full_mask, box)
    np.testing.assert_allclose(
        M.dino_preprocess_masked(frame, box, box_mask), _official_subject_dino(frame, box, box_mask), atol=1e-5
    )


def test_face_preprocess_is_cv2_resize_to_112_and_minus_one_to_one():
    out = M.face_preprocess(np.full((40, 25, 3), 255, np.uint8))
    assert out.shape == (3, 112, 112) and np.allclose(out, 1.0)
    assert np.allclose(M.face_preprocess(np.zeros((5, 9, 3), np.uint8)), -1.0)


def test_nanmean_ignores_not_applicable_values():
    assert M.nanmean([1.0, None, float("nan"), 0.0]) == 0.5
    assert M.nanmean([None]) is None
