"""Background plate: remove the foreground from the middle frame (spec §2.4).

The SD2 settings mirror the benchmark's ``prepare_msrvtt_personalization_data.py`` (tsaishien-chen/VideoAlchemy):
``stabilityai/stable-diffusion-2-inpainting`` at 512x512 with prompt "clean and empty background", the negative
prompt, guidance 12.0; output resized back and composited (inpainted inside the mask, original outside). Unlike the
benchmark, the generator is seeded so plates are reproducible. The mask to fill is the benchmark's foreground rule,
:func:`alchemist_data.benchmark_rules.foreground_mask`.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from alchemist_data.models.base import LazyModel, ModelLoadError, check_local_path, check_rgb, offline_hint
from alchemist_data.models.configs import BackgroundConfig


def _check(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = check_rgb(image)
    m = np.asarray(mask).astype(bool)
    if m.shape != img.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match the image's {img.shape[:2]}")
    return img, m


class Inpainter(LazyModel):
    """Base: ``setup()`` loads once; ``inpaint(image, mask, prompt)`` -> RGB uint8 with the masked area filled."""

    name = "inpainter"

    @abstractmethod
    def _inpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str | None) -> np.ndarray:
        """Fill ``mask`` in ``image``."""

    def inpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str | None = None) -> np.ndarray:
        self.setup()
        img, m = _check(image, mask)
        if not m.any():
            return img.copy()
        return self._inpaint(img, m, prompt)


class OpenCVInpainter(Inpainter):
    """OpenCV Telea inpainting (``cv2.INPAINT_TELEA``), the offline stand-in for Stable Diffusion.

    ``radius_px`` (default 5) is the neighbourhood each filled pixel is estimated from; a few pixels suffices
    because the dilated mask already clears SAM's imprecise boundary. The prompt is ignored.
    """

    name = "opencv"

    def __init__(self, radius_px: int = 5, device: str = "cpu") -> None:
        super().__init__(device=device)
        self.radius_px = radius_px

    def _load(self) -> None:
        import cv2  # noqa: F401  (fail at setup, not mid-job, if OpenCV is missing)

    def _inpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str | None) -> np.ndarray:
        import cv2

        return cv2.inpaint(np.ascontiguousarray(image), mask.astype(np.uint8) * 255, self.radius_px, cv2.INPAINT_TELEA)


@dataclass(eq=False)
class SD2Inpainter(Inpainter):
    """diffusers ``StableDiffusionInpaintPipeline`` (hub id or local dir), benchmark settings, seeded.

    ``prompt`` passed to :meth:`inpaint` replaces the configured prompt (the paper uses the background entity word;
    the benchmark uses "clean and empty background", the default). fp16 on CUDA, fp32 otherwise.
    """

    name = "sd2"

    # The benchmark's settings are written once, as BackgroundConfig's defaults; the fields keep the order of the
    # positional arguments (model first).
    model: str = BackgroundConfig.model
    device: str = "cpu"
    prompt: str = BackgroundConfig.prompt
    negative_prompt: str = BackgroundConfig.negative_prompt
    guidance_scale: float = BackgroundConfig.guidance_scale
    num_inference_steps: int = BackgroundConfig.num_inference_steps
    seed: int = BackgroundConfig.seed
    size: int = 512

    def __post_init__(self) -> None:
        super().__init__(device=self.device)
        self.pipe: Any = None

    def _load(self) -> None:
        import torch
        from diffusers import StableDiffusionInpaintPipeline

        check_local_path(self.model, "inpainting pipeline directory")
        dtype = torch.float16 if str(self.device).startswith("cuda") else torch.float32
        try:
            pipe = StableDiffusionInpaintPipeline.from_pretrained(
                self.model, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False
            )
        except (OSError, ValueError) as exc:
            what = f"the inpainting pipeline {self.model!r}"
            raise ModelLoadError(offline_hint(what, exc, instead="a local directory or a cached hub id")) from exc
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)

    def _inpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str | None) -> np.ndarray:
        import torch
        from PIL import Image

        H, W = image.shape[:2]
        pil_image = Image.fromarray(image).resize((self.size, self.size))
        pil_mask = Image.fromarray(mask.astype(np.uint8) * 255).resize((self.size, self.size))
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        result = self.pipe(
            prompt=[prompt if prompt else self.prompt],
            image=pil_image,
            mask_image=pil_mask,
            negative_prompt=[self.negative_prompt],
            guidance_scale=self.guidance_scale,
            num_inference_steps=self.num_inference_steps,
            height=self.size,
            width=self.size,
            generator=generator,
        ).images[0]
        inpainted = np.asarray(result.resize((W, H)).convert("RGB"), dtype=np.float64)
        alpha = mask.astype(np.float64)[..., None]
        combined = inpainted * alpha + image.astype(np.float64) * (1.0 - alpha)
        return np.clip(np.round(combined), 0, 255).astype(np.uint8)


def build_inpainter(cfg: Any, device: str = "cpu") -> Inpainter:
    """Inpainter from a ``BackgroundConfig`` (backend ``opencv`` or ``sd2``)."""
    if cfg.backend == "opencv":
        return OpenCVInpainter(device=device)
    if cfg.backend == "sd2":
        settings = ("model", "prompt", "negative_prompt", "guidance_scale", "num_inference_steps", "seed")
        return SD2Inpainter(device=device, **{name: getattr(cfg, name) for name in settings})
    raise ValueError(f"unknown background backend {cfg.backend!r}; choose 'opencv' or 'sd2'")
