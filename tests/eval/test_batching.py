"""The batched scorer's shortcuts give the per-frame protocol's exact values (they only change how work is grouped)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from alchemist_eval import metrics as M
from alchemist_eval.models import BatchedSam, get_eval_config

from .conftest import moving_frames


def _official_to_tensor_normalize(img: np.ndarray, mean, std) -> np.ndarray:
    # torchvision's ToTensor (float, / 255) then Normalize (sub_ mean, div_ std), as the official transforms
    x = torch.from_numpy(img).permute(2, 0, 1).contiguous().float().div(255)
    return x.sub_(torch.tensor(mean).view(3, 1, 1)).div_(torch.tensor(std).view(3, 1, 1)).numpy()


@pytest.mark.parametrize("mean_std", [(M.CLIP_MEAN, M.CLIP_STD), (M.IMAGENET_MEAN, M.IMAGENET_STD)])
def test_lookup_table_normalisation_is_bit_identical(mean_std):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (31, 17, 3), dtype=np.uint8) for _ in range(3)]
    images[0][:2, :2] = [[0, 255, 128], [1, 254, 127]]  # the extreme values
    out = M.normalize_batch(images, *mean_std)
    assert out.dtype == np.float32 and out.shape == (3, 3, 31, 17)
    for got, img in zip(out, images, strict=True):
        np.testing.assert_array_equal(got, _official_to_tensor_normalize(img, *mean_std))


def test_batched_sam_gives_the_per_frame_predictor_masks():
    from alchemist_data.segmentation import build_segmenter

    segmenter = build_segmenter(get_eval_config("tiny").segmentation)
    segmenter.setup()
    frames = list(moving_frames(5, h=72, w=100))
    boxes = [[[10, 5, 60, 50], [30, 20, 95, 70]], [], [[0, 0, 99, 71]], [[20, 10, 40, 30]],
             [[5, 5, 50, 60], [1, 2, 3, 4]]]
    per_frame = [segmenter.segment(f, b) if b else [] for f, b in zip(frames, boxes, strict=True)]
    for batch_size in (1, 2, 16):
        got = BatchedSam(segmenter, batch_size).segment_many(frames, boxes)
        assert [len(g) for g in got] == [len(b) for b in boxes]
        for ref, out in zip(per_frame, got, strict=True):
            for a, b in zip(ref, out, strict=True):
                np.testing.assert_array_equal(a.mask, b.mask)
                assert b.iou_score == pytest.approx(a.iou_score, abs=1e-5)
    with pytest.raises(ValueError, match="RGB uint8"):
        BatchedSam(segmenter, 4).segment_many([frames[0].astype(np.float32)], [[[0, 0, 5, 5]]])
