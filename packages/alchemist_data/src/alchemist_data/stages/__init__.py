"""The curation stages, one file each, in the order they run; :func:`build_stages` is the one place that reads a
whole curation profile: every stage is built from its own section of it.

Adding a stage: write ``stages/<name>.py`` (a ``Stage`` subclass and its ``StageConfig``), add its section (named like
the stage) to ``profiles.Profile`` and its class to ``STAGES`` below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alchemist_data.stages.background import BackgroundStage
from alchemist_data.stages.base import DETECTION, WORK_SCHEMA, RowReject, Stage, reject
from alchemist_data.stages.crops import CropsStage
from alchemist_data.stages.entities import EntitiesStage
from alchemist_data.stages.faces import FacesStage
from alchemist_data.stages.frames import FramesStage
from alchemist_data.stages.grounding import GroundingStage
from alchemist_data.stages.motion import MotionStage
from alchemist_data.stages.outputs import split_outputs
from alchemist_data.stages.overlap import OverlapStage
from alchemist_data.stages.segmentation import SegmentationStage
from alchemist_data.stages.shots import ShotsStage

if TYPE_CHECKING:
    from alchemist_data.profiles import Profile

#: the stage classes in pipeline order; each is built from the profile section named like the stage (``cls.name``)
STAGES: list[type[Stage]] = [
    ShotsStage,
    MotionStage,
    FramesStage,
    OverlapStage,  # reads the frames stage's decoded reference frames
    EntitiesStage,
    GroundingStage,
    SegmentationStage,
    FacesStage,
    CropsStage,
    BackgroundStage,
]


def build_stages(profile: Profile) -> list[Stage]:
    stages = [cls(getattr(profile, cls.name), device=profile.device) for cls in STAGES]
    return [s for s in stages if s.enabled]


__all__ = [
    "DETECTION",
    "STAGES",
    "WORK_SCHEMA",
    "RowReject",
    "Stage",
    "build_stages",
    "reject",
    "split_outputs",
    "BackgroundStage",
    "CropsStage",
    "EntitiesStage",
    "FacesStage",
    "FramesStage",
    "GroundingStage",
    "OverlapStage",
    "MotionStage",
    "SegmentationStage",
    "ShotsStage",
]
