"""SAM backends (full-frame masks, scores, batched boxes) and their masks through the benchmark's filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alchemist_data.benchmark_rules import mask_drop_reason
from alchemist_data.models.segmentation import HFSam, MaskResult, SegmentAnything, build_segmenter
from alchemist_data.models.tiny import random_hf_sam
from alchemist_data.profiles import curation_profile
from tests.model_builders import assert_unknown_backend_refused, built_per_profile


def _frame(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


@pytest.mark.parametrize("size", ["random-tiny", "random-small"])
def test_segment_anything_random_masks_are_full_frame(size):
    seg = SegmentAnything(size)
    assert seg.is_random
    img = _frame()
    boxes = [[10, 10, 60, 80], [50, 20, 150, 110], [0, 0, 160, 120]]
    res = seg.segment(img, boxes)
    assert len(res) == 3
    for r in res:
        assert r.mask.shape == img.shape[:2] and r.mask.dtype == bool
        assert 0.0 <= r.iou_score <= 1.0
    # batched call == one box at a time (same image embedding, independent prompts)
    for b, r in zip(boxes, res, strict=True):
        single = seg.segment(img, [b])[0]
        assert np.array_equal(single.mask, r.mask) and single.iou_score == pytest.approx(r.iou_score, abs=1e-5)
    assert seg.segment(img, []) == []


# frames of two sizes (one group split by batch_size 2), box counts 0..3, and a box outside the frame
MANY_BOXES = [
    [[10, 10, 60, 80], [50, 20, 150, 110]],
    [[0, 0, 160, 120]],
    [],
    [[5, 5, 30, 40], [20, 20, 100, 100], [150, 100, 190, 140]],
    [[0, 0, 50, 60]],
    [[10, 5, 60, 70], [0, 0, 70, 90]],
]


def _many_requests() -> list[tuple[np.ndarray, list[list[int]]]]:
    frames = [_frame(seed=s) for s in range(4)] + [_frame(90, 70, seed=s) for s in (4, 5)]
    return list(zip(frames, MANY_BOXES, strict=True))


def _as_results(masks: torch.Tensor, scores: torch.Tensor) -> list[MaskResult]:
    # IoU scores clamped to [0, 1], as the segmenters report them
    return [MaskResult(m.numpy(), min(1.0, max(0.0, float(s)))) for m, s in zip(masks, scores, strict=True)]


def _assert_same_masks(got: list[list[MaskResult]], want: list[list[MaskResult]]) -> None:
    assert [len(g) for g in got] == [len(w) for w in want]
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g, w, strict=True):
            assert a.mask.shape == b.mask.shape and np.array_equal(a.mask, b.mask)
            assert np.allclose(a.iou_score, b.iou_score, atol=1e-5)


def _assert_batched_equals_one_frame_oracle(seg, oracle) -> list[list[MaskResult]]:
    """``seg.segment_many`` over :func:`_many_requests`, two frames a forward, against ``oracle(img, boxes)`` run frame
    by frame (a frame without boxes has no masks); returns the batched masks."""
    requests = _many_requests()
    many = seg.segment_many(requests)
    with torch.inference_mode():
        want = [oracle(img, boxes) if boxes else [] for img, boxes in requests]
    _assert_same_masks(many, want)
    return many


def test_segment_anything_many_frames_per_forward_equals_the_predictor():
    seg = SegmentAnything("random-tiny", batch_size=2)

    def predictor(img, boxes):  # the oracle: segment-anything's own one-frame path (the benchmark's)
        pred = seg.predictor  # built by the first segment_many call
        pred.set_image(img)
        prompts = pred.transform.apply_boxes_torch(torch.tensor(boxes), img.shape[:2])
        masks, scores, _ = pred.predict_torch(None, None, boxes=prompts, multimask_output=False)
        return _as_results(masks[:, 0], scores[:, 0])

    many = _assert_batched_equals_one_frame_oracle(seg, predictor)
    assert many[2] == [] and sum(r.mask.sum() for res in many for r in res) > 0
    _assert_same_masks(many, [seg.segment(img, boxes) for img, boxes in _many_requests()])


def test_hf_sam_many_frames_per_forward_equals_the_processor_path():
    seg = HFSam("random-tiny", batch_size=2)

    def processor(img, boxes):  # the documented one-image path: SamProcessor with the boxes, SamModel, post-process
        prompts = [[[float(v) for v in b] for b in boxes]]
        inputs = seg.processor(images=img, input_boxes=prompts, return_tensors="pt")
        sizes, reshaped = inputs.pop("original_sizes"), inputs.pop("reshaped_input_sizes")
        out = seg.model(**inputs, multimask_output=False)
        masks = seg.processor.image_processor.post_process_masks(out.pred_masks, sizes, reshaped)[0]
        return _as_results(masks[:, 0], out.iou_scores[0, :, 0])

    _assert_batched_equals_one_frame_oracle(seg, processor)


def test_segment_anything_bad_inputs():
    seg = SegmentAnything("random-tiny")
    with pytest.raises(ValueError, match="RGB uint8"):
        seg.segment(np.zeros((10, 10), np.uint8), [[0, 0, 5, 5]])
    with pytest.raises(ValueError, match="4 numbers"):
        seg.segment(_frame(), [[0, 0, 5]])
    with pytest.raises(ValueError, match="unknown SAM model_type"):
        SegmentAnything("vit_q", checkpoint="x.pth").setup()


def test_segment_anything_missing_checkpoint_names_file_and_url(tmp_path):
    path = tmp_path / "sam_vit_b_01ec64.pth"
    with pytest.raises(FileNotFoundError, match="sam_vit_b_01ec64.pth.*dl.fbaipublicfiles.com"):
        SegmentAnything("vit_b", checkpoint=str(path)).setup()


@pytest.mark.slow
def test_segment_anything_loads_a_vit_b_checkpoint(tmp_path):
    # The real loading path: sam_model_registry["vit_b"](checkpoint=...) with a (random) state dict on disk.
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    ref = sam_model_registry["vit_b"](checkpoint=None)
    path = tmp_path / "sam_vit_b.pth"
    torch.save(ref.state_dict(), path)
    seg = SegmentAnything("vit_b", checkpoint=str(path))
    seg.setup()
    path.unlink()  # 375 MB: pytest keeps its last tmp dirs around
    assert not seg.is_random
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    assert torch.equal(seg.predictor.model.state_dict()[key], ref.state_dict()[key])


def test_hf_sam_random_and_saved_by_path(tmp_path):
    img = _frame(90, 120)
    boxes = [[5, 5, 60, 70], [40, 20, 110, 85]]
    rand = HFSam("random-tiny")
    res = rand.segment(img, boxes)
    assert len(res) == 2
    for r in res:
        assert r.mask.shape == (90, 120) and r.mask.dtype == bool and 0.0 <= r.iou_score <= 1.0
    model, processor = random_hf_sam("random-tiny")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = HFSam(str(tmp_path))
    again = loaded.segment(img, boxes)
    assert not loaded.is_random
    for a, b in zip(res, again, strict=True):
        assert np.array_equal(a.mask, b.mask) and a.iou_score == pytest.approx(b.iou_score, abs=1e-6)
    with pytest.raises(FileNotFoundError, match="SAM model directory not found"):
        HFSam(str(tmp_path / "missing")).setup()


def test_sam_masks_of_one_frame_go_through_both_benchmark_filters():
    # the benchmark's detection -> mask step: every tag's box in ONE SAM call, then the IoU and validity checks
    img = _frame()
    seg = SegmentAnything("random-tiny")
    boxes = {"man": [10, 10, 60, 80], "dog": [120, 40, 170, 100]}  # dog: 10 px off the right edge -> invalid box
    raw = dict(zip(boxes, seg.segment(img, list(boxes.values())), strict=True))
    reasons = {
        tag: mask_drop_reason(raw[tag].iou_score, raw[tag].mask, box, iou_threshold=0.0) for tag, box in boxes.items()
    }
    assert reasons["dog"] == ("invalid_box" if raw["dog"].iou_score > 0.0 else "low_mask_iou")
    assert (reasons["man"] is None) == (raw["man"].iou_score > 0.0)
    # a threshold no score can pass keeps nothing
    assert all(
        mask_drop_reason(r.iou_score, r.mask, boxes[t], iou_threshold=1.0) == "low_mask_iou" for t, r in raw.items()
    )


def test_build_segmenter_from_profiles():
    tiny, paper = built_per_profile(build_segmenter, "segmentation", "tiny", "paper")
    assert isinstance(tiny, SegmentAnything) and tiny.model_type == "random-tiny"
    assert isinstance(paper, SegmentAnything) and paper.model_type == "vit_b"
    cfg = curation_profile("tiny").segmentation
    cfg.backend = "hf"
    assert isinstance(build_segmenter(cfg), HFSam)
    assert_unknown_backend_refused(build_segmenter, "segmentation", "nope")


@pytest.mark.gpu
def test_segment_anything_on_cuda():
    img = _frame()
    res = SegmentAnything("random-small", device="cuda").segment(img, [[10, 10, 60, 80], [50, 20, 150, 110]])
    assert len(res) == 2 and all(r.mask.shape == img.shape[:2] and r.mask.dtype == bool for r in res)
