"""Benchmark preparation, the batched scorer and the runner (misses, short videos, resume), with tiny models."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from alchemist_data.benchmark_rules import face_crop
from alchemist_data.models.grounding import Grounder
from alchemist_data.models.tiny import tiny_bert_tokenizer
from alchemist_eval.benchmark import Benchmark
from alchemist_eval.models import eval_profile
from alchemist_eval.runner import EvalConfigMismatchError, run_eval
from alchemist_eval.scorer import GroundTruth, Job, Scorer

from .conftest import astronaut_frames, moving_frames, static_frames, write
from .generated import generated_videos


def _quiet(_msg: str) -> None:
    pass


def test_prepared_benchmark_has_the_curation_tables_and_the_mode_lists(prepared_benchmark):
    from alchemist_data.catalog import query, read_table

    bench = Benchmark.load(prepared_benchmark)
    assert bench.clips["clip_id"].to_pylist() == ["clip_a", "clip_b", "clip_c"]
    rejects = read_table(prepared_benchmark, "rejects").to_pylist()
    assert [(r["clip_id"], r["reason"]) for r in rejects] == [("clip_d", "missing_file")]
    clip_a = bench.clips.to_pylist()[0]
    assert clip_a["start_s"] == pytest.approx(0.25) and clip_a["duration_s"] == pytest.approx(1.5)
    assert (clip_a["width_px"], clip_a["height_px"]) == (128, 96)
    assert clip_a["ref_times_s"] == pytest.approx([0.25 + f * 1.5 for f in (0.05, 0.5, 0.95)])
    # 3 GT frames per clip, JPEG at the annotated resolution
    frames = bench.gt_frames.rows({"clip_a", "clip_b", "clip_c"})
    assert len(frames) == 9 and {r["frame_index"] for r in frames} == {0, 1, 2}
    assert len(bench.gt_frames.rows({"clip_b"})) == 3  # read per shard, filtered on clip id
    # subject mode: exactly one subject word; face mode: exactly one subject with face crops
    assert bench.clip_ids("subject") == ["clip_a", "clip_b"]
    assert bench.clip_ids("face") == ["clip_a"]
    assert bench.clip_ids("multi_subject") == ["clip_a", "clip_c"]
    cond = [r for r in bench.conditioning.to_pylist() if r["clip_id"] == "clip_a"]
    single = [r for r in cond if r["mode"] == "subject" and r["variant"] == "single"]
    assert [(r["entity_word"], r["frame_index"]) for r in single] == [("man", 1)]  # multi[len // 2]
    with_bg = [r for r in cond if r["variant"] == "multiple_background"]
    assert [r["category"] for r in with_bg] == ["subject"] * 3 + ["background"]
    assert with_bg[-1]["entity_word"] == "park"
    # crops are RGBA with alpha = mask; the face crop is the unmasked RGB box
    ents = query(
        prepared_benchmark,
        "SELECT entity_word, count(*) AS n, sum(has_face::INT) AS faces FROM entities "
        "WHERE clip_id = 'clip_a' GROUP BY 1 ORDER BY 1",
    ).to_pylist()
    assert ents == [{"entity_word": "dog", "n": 3, "faces": 0}, {"entity_word": "man", "n": 3, "faces": 1}]
    assert {r["kind"] for r in bench.gt_embeddings.rows({"clip_a"})} == {"text", "frames", "subject", "face"}


def _scorer(metrics, profile="tiny", **overrides):
    return Scorer(eval_profile(profile, {k: str(v) for k, v in overrides.items()}), metrics)


def test_static_video_is_not_dynamic_and_a_moving_one_is(tmp_path):
    gt = GroundTruth("x", "a scene")
    scorer = _scorer(["dynamic"])
    rows = scorer.score(
        [
            Job(gt, str(write(tmp_path / "static.mp4", static_frames(24)))),
            Job(gt, str(write(tmp_path / "moving.mp4", moving_frames(24, step_px=6)))),
        ]
    )
    assert [r["dynamic_d"] for r in rows] == [0, 1]
    assert [r["num_frames"] for r in rows] == [24, 24] and rows[0]["fps"] == pytest.approx(24.0)


def test_one_frame_fewer_frames_than_asked_and_unreadable_videos(tmp_path):
    gt = GroundTruth("x", "a scene", frames=list(moving_frames(3)))
    (tmp_path / "text.mp4").write_text("not a video")
    scorer = Scorer(eval_profile("tiny"), ["text", "video", "dynamic"], num_frames=16)
    rows = scorer.score(
        [
            Job(gt, str(write(tmp_path / "one.mp4", moving_frames(1)))),
            Job(gt, str(write(tmp_path / "five.mp4", moving_frames(5)))),
            Job(gt, str(tmp_path / "text.mp4")),
            Job(gt, None),
        ]
    )
    one, five, bad, missing = rows
    assert one["status"] == "ok" and one["num_frames"] == 1 and one["dynamic_d"] == 0  # no pair -> static
    assert -1 <= one["text_s"] <= 1 and -1 <= one["video_s"] <= 1
    assert five["num_frames"] == 5 and "only 5 of the 16 frames" in five["detail"]
    assert bad["status"] == "unreadable" and missing["status"] == "missing_file"
    for row in (bad, missing):
        assert (row["text_s"], row["video_s"], row["dynamic_d"]) == (0.0, 0.0, 0.0)


def test_subject_similarity_is_zero_when_nothing_is_detected(prepared_benchmark):
    bench = Benchmark.load(prepared_benchmark)
    (gt,) = bench.ground_truth(["clip_a"], "subject")
    video = str(prepared_benchmark / "videos" / "clip_a.mp4")
    found = _scorer(["subject"]).score([Job(gt, video)])[0]
    assert found["num_tags"] == 2 and found["num_tag_detections"] > 0 and found["subject_s"] != 0
    # scores are <= 1, and both thresholds are strict (score > threshold): nothing passes at 1.0
    for override in ("grounding.box_threshold", "segmentation.iou_threshold"):
        none = _scorer(["subject"], **{override: 1.0}).score([Job(gt, video)])[0]
        assert none["num_tag_detections"] == 0 and none["subject_s"] == 0.0


class _OneBoxGrounder(Grounder):
    """A real Grounder whose network output is fixed: one query, on every text token, at ``box_cxcywh``."""

    def __init__(self, box_cxcywh: list[float]) -> None:
        super().__init__(box_threshold=0.4)
        self.box_cxcywh = box_cxcywh

    def _load(self) -> None:
        self._tokenizer = tiny_bert_tokenizer()

    @property
    def tokenizer(self):
        self.setup()
        return self._tokenizer

    def _forward(self, images, captions):
        probs = torch.full((len(images), 1, 256), 0.9)
        return probs, torch.tensor([[self.box_cxcywh]] * len(images))


def test_a_box_without_area_scores_an_all_white_subject_like_the_benchmark(tmp_path):
    # In a 128-px-wide frame, cx = 64.5 px and w = 0.4 px give x0 = int(64.3) = x1 = int(64.7) = 64: the official
    # check passes it (0 == 0) and DINO sees an all-white square. The reference here is fully transparent, i.e. all
    # white for DINO too, so each frame's similarity is exactly 1 (it was 0 when such boxes were rejected).
    video = str(write(tmp_path / "v.mp4", moving_frames(3)))
    gt = GroundTruth("z", "a thing", subject_refs={"thing": [np.zeros((10, 14, 4), np.uint8)]})
    scorer = _scorer(["subject"], **{"segmentation.iou_threshold": -1.0})  # any SAM mask: the box is under test
    scorer.setup()
    scorer.grounder = _OneBoxGrounder([64.5 / 128, 0.5, 0.4 / 128, 0.5])
    assert scorer.grounder.detect([moving_frames(1)[0]], ["thing"])[0]["thing"].box_xyxy == [64, 24, 64, 72]
    row = scorer.score([Job(gt, video)])[0]
    assert row["num_tag_detections"] == 3
    assert row["subject_s"] == pytest.approx(1.0, abs=1e-6)


def test_face_similarity_with_real_detector_and_descriptor(tmp_path):
    frames = astronaut_frames(6)
    finder_scorer = _scorer(["face"])
    finder_scorer.setup()
    box = finder_scorer.face_finder.find_batch([frames[0]])[0]
    gt = GroundTruth("astro", "an astronaut", face_refs=[face_crop(frames[0], box)])
    rows = finder_scorer.score(
        [
            Job(gt, str(write(tmp_path / "face.mp4", frames))),
            Job(gt, str(write(tmp_path / "noface.mp4", static_frames(6)))),
        ]
    )
    assert rows[0]["num_face_frames"] == 6 and rows[0]["face_s"] > 0.8
    assert rows[1]["num_face_frames"] == 0 and rows[1]["face_s"] == 0.0
    no_gt = finder_scorer.score([Job(GroundTruth("y", "c"), str(tmp_path / "face.mp4"))])[0]
    assert no_gt["face_s"] is None  # not applicable: the clip has no GT face


def test_batched_scores_equal_one_by_one_scores(prepared_benchmark):
    bench = Benchmark.load(prepared_benchmark)
    gts = bench.ground_truth(["clip_a", "clip_b", "clip_c"], "subject")
    jobs = [Job(g, str(prepared_benchmark / "videos" / f"{g.clip_id}.mp4")) for g in gts]
    metrics = ["text", "video", "subject", "dynamic"]
    batched = _scorer(metrics).score(jobs)
    single = _scorer(metrics, encoder_batch_size=1, **{"segmentation.batch_size": 1})  # SAM frame by frame
    one_by_one = [single.score([j])[0] for j in jobs]
    for a, b in zip(batched, one_by_one, strict=True):
        for col in ("text_s", "video_s", "subject_s", "dynamic_d"):
            assert a[col] == pytest.approx(b[col], abs=1e-5)


def test_runner_counts_missing_videos_resumes_and_refuses_other_settings(prepared_benchmark, tmp_path):
    gen = generated_videos(prepared_benchmark, tmp_path / "gen", ["clip_a"])
    out = tmp_path / "out"
    s = run_eval(gen, prepared_benchmark, mode="subject", profile="tiny", output=out, chunk_size=1, log=_quiet)
    assert s["num_videos"] == 2 and s["num_missing"] == 1
    assert s["missing"] == [
        {"clip_id": "clip_b", "status": "missing_file", "detail": "no generated video named after this clip id"}
    ]
    scores = pq.read_table(out / "scores.parquet").to_pylist()
    a, b = scores
    assert (b["text_s"], b["video_s"], b["subject_s"], b["dynamic_d"]) == (0.0, 0.0, 0.0, 0.0)
    # the average counts the miss as 0
    assert s["scores"]["Subj-S"] == pytest.approx(a["subject_s"] / 2)
    assert s["scores_over_readable_videos"]["Subj-S"] == pytest.approx(a["subject_s"])
    # GT embeddings cached at preparation give the same scores as computing them now
    assert a["video_s"] > 0.9  # the generated clip is the GT clip itself
    # resume: nothing left to do, same numbers
    again = run_eval(gen, prepared_benchmark, mode="subject", profile="tiny", output=out, chunk_size=1, log=_quiet)
    assert again["num_scored_this_run"] == 0 and again["scores"] == s["scores"]
    (out / "parts" / "part-00001.parquet").unlink()  # a crash before clip_b's part was written
    generated_videos(prepared_benchmark, gen, ["clip_b"])
    third = run_eval(gen, prepared_benchmark, mode="subject", profile="tiny", output=out, chunk_size=1, log=_quiet)
    assert third["num_scored_this_run"] == 1 and third["num_missing"] == 0
    with pytest.raises(EvalConfigMismatchError, match="num_frames"):
        run_eval(
            gen, prepared_benchmark, mode="subject", profile="tiny", output=out, chunk_size=1, num_frames=4, log=_quiet
        )


def test_cached_and_recomputed_ground_truth_embeddings_agree(prepared_benchmark):
    import json

    bench = Benchmark.load(prepared_benchmark)
    cfg = eval_profile("tiny")
    sig = json.dumps(cfg.signature(), sort_keys=True)
    (cached,) = bench.ground_truth(["clip_a"], "face", sig)
    (fresh,) = bench.ground_truth(["clip_a"], "face", None)
    assert cached.embeddings is not None and fresh.embeddings is None
    scorer = Scorer(cfg, ["text", "video", "subject", "face"])
    (computed,) = scorer.gt_embeddings([fresh])
    np.testing.assert_allclose(cached.embeddings["frames"], computed["frames"], atol=1e-5)
    np.testing.assert_allclose(cached.embeddings["subjects"]["man"], computed["subjects"]["man"], atol=1e-5)
    assert computed["faces"].shape == (1, 128)  # one GT face crop, dlib descriptor


def test_any_curated_run_is_a_benchmark(prepared_benchmark, tmp_path):
    """Without our extra tables (a curated run), modes and GT frames come from the schema tables alone."""
    run = tmp_path / "run"
    shutil.copytree(prepared_benchmark, run)
    for extra in ("gt_frames", "conditioning", "gt_embeddings"):
        shutil.rmtree(run / extra)
    bench = Benchmark.load(run)
    assert bench.gt_frames is None and bench.clip_ids("subject") == ["clip_a", "clip_b"]
    (gt,) = bench.ground_truth(["clip_a"], "subject")
    assert len(gt.frames) == 3 and gt.frames[0].shape == (96, 128, 3)
    assert sorted(gt.subject_refs) == ["dog", "man"] and gt.subject_refs["man"][0].shape[2] == 4


def test_bad_inputs_name_what_to_fix(prepared_benchmark, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        run_eval(tmp_path / "nope", prepared_benchmark, log=_quiet)
    (tmp_path / "gen").mkdir()
    with pytest.raises(ValueError, match="not a prepared benchmark or curated run"):
        run_eval(tmp_path / "gen", tmp_path, log=_quiet)
    with pytest.raises(ValueError, match="unknown mode"):
        run_eval(tmp_path / "gen", prepared_benchmark, mode="faces", log=_quiet)
    with pytest.raises(ValueError, match="unknown metric"):
        run_eval(tmp_path / "gen", prepared_benchmark, metrics=["clip"], profile="tiny", log=_quiet)


@pytest.mark.ray
def test_same_scores_with_one_and_two_ray_workers(prepared_benchmark, tmp_path):
    gen = generated_videos(prepared_benchmark, tmp_path / "gen", ["clip_a", "clip_c"])
    (gen / "clip_b.mp4").write_bytes(b"")  # empty file: counted as a miss by both
    results = []
    for workers in (1, 2):
        s = run_eval(
            gen,
            prepared_benchmark,
            mode="subject",
            profile="tiny",
            output=tmp_path / f"w{workers}",
            num_workers=workers,
            chunk_size=1,
            log=_quiet,
        )
        results.append((s, pq.read_table(tmp_path / f"w{workers}" / "scores.parquet").to_pylist()))
    (s1, rows1), (s2, rows2) = results
    assert s1["num_videos"] == s2["num_videos"] == 2 and s1["num_missing"] == s2["num_missing"] == 1
    assert s1["missing"][0]["status"] == "empty_file"
    for r1, r2 in zip(rows1, rows2, strict=True):
        for col in ("text_s", "video_s", "subject_s", "dynamic_d"):
            assert r1[col] == pytest.approx(r2[col], abs=1e-6)
