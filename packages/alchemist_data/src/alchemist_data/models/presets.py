"""The vision models of each profile (``paper`` | ``offline`` | ``tiny``), in one place for curation and evaluation.

Curation's profiles (``alchemist_data.profiles``) and the Subj-S / Face-S scorer (``alchemist_eval.models``) take
their GroundingDINO, SAM, face-detector and inpainter settings from :func:`vision_models`, so the benchmark's
models and thresholds are written once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from alchemist_data.config import Resources
from alchemist_data.models.configs import BackgroundConfig, FacesConfig, GroundingConfig, SegmentationConfig

PROFILE_NAMES = ("paper", "offline", "tiny")


@dataclass(kw_only=True)
class VisionModels:
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    device: str = "cpu"


def paper_checkpoint(model: str, default: str) -> str:
    """A ``paper`` checkpoint path: ``$ALCHEMIST_<MODEL>_CHECKPOINT`` when set, else ``default``."""
    return os.environ.get(f"ALCHEMIST_{model}_CHECKPOINT", default)


def vision_models(profile: str) -> VisionModels:
    """Fresh configs for ``profile`` (callers may change them). Checkpoint paths of ``paper`` come from the
    ``ALCHEMIST_*_CHECKPOINT`` environment variables when set (:func:`paper_checkpoint`)."""
    if profile == "paper":
        gpu = Resources(cpus=1, gpus=1)
        batched_on_gpu = {"batch_size": 8, "resources": gpu}
        return VisionModels(
            grounding=GroundingConfig(
                backend="gdino_py",
                checkpoint=paper_checkpoint("GDINO", "groundingdino_swint_ogc.pth"),
                **batched_on_gpu,
            ),
            segmentation=SegmentationConfig(
                backend="sam",
                model_type="vit_b",
                checkpoint=paper_checkpoint("SAM", "sam_vit_b_01ec64.pth"),
                **batched_on_gpu,
            ),
            faces=FacesConfig(
                backend="yolo", checkpoint=paper_checkpoint("YOLO_FACE", "yolov9-c-face.pt"), resources=gpu
            ),
            background=BackgroundConfig(backend="sd2", resources=gpu),
            device="cuda",
        )
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
    # offline and tiny: random GroundingDINO and SAM (small or tiny), OpenCV inpainting; offline keeps MTCNN faces.
    # Why thresholds are 0 there: random weights give meaningless scores, and the paper's 0.4 / 0.9 would drop every
    # box, leaving the downstream stages untested. The paper profile keeps the benchmark's values.
    size = "random-small" if profile == "offline" else "random-tiny"
    return VisionModels(
        grounding=GroundingConfig(backend="hf", model=size, box_threshold=0.0),
        segmentation=SegmentationConfig(backend="sam", model_type=size, iou_threshold=0.0),
        faces=FacesConfig(backend="mtcnn", min_score=0.9) if profile == "offline" else FacesConfig(backend="none"),
        background=BackgroundConfig(backend="opencv"),
    )
