"""Model profiles of the curation pipeline (contract: ``paper`` | ``offline`` | ``tiny``).

* ``paper``: the paper's and benchmark's real checkpoints (local paths or hub ids), GPU stages, batched.
* ``offline``: the embedded default. Real models that ship inside PyPI packages (spaCy + WordNet, MTCNN, OpenCV);
  GroundingDINO and SAM have no obtainable weights here, so they are small *random* models, announced at start
  and marked in every row (``has_random_models`` / ``is_random_model``).
* ``tiny``: everything tiny and random, for tests.

Shots and motion (paper Appendix A.1): ``paper`` and ``offline`` filter multi-shot videos as the paper does
(``shots.mode=filter``): profiles choose models, not curation policy, and a manifest's caption describes its whole
clip, so a shot cut out of it by ``split`` may carry a caption that is not about it. ``split`` is one ``--set`` away
for raw, uncaptioned or per-shot-captioned sources. ``tiny`` turns both off: its tests run on synthetic clips whose
drifting texture is a panned still, and TransNetV2 costs ~20 ms per frame on one CPU thread; the shots and motion
tests switch them on.

Every field can be overridden from the CLI with ``--set section.field=value``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from alchemist_data.config import Resources, StageConfig, apply_overrides, to_dict
from alchemist_data.models.presets import VisionModels, paper_checkpoint, vision_models
from alchemist_data.overlap import OverlapConfig
from alchemist_data.stages.crops import CropsConfig
from alchemist_data.stages.entities import EntitiesConfig
from alchemist_data.stages.frames import FramesConfig
from alchemist_data.stages.motion import MotionConfig
from alchemist_data.stages.shots import ShotsConfig


@dataclass
class Profile(VisionModels):
    """The vision models (grounding, segmentation, faces, background, device: shared with the benchmark) and the
    other curation stages' settings."""

    name: str
    shots: ShotsConfig = field(default_factory=ShotsConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)
    overlap: OverlapConfig = field(default_factory=OverlapConfig)
    entities: EntitiesConfig = field(default_factory=EntitiesConfig)
    crops: CropsConfig = field(default_factory=CropsConfig)
    shard_size: int = 32  # clips per output shard (the unit of atomic commit and resume)

    @property
    def has_random_models(self) -> bool:
        return self.grounding.model.startswith("random") or self.segmentation.model_type.startswith("random")

    def random_model_notice(self) -> str | None:
        """The loud line printed at start when some stage runs with random weights."""
        from alchemist_data.models.base import random_weights_notice

        random = [
            f"{what} ({name})"
            for what, name in (("GroundingDINO", self.grounding.model), ("SAM", self.segmentation.model_type))
            if name.startswith("random")
        ]
        if not random:
            return None
        return random_weights_notice(
            random,
            "Their boxes and masks are meaningless (no real weights can be had offline); rows are marked "
            "has_random_models / is_random_model.",
            "Use --profile paper with real checkpoints.",
            context=f"profile {self.name!r}",
        )

    def validate(self) -> None:
        """Fail before any work on a setting no stage understands (e.g. a typo in --set)."""
        for f in fields(self):  # every stage section, so a new stage's checks run without being listed here
            if isinstance(section := getattr(self, f.name), StageConfig):
                section.validate()
        if self.shard_size < 1:
            raise ValueError("shard_size must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def _from_presets(name: str, **kw: Any) -> Profile:
    vm = vision_models(name)
    # every field of the shared vision presets is a field of Profile of the same name
    return Profile(name=name, **{f.name: getattr(vm, f.name) for f in fields(vm)}, **kw)


def _paper() -> Profile:
    gpu = Resources(cpus=1, gpus=1)
    # Shots and motion decode on the CPU and run small networks: a quarter GPU each, fused into one actor pool.
    quarter = Resources(cpus=1, gpus=0.25)
    return _from_presets(
        "paper",
        shots=ShotsConfig(mode="filter", windows_per_forward=32, resources=quarter),
        motion=MotionConfig(
            backend="raft",
            raft_checkpoint=paper_checkpoint("RAFT", "raft-things.pth"),  # as Dync-D
            videomae_model=os.environ.get("ALCHEMIST_VIDEOMAE_MODEL", ""),
            resources=quarter,
        ),
        entities=EntitiesConfig(backend="llm", batch_size=16, resources=gpu),
        shard_size=256,
    )


def _on_cpu(name: str, *, shots: str, motion: str, max_side_px: int, **kw: Any) -> Profile:
    """``offline`` and ``tiny``: CPU stages that differ in which video filters run and the reference-frame size."""
    return _from_presets(
        name,
        shots=ShotsConfig(mode=shots),
        motion=MotionConfig(backend=motion),
        frames=FramesConfig(max_side_px=max_side_px),
        **kw,
    )


def _offline() -> Profile:
    return _on_cpu("offline", shots="filter", motion="dis", max_side_px=512)


def _tiny() -> Profile:
    return _on_cpu("tiny", shots="off", motion="off", max_side_px=256, shard_size=8)


PROFILES = {"paper": _paper, "offline": _offline, "tiny": _tiny}


def curation_profile(name: str, overrides: dict[str, str] | None = None) -> Profile:
    """Build a curation profile by name, applying ``{"section.field": "value"}`` overrides (parsed by field type)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    profile = apply_overrides(PROFILES[name](), overrides)
    profile.validate()
    return profile
