"""The settings of each vision model (torch-free, so profiles and the CLI import them cheaply).

Each is also its curation stage's config (a :class:`~alchemist_data.config.StageConfig`: Ray resources and batch
size) and the eval scorer's model settings. Which values each profile uses is in :mod:`alchemist_data.models.presets`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from alchemist_data.config import StageConfig
from alchemist_data.models.base import check_local_path


@dataclass(kw_only=True)
class GroundingConfig(StageConfig):
    backend: str = "hf"  # hf (transformers GroundingDino) | gdino_py (groundingdino-py)
    model: str = "IDEA-Research/grounding-dino-tiny"  # hf: hub id or local dir; "random-small"/"random-tiny"
    config_file: str = ""  # gdino_py: GroundingDINO_SwinT_OGC.py (empty = the one shipped in the package)
    checkpoint: str = ""  # gdino_py: groundingdino_swint_ogc.pth
    text_encoder: str = "bert-base-uncased"  # gdino_py: hub id or local BERT dir
    box_threshold: float = 0.4  # spec §7.3
    batch_size: int = 8
    choices = {"grounding.backend": ("hf", "gdino_py")}

    def validate(self) -> None:
        super().validate()
        if self.backend == "gdino_py":
            check_gdino_text_encoder(self.text_encoder)


@dataclass(kw_only=True)
class SegmentationConfig(StageConfig):
    backend: str = "sam"  # sam (segment-anything) | hf (transformers SamModel)
    model_type: str = "vit_b"  # sam: vit_b | vit_l | vit_h | random-small | random-tiny
    checkpoint: str = ""  # sam: sam_vit_b_01ec64.pth ; hf: hub id or local dir
    iou_threshold: float = 0.9  # spec §7.3: keep the mask if SAM's predicted IoU > threshold
    box_tolerance_px: int = 3  # spec §7.3 validity check (benchmark_rules.is_valid_mask_for_box)
    batch_size: int = 8
    choices = {"segmentation.backend": ("sam", "hf")}


@dataclass(kw_only=True)
class FacesConfig(StageConfig):
    backend: str = "mtcnn"  # mtcnn (facenet-pytorch, real weights in the wheel) | yolo | none
    checkpoint: str = ""  # yolo: a YOLO face checkpoint (e.g. yolov9-c face best.pt)
    min_score: float = 0.2  # spec §7.3 uses conf 0.2 for the YOLO face detector
    choices = {"faces.backend": ("mtcnn", "yolo", "none")}


@dataclass(kw_only=True)
class BackgroundConfig(StageConfig):
    backend: str = "opencv"  # opencv (Telea) | sd2 (diffusers SD2 inpainting)
    model: str = "stabilityai/stable-diffusion-2-inpainting"
    # The paper prompts the inpainter with the background entity word; the benchmark's prep uses a fixed prompt
    # (spec §2.4). entity_word falls back to `prompt` when the caption has no background word.
    prompt_source: str = "entity_word"  # entity_word | fixed
    prompt: str = "clean and empty background"
    negative_prompt: str = "any human or any object, complex pattern and texture"
    guidance_scale: float = 12.0
    num_inference_steps: int = 50
    seed: int = 0
    dilate_kernel_px: int = 4  # 4x4 ones kernel, 3 iterations, then binary_fill_holes (spec §2.4)
    dilate_iterations: int = 3
    batch_size: int = 4
    choices = {"background.backend": ("opencv", "sd2"), "background.prompt_source": ("entity_word", "fixed")}


# Text encoders groundingdino-py's get_pretrained_language_model builds; any other hub id makes it raise a bare
# ValueError deep inside build_model.
GDINO_TEXT_ENCODERS = ("bert-base-uncased", "roberta-base")


def check_gdino_text_encoder(text_encoder: str) -> None:
    """``grounding.text_encoder`` must be a hub id groundingdino-py knows or a local directory (a clear error
    otherwise, before any model is built)."""
    if text_encoder in GDINO_TEXT_ENCODERS:
        return
    check_local_path(text_encoder, "grounding.text_encoder directory")
    if not os.path.isdir(os.path.expanduser(text_encoder)):
        raise ValueError(
            f"grounding.text_encoder={text_encoder!r}: groundingdino-py loads only the hub id 'bert-base-uncased' "
            "(the benchmark's) or a local BERT directory (e.g. `huggingface-cli download bert-base-uncased "
            "--local-dir DIR`, then --set grounding.text_encoder=DIR)"
        )
