"""Stages called directly (setup + process_batch), without Ray or a runner."""

import pyarrow as pa

from alchemist_data.manifest import read_manifest
from alchemist_data.profiles import curation_profile
from alchemist_data.ray_runner import fuse_stages
from alchemist_data.runner import build_work_table
from alchemist_data.sample_data import write_sample_corpus
from alchemist_data.stages import (
    DETECTION,
    CropsStage,
    EntitiesStage,
    FramesStage,
    GroundingStage,
    SegmentationStage,
    build_stages,
)


def _work(tmp_path, n=3):
    manifest = write_sample_corpus(tmp_path / "c", num_clips=n, seed=5)
    return build_work_table(read_manifest(str(manifest)), shard_size=8)


def test_frames_then_entities_add_their_columns_and_pass_rejects_through(tmp_path):
    profile = curation_profile("tiny")
    work = _work(tmp_path)
    # Reject the second clip up front: later stages must leave it untouched.
    rows = work.to_pylist()
    rows[1].update(reject_stage="manifest", reject_reason="duplicate_clip_id", reject_detail="test")
    work = pa.Table.from_pylist(rows, schema=work.schema)
    frames, entities = FramesStage(profile.frames), EntitiesStage(profile.entities)
    frames.setup()
    entities.setup()
    out = entities.process_batch(frames.process_batch(work))
    got = out.to_pylist()
    assert [r["reject_reason"] for r in got] == [None, "duplicate_clip_id", None]
    assert got[1]["frames"] is None and got[1]["subject_words"] is None
    for r in (got[0], got[2]):
        assert len(r["frames"]) == 3
        assert len(r["frames"][0]) == r["frame_width_px"] * r["frame_height_px"] * 3
        assert r["subject_words"], r["caption"]
        assert all(w in r["caption"] for w in r["subject_words"] + r["object_words"])


def test_a_failing_clip_becomes_a_reject_not_a_crash(tmp_path):
    profile = curation_profile("tiny")
    work = _work(tmp_path, n=2)
    rows = work.to_pylist()
    rows[0]["video"] = str(tmp_path / "missing.mp4")
    out = FramesStage(profile.frames).process_batch(pa.Table.from_pylist(rows, schema=work.schema)).to_pylist()
    assert (out[0]["reject_stage"], out[0]["reject_reason"]) == ("frames", "missing_file")
    assert out[1]["reject_reason"] is None


def test_grounding_marks_every_word_on_every_frame(tmp_path):
    profile = curation_profile("tiny")
    work = _work(tmp_path, n=2)
    stages = [FramesStage(profile.frames), EntitiesStage(profile.entities), GroundingStage(profile.grounding)]
    for s in stages:
        s.setup()
        work = s.process_batch(work)
    assert work.schema.field("detections").type == pa.list_(DETECTION)
    for row in work.to_pylist():
        words = row["subject_words"] + row["object_words"]
        assert len(row["detections"]) == 3 * len(words)
        for d in row["detections"]:
            assert (d["box_xyxy_px"] is None) == (d["drop_reason"] == "no_box")


def test_segmentation_drops_boxes_without_area_that_the_benchmark_keeps(tmp_path):
    # A sub-pixel box truncates to x0 == x1. The benchmark scores it (an all-white subject); curation drops it with
    # its own reason, since an empty reference crop cannot be stored. The IoU threshold is -1: any mask passes it.
    profile = curation_profile("tiny", {"segmentation.iou_threshold": "-1"})
    work = _work(tmp_path, n=1)
    for s in (FramesStage(profile.frames), EntitiesStage(profile.entities), GroundingStage(profile.grounding)):
        s.setup()
        work = s.process_batch(work)
    rows = work.to_pylist()
    subject = [d for d in rows[0]["detections"] if d["category"] == "subject" and d["frame_index"] == 0]
    subject[0].update(box_xyxy_px=[10, 5, 10, 40], drop_reason=None)
    for d in subject[1:] + [d for d in rows[0]["detections"] if d["frame_index"] == 1 and d["category"] == "subject"]:
        d.update(box_xyxy_px=[10, 5, 50, 40], drop_reason=None)
    seg, crops = SegmentationStage(profile.segmentation), CropsStage(profile.crops)
    seg.setup()
    out = crops.process_batch(seg.process_batch(pa.Table.from_pylist(rows, schema=work.schema))).to_pylist()[0]
    assert out["reject_reason"] is None
    by_box = {(d["frame_index"], tuple(d["box_xyxy_px"] or ())): d for d in out["detections"]}
    empty = by_box[(0, (10, 5, 10, 40))]
    assert not empty["is_detected"] and empty["drop_reason"] == "empty_box" and empty["crop_png"] is None
    kept = by_box[(1, (10, 5, 50, 40))]
    assert kept["is_detected"] and kept["drop_reason"] is None and kept["crop_png"] is not None


def test_cpu_profiles_fuse_into_one_ray_operator_and_paper_splits_gpu_stages():
    assert len(fuse_stages(build_stages(curation_profile("tiny")))) == 1
    groups = fuse_stages(build_stages(curation_profile("paper")))
    names = [[s.name for s in g] for g in groups]
    # Shots and motion share a quarter GPU in one actor; frames decode on the CPU.
    assert names[0] == ["shots", "motion"] and names[1] == ["frames"] and len(groups) > 2
    assert all(g[0].cfg.resources.gpus == 1 for g in groups if g[0].name in ("grounding", "entities"))


def test_gpu_stages_on_a_cluster_without_gpus_fail_at_once():
    import pytest

    from alchemist_data.ray_runner import _check_gpus
    from alchemist_data.runner import _check_device

    paper = curation_profile("paper")
    with pytest.raises(ValueError, match="ask Ray for GPUs"):
        _check_gpus(build_stages(paper), cluster_gpus=0, joined=False)
    _check_gpus(build_stages(paper), cluster_gpus=0, joined=True)  # an autoscaler may add GPU nodes: only a warning
    _check_gpus(build_stages(curation_profile("tiny")), cluster_gpus=0, joined=False)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            _check_device(paper)


def test_split_by_shard_keeps_rows_in_order_per_shard():
    from alchemist_data.runner import split_by_shard

    t = pa.table({"shard": ["a", "a", "b", "c", "c", "c"], "x": [0, 1, 2, 3, 4, 5]})
    runs = split_by_shard(t)
    assert [(s, part.column("x").to_pylist()) for s, part in runs] == [("a", [0, 1]), ("b", [2]), ("c", [3, 4, 5])]
    assert split_by_shard(t.slice(0, 0)) == []


def test_a_stage_that_asks_ray_for_no_gpu_puts_its_model_on_the_cpu():
    """Under Ray a worker sees no CUDA device unless its stage requested one, so a stage with ``resources.gpus=0``
    on a CUDA profile builds its model on the CPU (the same in the local runner)."""
    from alchemist_data.config import Resources
    from alchemist_data.models.configs import FacesConfig
    from alchemist_data.stages import FacesStage

    on_gpu = FacesStage(FacesConfig(backend="mtcnn", resources=Resources(gpus=1)), device="cuda")
    assert on_gpu.model_device == "cuda"  # not set up: this machine may have no GPU
    on_cpu = FacesStage(FacesConfig(backend="mtcnn", resources=Resources(gpus=0)), device="cuda")
    on_cpu.setup()
    assert on_cpu.detector.device == "cpu"
