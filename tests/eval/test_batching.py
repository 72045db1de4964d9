"""The batched scorer's shortcuts give the per-frame protocol's exact values (they only change how work is grouped)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alchemist_eval import metrics as M


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
