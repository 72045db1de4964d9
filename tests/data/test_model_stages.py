"""Grounding and segmentation stages batch across clips, give the same rows as clip-by-clip, and isolate bad clips."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from alchemist_data.models.grounding import HFGroundingDino
from alchemist_data.models.segmentation import SegmentAnything
from alchemist_data.profiles import curation_profile
from alchemist_data.stages import GroundingStage, SegmentationStage


class _PassCounter:
    """Mixed into a model: ``passes`` records how many frames each of its batched forward passes carried."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.passes: list[int] = []

    def _count(self, images) -> None:
        self.passes.append(len(images))


class CountingGrounder(_PassCounter, HFGroundingDino):
    """The tiny random GroundingDINO at the batch size of the grounding config ``cfg``, counting the frames of each
    forward pass."""

    def __init__(self, cfg):
        super().__init__("random-tiny", box_threshold=0.0, batch_size=cfg.batch_size)

    def _forward(self, images, captions):
        self._count(images)
        return super()._forward(images, captions)


class CountingSam(_PassCounter, SegmentAnything):
    """The tiny random SAM at the batch size of the segmentation config ``cfg``, counting the frames of each
    image-encoder forward."""

    def __init__(self, cfg):
        super().__init__("random-tiny", batch_size=cfg.batch_size)

    def _segment_batch(self, images, boxes):
        self._count(images)
        return super()._segment_batch(images, boxes)


def _row(clip_id: str, subjects: list[str], objects: list[str], h: int = 96, w: int = 128, seed: int = 0) -> dict:
    rng = np.random.RandomState(seed)
    frames = [(rng.rand(h, w, 3) * 255).astype(np.uint8).tobytes() for _ in range(3)]
    return {
        "clip_id": clip_id,
        "caption": "",
        "reject_stage": None,
        "reject_reason": None,
        "reject_detail": None,
        "frames": frames,
        "frame_height_px": h,
        "frame_width_px": w,
        "subject_words": subjects,
        "object_words": objects,
        "background_words": [],
    }


def _assert_same_detections(got: list[dict], want: list[dict]) -> None:
    # scores may differ in the last float bits when a forward carries other frames; everything else is equal
    scores = ("box_score", "mask_iou_score")
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert {k: v for k, v in g.items() if k not in scores} == {k: v for k, v in w.items() if k not in scores}
        for k in scores:
            a, b = g.get(k), w.get(k)
            assert (a is None) == (b is None) and np.allclose(a or 0.0, b or 0.0, atol=1e-5)


def _rows() -> list[dict]:
    return [
        _row("a", ["man"], ["red shirt", "dog"], seed=1),
        _row("b", ["woman"], [], seed=2),
        _row("c", ["zebroid"], ["hat"], h=128, w=96, seed=3),  # another frame size: its own forward passes
        _row("d", ["old man"], ["frisbee"], seed=4),
    ]


@pytest.fixture(scope="module")
def profile():
    return curation_profile("tiny")


@pytest.fixture()
def segmentation(profile) -> SegmentationStage:
    """A fresh segmentation stage on the counting tiny SAM."""
    stage = SegmentationStage(profile.segmentation)
    stage.segmenter = CountingSam(profile.segmentation)
    return stage


@pytest.fixture(scope="module")
def grounded(profile) -> list[dict]:
    stage = GroundingStage(profile.grounding)
    stage.grounder = CountingGrounder(profile.grounding)
    rows = _rows()
    stage.process_rows(rows)
    # 9 frames of size 96x128 (three clips, different captions) share two passes of up to 8; clip c has its own
    assert sorted(stage.grounder.passes) == [1, 3, 8]
    return rows


def test_grounding_batched_across_clips_equals_clip_by_clip(profile, grounded):
    stage = GroundingStage(profile.grounding)
    stage.grounder = CountingGrounder(profile.grounding)
    for row, want in zip(_rows(), grounded, strict=True):
        stage.process_row(row)
        _assert_same_detections(row["detections"], want["detections"])
    assert stage.grounder.passes == [3, 3, 3, 3]  # clip by clip: one clip's three frames per pass
    for row in grounded:
        words = row["subject_words"] + row["object_words"]
        assert row["reject_reason"] is None and len(row["detections"]) == 3 * len(words)
        assert any(d["box_xyxy_px"] is not None for d in row["detections"])  # threshold 0: boxes are found


def test_grounding_bad_clip_becomes_a_reject_and_the_batch_goes_on(profile, grounded):
    stage = GroundingStage(profile.grounding)
    stage.grounder = CountingGrounder(profile.grounding)
    rows = _rows()
    rows[1]["frames"][0] = b"\x00" * 10  # truncated frame bytes: this clip cannot be decoded
    stage.process_rows(rows)
    assert (rows[1]["reject_stage"], rows[1]["reject_reason"]) == ("grounding", "error")
    assert "reshape" in rows[1]["reject_detail"]
    for i in (0, 2, 3):
        assert rows[i]["reject_reason"] is None
        _assert_same_detections(rows[i]["detections"], grounded[i]["detections"])


def test_segmentation_batched_across_clips_equals_clip_by_clip(segmentation, grounded):
    rows = copy.deepcopy(grounded)
    segmentation.process_rows(rows)
    boxed = [
        sum(any(d["frame_index"] == f and d["box_xyxy_px"] for d in r["detections"]) for f in range(3))
        for r in grounded
    ]
    assert sum(segmentation.segmenter.passes) == sum(boxed) and len(segmentation.segmenter.passes) < len(grounded)
    segmentation.segmenter.passes.clear()
    for row, want in zip(copy.deepcopy(grounded), rows, strict=True):
        segmentation.process_row(row)
        _assert_same_detections(row["detections"], want["detections"])
    assert len(segmentation.segmenter.passes) == len(grounded)  # clip by clip: one encoder pass per clip
    assert all(r["reject_reason"] is None for r in rows)
    assert any(d["is_detected"] and d["mask_png"] for r in rows for d in r["detections"])


def test_segmentation_bad_clip_and_undetected_subject_become_rejects(segmentation, grounded):
    rows = copy.deepcopy(grounded)
    for d in rows[1]["detections"]:  # no subject box at all: nothing to segment
        d["box_xyxy_px"] = None
    segmentation.process_rows(rows)  # the batched path
    assert (rows[1]["reject_stage"], rows[1]["reject_reason"]) == ("segmentation", "subject_not_detected")
    assert all(rows[i]["reject_reason"] is None for i in (0, 2, 3))

    rows = copy.deepcopy(grounded)
    first_boxed = next(d for d in rows[0]["detections"] if d["box_xyxy_px"] is not None)
    first_boxed["box_xyxy_px"] = first_boxed["box_xyxy_px"][:3]  # a malformed box fails SAM for the whole batch
    for d in rows[1]["detections"]:  # no subject box at all: nothing to segment
        d["box_xyxy_px"] = None
    segmentation.process_rows(rows)  # the batch fails, then every clip runs on its own
    assert (rows[0]["reject_stage"], rows[0]["reject_reason"]) == ("segmentation", "error")
    assert "4 numbers" in rows[0]["reject_detail"]
    assert rows[1]["reject_reason"] == "subject_not_detected"
    want = copy.deepcopy(grounded[2:])
    SegmentationStage.process_rows(segmentation, want)
    for got, exp in zip(rows[2:], want, strict=True):
        assert got["reject_reason"] is None
        _assert_same_detections(got["detections"], exp["detections"])
