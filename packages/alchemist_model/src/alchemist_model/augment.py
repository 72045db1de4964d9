"""Reference-image augmentations of spec §5.2 (Table 4), on RGBA crops (alpha = segmentation mask).

Ranges (H, W = the reference's size; h, w = the size after the random crop, which rotation and shear keep):

=================  =====  ===================================
augmentation       prob.  parameter range
=================  =====  ===================================
random crop        1.0    side scale in [0.67, 1.0] of (H, W), uniform position
horizontal flip    0.5
rotation           1.0    degrees in [-20, 20]
shear x / y        1.0    [-0.05, 0.05] x w px / [-0.05, 0.05] x h px
Gaussian blur      1.0    odd kernel in [1, max(h, w) / 50] px
downscale          1.0    scale in [112 / max(h, w), 1.0]: the result keeps a longest side of at least 112 px
brightness         1.0    factor in [0.9, 1.1]
color jitter       1.0    hue shift in [-0.05, 0.05] (fraction of the hue circle)
=================  =====  ===================================

Choices the paper leaves open (spec §5.2, §10), all documented in docs/model.md:

* Order: crop -> flip -> rotation+shear (one affine) -> blur -> downscale -> brightness -> hue. Geometry first so
  the alpha mask moves with the pixels; blur before the downscale so its kernel is relative to the crop size the
  table's range is defined on.
* Each range is computed on the size of the image it is applied to, i.e. after the crop (drawn first): a range
  taken on the size before the crop would let the downscale go below the spec's 112-px floor (a 400x300
  reference could end at 75x56) and the blur and shear exceed their fractions of the image they act on.
* Parameters are drawn independently per image from the per-sample RNG.
* Shear in pixels is the displacement of one edge relative to the opposite one: shear_x_px over the height,
  i.e. an angle atan(shear_x_px / h); bilinear interpolation; uncovered pixels become transparent (then white).
* "Downscale" returns the smaller image; the encoder's resize brings it back to its input size, so fine detail is
  lost (down-then-up resampling).
* Color jitter is a hue rotation; brightness multiplies RGB.
* Transparent pixels are filled white at the end (the benchmark pads references with white too).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

CROP_SCALE = (0.67, 1.0)
FLIP_PROB = 0.5
ROTATION_DEG = (-20.0, 20.0)
SHEAR_FRAC = (-0.05, 0.05)
BLUR_DIVISOR = 50.0
DOWNSCALE_MIN_SIDE_PX = 112.0
BRIGHTNESS = (0.9, 1.1)
HUE = (-0.05, 0.05)


@dataclass(frozen=True)
class AugmentParams:
    crop_scale: float
    crop_x: float  # left edge as a fraction of the free width
    crop_y: float
    flip: bool
    rotation_deg: float
    shear_x_px: float
    shear_y_px: float
    blur_kernel_px: int
    downscale: float
    brightness: float
    hue: float


#: Which augmentations the background plate gets (``DataConfig.background_augment``): ``all`` = the reference
#: list above; ``frame_safe`` = all but rotation and shear, which leave white corners that a clean background frame
#: (what users pass at inference) never has, while crop, flip, blur, downscale and colour still fight copy-and-paste
#: of the plate's layout, resolution and lighting; ``none`` = the plate as curated.
BACKGROUND_AUGMENT = ("all", "frame_safe", "none")


def crop_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, round(height * scale)), max(1, round(width * scale))


def sample_augment_params(rng: np.random.Generator, height: int, width: int) -> AugmentParams:
    crop_scale = float(rng.uniform(*CROP_SCALE))
    crop_h, crop_w = crop_size(height, width, crop_scale)
    longest = max(crop_h, crop_w)
    max_kernel = max(1, int(longest / BLUR_DIVISOR))
    # odd kernel sizes only: draw k in [1, max_kernel], then round down to odd
    kernel = int(rng.integers(1, max_kernel + 1))
    kernel = kernel if kernel % 2 == 1 else kernel - 1
    low_scale = min(1.0, DOWNSCALE_MIN_SIDE_PX / longest)
    return AugmentParams(
        crop_scale=crop_scale,
        crop_x=float(rng.uniform()),
        crop_y=float(rng.uniform()),
        flip=bool(rng.uniform() < FLIP_PROB),
        rotation_deg=float(rng.uniform(*ROTATION_DEG)),
        shear_x_px=float(rng.uniform(*SHEAR_FRAC) * crop_w),
        shear_y_px=float(rng.uniform(*SHEAR_FRAC) * crop_h),
        blur_kernel_px=kernel,
        downscale=float(rng.uniform(low_scale, 1.0)),
        brightness=float(rng.uniform(*BRIGHTNESS)),
        hue=float(rng.uniform(*HUE)),
    )


def background_params(params: AugmentParams, mode: str) -> AugmentParams | None:
    """The plate's share of ``params`` under ``mode`` (see ``BACKGROUND_AUGMENT``); None: leave the plate as is."""
    assert mode in BACKGROUND_AUGMENT, mode
    if mode == "none":
        return None
    if mode == "frame_safe":
        return dataclasses.replace(params, rotation_deg=0.0, shear_x_px=0.0, shear_y_px=0.0)
    return params


def apply_augment(rgba: np.ndarray, params: AugmentParams) -> np.ndarray:
    """RGBA uint8 (H, W, 4) -> augmented RGBA uint8 (h', w', 4)."""
    image = torch.from_numpy(np.array(rgba, dtype=np.uint8, copy=True)).permute(2, 0, 1)  # (4, H, W) uint8
    height, width = image.shape[1:]
    crop_h, crop_w = crop_size(height, width, params.crop_scale)
    top = int(round(params.crop_y * (height - crop_h)))
    left = int(round(params.crop_x * (width - crop_w)))
    image = image[:, top : top + crop_h, left : left + crop_w]
    if params.flip:
        image = TF.horizontal_flip(image)
    shear_x_deg = math.degrees(math.atan(params.shear_x_px / max(crop_h, 1)))
    shear_y_deg = math.degrees(math.atan(params.shear_y_px / max(crop_w, 1)))
    image = TF.affine(
        image,
        angle=params.rotation_deg,
        translate=[0, 0],
        scale=1.0,
        shear=[shear_x_deg, shear_y_deg],
        interpolation=TF.InterpolationMode.BILINEAR,
        fill=[0, 0, 0, 0],
    )
    if params.blur_kernel_px > 1:
        image = TF.gaussian_blur(image, kernel_size=[params.blur_kernel_px, params.blur_kernel_px])
    if params.downscale < 1.0:
        size = [max(1, round(crop_h * params.downscale)), max(1, round(crop_w * params.downscale))]
        image = TF.resize(image, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    rgb, alpha = image[:3], image[3:]
    rgb = TF.adjust_brightness(rgb, params.brightness)
    rgb = TF.adjust_hue(rgb, params.hue)
    return torch.cat([rgb, alpha]).permute(1, 2, 0).contiguous().numpy()
