"""Fixtures shared by the data tests."""

import numpy as np
import pytest


@pytest.fixture()
def scene():
    """``(img, mask)``: a 60x40 RGB noise image that is never pure white, and a rectangular subject mask in it."""
    rng = np.random.RandomState(0)
    img = (rng.rand(40, 60, 3) * 200 + 20).astype(np.uint8)  # never pure white
    mask = np.zeros((40, 60), bool)
    mask[10:30, 20:35] = True
    return img, mask
