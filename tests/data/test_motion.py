"""The motion pre-filter: optical-flow scores on generated stills, pans, zooms and moving objects; RAFT and the
VideoMAE classifier loaded from tiny checkpoints saved here."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from alchemist_data.models.motion import VIDEO_CLASSES, MotionMeter, VideoClassifier, camera_flow, pair_scores
from alchemist_data.profiles import curation_profile
from alchemist_data.runner import build_work_table
from alchemist_data.stages import MotionStage
from alchemist_data.stages.motion import MotionConfig
from tests import media

clips = media.media_fixture(
    "motion",
    still=lambda d: media.make_still_video(d / "still.mp4"),
    pan=lambda d: media.make_still_video(d / "pan.mp4", pan_px=2),
    zoom=lambda d: media.make_still_video(d / "zoom.mp4", zoom=0.004),
    slow=lambda d: media.make_still_video(d / "slow.mp4", object_px=0.45),
    moving=lambda d: media.make_still_video(d / "moving.mp4", object_px=2),
    panned_moving=lambda d: media.make_still_video(d / "panned_moving.mp4", pan_px=2, object_px=3),
)


def _work(paths: dict) -> pa.Table:
    names = list(paths)
    manifest = pa.table(
        {
            "clip_id": names,
            "video": [str(paths[n]) for n in names],
            "caption": [media.CAPTION] * len(names),
            "start_s": pa.array([None] * len(names), pa.float64()),
            "end_s": pa.array([None] * len(names), pa.float64()),
        }
    )
    return build_work_table(manifest, shard_size=8)


def _run(cfg: MotionConfig, paths: dict) -> dict[str, dict]:
    stage = MotionStage(cfg)
    stage.setup()
    return {r["clip_id"]: r for r in stage.process_batch(_work(paths)).to_pylist()}


def test_stills_and_panned_or_zoomed_stills_are_static_while_moving_things_pass(clips):
    out = _run(curation_profile("offline").motion, clips)
    reasons = {k: (r["reject_stage"], r["reject_reason"]) for k, r in out.items()}
    assert reasons == {
        "still": ("motion", "static_video"),
        "pan": ("motion", "static_video"),  # a Ken Burns pan of a still image (paper class 1)
        "zoom": ("motion", "static_video"),
        "slow": ("motion", "slight_motion"),
        "moving": (None, None),
        "panned_moving": (None, None),
    }
    assert "foreground motion" in out["pan"]["reject_detail"] and "static_threshold" in out["pan"]["reject_detail"]
    # The camera moved in the pan (total motion high), nothing moved on its own (foreground near zero).
    assert out["pan"]["motion_score"] > 10 * out["pan"]["foreground_motion_score"]
    assert out["still"]["motion_score"] < 1e-4
    moving = out["moving"]
    assert moving["foreground_motion_score"] > curation_profile("offline").motion.slight_threshold
    assert moving["video_class"] is None  # no classifier configured


def test_without_camera_compensation_a_panned_still_passes(clips):
    cfg = MotionConfig(compensate_camera=False)
    out = _run(cfg, {k: clips[k] for k in ("still", "pan")})
    assert out["still"]["reject_reason"] == "static_video"
    assert out["pan"]["reject_reason"] is None


def test_scores_are_resolution_free_and_the_camera_fit_recovers_a_zoom():
    h, w = 90, 160
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    zoom = np.stack([(xx - w / 2) * 0.02, (yy - h / 2) * 0.02], -1)  # 2 % zoom about the centre
    np.testing.assert_allclose(camera_flow(zoom), zoom, atol=1e-3)
    motion, foreground = pair_scores(zoom, frames_apart=2.0)
    assert foreground < 1e-6 < motion
    # The same motion at twice the size (flow in px doubles) gives the same score in diagonals per frame.
    big = np.repeat(np.repeat(zoom, 2, 0), 2, 1) * 2
    assert pair_scores(big, frames_apart=2.0)[0] == pytest.approx(motion, rel=0.05)
    assert camera_flow(np.zeros((8, 8, 2), np.float32)).shape == (8, 8, 2)


def test_raft_backend_loads_a_local_raft_large_state_dict(tmp_path):
    import torch
    from torchvision.models.optical_flow import raft_large

    torch.manual_seed(0)
    torch.save(raft_large(weights=None).state_dict(), tmp_path / "raft.pth")
    meter = MotionMeter("raft", raft_checkpoint=str(tmp_path / "raft.pth"), raft_iters=2)
    frames = media.scene_frames(2, size=(96, 72))
    ((motion, foreground),) = meter.measure([frames[0]], [frames[1]], [1.0])
    assert np.isfinite(motion) and np.isfinite(foreground) and motion >= 0
    with pytest.raises(FileNotFoundError, match="nope.pth.*motion.raft_checkpoint"):
        MotionMeter("raft", raft_checkpoint=str(tmp_path / "nope.pth")).setup()


def _save_videomae(path, labels=VIDEO_CLASSES, favour: str | None = None, processor: bool = False):
    import torch
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEImageProcessor

    cfg = VideoMAEConfig(
        image_size=32,
        patch_size=16,
        num_frames=4,
        tubelet_size=2,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    torch.manual_seed(0)
    model = VideoMAEForVideoClassification(cfg)
    if favour is not None:  # make one class win whatever the input, to exercise the reject path
        with torch.no_grad():
            model.classifier.bias.zero_()
            model.classifier.bias[labels.index(favour)] = 20.0
    model.save_pretrained(path)
    if processor:
        VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return str(path)


def test_videomae_classifier_loads_a_saved_checkpoint_and_classifies(tmp_path, clips):
    clf = VideoClassifier(_save_videomae(tmp_path / "vmae"))
    assert clf.num_frames == 4 and clf.crop_size == (32, 32)
    rng = np.random.default_rng(0)
    results = clf.classify([rng.integers(0, 256, (4, 40, 50, 3), dtype=np.uint8) for _ in range(2)])
    assert len(results) == 2 and all(label in VIDEO_CLASSES and 0.2 <= p <= 1.0 for label, p in results)
    with pytest.raises(ValueError, match="takes 4 RGB frames"):
        clf.classify([np.zeros((3, 32, 32, 3), np.uint8)])
    # With its own preprocessor config; a classifier that favours one class rejects with that class's reason.
    path = _save_videomae(tmp_path / "vmae_still", favour="still_foreground_image", processor=True)
    out = _run(MotionConfig(backend="off", videomae_model=path), {"moving": clips["moving"]})["moving"]
    assert (out["reject_stage"], out["reject_reason"]) == ("motion", "undesirable_still_foreground_image")
    assert out["video_class"] == "still_foreground_image" and out["video_class_score"] > 0.99
    ok = _save_videomae(tmp_path / "vmae_ok", favour="ok")
    out = _run(MotionConfig(videomae_model=ok), {"moving": clips["moving"]})["moving"]
    assert out["reject_reason"] is None and out["video_class"] == "ok" and out["motion_score"] > 0


def test_videomae_checkpoint_errors_name_the_checkpoint(tmp_path):
    missing = tmp_path / "no" / "such" / "videomae"
    with pytest.raises(FileNotFoundError, match=f"VideoMAE classifier.*{missing}"):
        VideoClassifier(str(missing)).setup()
    wrong = _save_videomae(tmp_path / "wrong", labels=("ok", "a", "b", "c", "d"))
    with pytest.raises(ValueError, match=f"{wrong}.*labels.*still_foreground_image"):
        VideoClassifier(wrong).setup()


def test_profiles_and_validation():
    assert curation_profile("offline").motion.backend == "dis"
    assert curation_profile("tiny").motion.backend == "off"
    paper = curation_profile("paper", {"motion.raft_checkpoint": "/x/raft.pth"})
    assert paper.motion.backend == "raft" and paper.motion.raft_checkpoint == "/x/raft.pth"
    with pytest.raises(ValueError, match="static_threshold <= slight_threshold"):
        curation_profile("tiny", {"motion.static_threshold": "0.01", "motion.slight_threshold": "0.001"})
    with pytest.raises(ValueError, match="motion.backend='farneback' is not one of dis, raft, off"):
        curation_profile("tiny", {"motion.backend": "farneback"})
    stage = MotionStage(curation_profile("tiny").motion)
    stage.setup()
    out = stage.process_batch(_work({"x": "/nonexistent.mp4"}))
    assert out.column("reject_reason").to_pylist() == [None]  # off: nothing runs, not even the decode
