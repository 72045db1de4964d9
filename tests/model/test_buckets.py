"""Multi-resolution / multi-duration buckets (spec §4, Table 6): cells, aspect groups, the resumable sampler."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from alchemist_model.buckets import TABLE6, BucketBatchSampler, BucketPlan, aspect_size, parse_cells
from alchemist_model.configs import DataConfig, TrainConfig, model_profile, sample_steps_for
from alchemist_model.data import collate_samples
from tests.model.helpers import FAST_OPTIMIZER, tiny_dataset, tiny_train_config

ASPECTS = DataConfig().bucket_aspect_ratios


def _clip(cid: str, w: int, h: int, seconds: float) -> dict:
    return {"clip_id": cid, "width_px": w, "height_px": h, "duration_s": seconds}


def test_table6_cells_and_custom_specs():
    cells = parse_cells("table6")
    assert len(cells) == 18 and {(c.width_px, c.height_px) for c in cells} == set(TABLE6)
    assert all((c.num_frames - 1) % 4 == 0 for c in cells)
    by_res = Counter()
    for c in cells:
        by_res[(c.width_px, c.height_px)] += c.weight
    assert all(w == pytest.approx(1 / 3, abs=0.005) for w in by_res.values())  # each resolution ~ a third
    assert [c.num_frames for c in parse_cells("table6-512x288")] == [17, 49, 73, 97, 121]
    custom = parse_cells("64x48x9:3, 64x48x17")
    assert [(c.num_frames, c.weight) for c in custom] == [(9, 3.0), (17, 1.0)]
    for bad, match in (
        ("table6-100x100", "Table 6 column"),
        ("64x48", "WIDTHxHEIGHTxFRAMES"),
        ("64x48x10", "4k\\+1"),
        ("60x48x9", "multiples of 16"),
        ("64x48x9:0", "positive"),
    ):
        with pytest.raises(ValueError, match=match):
            parse_cells(bad)


def test_aspect_groups_keep_the_cell_area_in_multiples_of_16():
    assert aspect_size(256, 144, 16 / 9) == (256, 144)
    assert aspect_size(256, 144, 9 / 16) == (144, 256)
    assert aspect_size(256, 144, 1.0) == (192, 192)
    for aspect in ASPECTS:
        w, h = aspect_size(512, 288, aspect)
        assert w % 16 == 0 and h % 16 == 0 and abs(w * h / (512 * 288) - 1) < 0.1


def test_clips_group_by_aspect_and_length():
    clips = [
        _clip("wide", 1280, 720, 3.0),
        _clip("tall", 720, 1280, 1.0),
        _clip("square", 500, 480, 0.5),
        _clip("short", 1280, 720, 0.2),
    ]
    plan = BucketPlan(clips, parse_cells("table6-256x144"), ASPECTS, fps=24.0)
    groups = {(clips[i]["clip_id"], g.width_px, g.height_px, g.num_frames) for g in plan.groups for i in g.members}
    # 3 s = 72 frames covers 17 and 49; 1 s covers 17; 0.5 s = 12 frames covers nothing (nor does 0.2 s)
    assert groups == {("wide", 256, 144, 17), ("wide", 256, 144, 49), ("tall", 144, 256, 17)}
    assert plan.num_too_short == 2
    with pytest.raises(ValueError, match="long enough"):
        BucketPlan([clips[-1]], parse_cells("table6-256x144"), ASPECTS, fps=24.0)


def test_bucket_sampler_is_deterministic_resumable_and_shards_ranks():
    clips = [_clip(f"c{i}", 1280, 720, 5.0) for i in range(5)] + [_clip(f"p{i}", 720, 1280, 1.0) for i in range(3)]
    plan = BucketPlan(clips, parse_cells("256x144x17:0.5,256x144x49:0.5"), ASPECTS, fps=24.0, seed=3)
    sizes = [2] * len(plan.groups)

    def take(sampler: BucketBatchSampler, n: int) -> list:
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    full = take(BucketBatchSampler(plan, sizes), 40)
    assert full == take(BucketBatchSampler(plan, sizes), 40)
    assert take(BucketBatchSampler(plan, sizes, start_step=17), 23) == full[17:]  # resume replays the choices
    for batch in full:
        assert len({k.group for k in batch}) == 1  # one shape per step
    # both cells and both aspect groups are drawn; a group's clips cycle through seeded permutations
    assert len({batch[0].group for batch in full}) == len(plan.groups) == 3
    ranks = [take(BucketBatchSampler(plan, [1] * len(plan.groups), rank=r, world_size=2), 40) for r in (0, 1)]
    joint = take(BucketBatchSampler(plan, [2] * len(plan.groups)), 40)
    for step in range(40):
        assert ranks[0][step][0].group == ranks[1][step][0].group  # all ranks draw the same bucket
        assert [ranks[0][step][0], ranks[1][step][0]] == joint[step]  # rank r takes every w-th key


def test_cells_are_drawn_by_their_weights():
    clips = [_clip(f"c{i}", 1280, 720, 3.0) for i in range(4)]
    plan = BucketPlan(clips, parse_cells("256x144x17:3,256x144x49:1"), ASPECTS, fps=24.0)
    counts = Counter(plan.groups[plan.group_for_step(s)].num_frames for s in range(4000))
    assert counts[17] / 4000 == pytest.approx(0.75, abs=0.03)


def test_dataset_and_training_with_buckets_resume_exactly(tmp_path):
    from alchemist_model.testing import write_tiny_curated_run
    from alchemist_model.train import train

    run = write_tiny_curated_run(
        tmp_path / "curated", num_clips=3, sizes=[(80, 60), (48, 80), (80, 60)], durations_s=[1.0, 1.0, 0.5]
    )
    data = DataConfig(buckets="64x48x9,64x48x17")
    ds = tiny_dataset(run, data)
    shapes = {(g.width_px, g.height_px, g.num_frames): len(g.members) for g in ds.buckets.groups}
    assert shapes == {(64, 48, 9): 2, (64, 48, 17): 1, (48, 80, 9): 1, (48, 80, 17): 1}
    it = iter(BucketBatchSampler(ds.buckets, [2] * len(ds.buckets.groups)))
    for _ in range(4):
        keys = next(it)
        group = ds.buckets.groups[keys[0].group]
        batch = collate_samples([ds[k] for k in keys])
        assert batch["video"].shape == (2, 3, group.num_frames, group.height_px, group.width_px)

    cfg = tiny_train_config(steps=6, stage2_cross_attn_only_steps=2, checkpoint_every=3, data=data, **FAST_OPTIMIZER)
    full = train(cfg, run, tmp_path / "full", progress=False)
    first = train(TrainConfig.from_dict({**cfg.to_dict(), "steps": 3}), run, tmp_path / "split", progress=False)
    second = train(cfg, run, tmp_path / "split", resume=True, progress=False)
    assert first.losses + second.losses == full.losses
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert len({tuple(r["latent_shape"]) for r in rows}) > 1  # the steps drew different buckets
    # the batch per bucket balances tokens against the profile's own: 2 clips x 3x3x4 = 72 tokens
    for r in rows:
        _, frames, height, width = r["latent_shape"]
        assert r["batch_size"] == max(1, 72 // (frames * (height // 2) * (width // 2)))
    assert {r["batch_size"] for r in rows} == {1, 2}


def test_sampling_steps_follow_the_requested_resolution(monkeypatch):
    small, tiny = model_profile("small"), model_profile("tiny")
    assert [sample_steps_for(w, h, small) for w, h in ((256, 144), (144, 256), (512, 288), (1024, 576))] == [
        256,
        256,
        128,
        64,
    ]
    assert sample_steps_for(64, 48, tiny) == tiny.sample_steps  # no spec class near 64x48

    from alchemist_model import pipeline as pipeline_module

    seen = {}

    class Stop(Exception):
        pass

    def schedule(num_steps: int, shift: float) -> torch.Tensor:
        seen["steps"] = num_steps
        raise Stop

    monkeypatch.setattr(pipeline_module, "sampling_schedule", schedule)
    from alchemist_model.encoders import load_components
    from alchemist_model.train import build_transformer

    comps = load_components(tiny)
    pipe = pipeline_module.AlchemistPipeline(build_transformer(tiny, TrainConfig(), comps), comps, tiny)
    for size, steps in (((512, 288), 128), ((64, 48), 8)):
        with pytest.raises(Stop):
            pipe("A dog runs.", width=size[0], height=size[1], progress=False)
        assert seen["steps"] == steps
