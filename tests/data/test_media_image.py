"""PNG/JPEG bytes <-> arrays (alchemist_data.media.image), the one image codec of every package."""

from __future__ import annotations

import numpy as np
import pytest

from alchemist_data.benchmark_rules import rgba_crop
from alchemist_data.media import decode_image, encode_jpg, encode_png


def test_png_and_jpeg_round_trips(scene):
    img, mask = scene
    rgba = rgba_crop(img, mask, [0, 0, 60, 40])
    assert np.array_equal(decode_image(encode_png(rgba)), rgba)
    assert np.array_equal(decode_image(encode_png(img)), img)
    gray = (mask * 255).astype(np.uint8)
    assert np.array_equal(decode_image(encode_png(gray)), gray)
    assert np.array_equal(decode_image(encode_png(mask)), gray)  # bool masks are stored as viewable 0/255
    assert np.array_equal(decode_image(encode_png(mask)).astype(bool), mask)
    yy, xx = np.mgrid[:40, :60]
    smooth = np.stack([xx * 4, yy * 6, xx + yy], -1).astype(np.uint8)  # JPEG is lossy: compare a smooth image
    jpg = encode_jpg(smooth, quality=95)
    assert jpg[:2] == b"\xff\xd8"
    back = decode_image(jpg)
    assert back.shape == smooth.shape and np.abs(back.astype(int) - smooth).mean() < 3
    with pytest.raises(ValueError, match="alpha"):
        encode_jpg(rgba)


def test_decode_image_converts_to_a_requested_mode(scene):
    img, mask = scene
    rgba = rgba_crop(img, mask, [0, 0, 60, 40])
    as_rgb = decode_image(encode_png(rgba), "RGB")
    assert as_rgb.shape == (40, 60, 3) and np.array_equal(as_rgb, img)  # PIL drops alpha without compositing
    gray = decode_image(encode_png(mask), "RGB")
    assert gray.shape == (40, 60, 3) and np.array_equal(gray[..., 0], mask.astype(np.uint8) * 255)
    assert decode_image(encode_png(img), "RGBA")[..., 3].min() == 255
