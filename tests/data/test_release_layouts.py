"""Curation's paper models loaded from files laid out exactly as the released ones (official architectures, random
weights, see tests/release_layouts.py): every tensor lands, a forward pass runs on a non-square frame, and a file
of another layout fails with a message that names it."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

from alchemist_data.models import faces as faces_mod
from alchemist_data.models.base import ModelLoadError
from alchemist_data.models.faces import YoloFaceDetector, _first_tensor, _scale_boxes, letterbox, yolo_nms
from alchemist_data.models.grounding import GroundingDinoPy
from alchemist_data.models.segmentation import SegmentAnything
from alchemist_data.models.tiny import tiny_bert_dir
from tests.release_layouts import load_gdino_for_cpu, write_yolo_pickled, write_yolo_torchscript


def _assert_same_state(loaded: torch.nn.Module, reference: torch.nn.Module) -> None:
    got, want = loaded.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert torch.equal(got[k].cpu(), v), k


def _frames(n: int, h: int = 96, w: int = 160) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


# ---------------------------------------------------------------------------------------------------------------
# GroundingDINO


@pytest.mark.slow
def test_gdino_released_layout_loads_every_tensor_and_grounds_non_square_frames(released_gdino):
    path, reference = released_gdino
    g = load_gdino_for_cpu(path, max_size=400)
    _assert_same_state(g.model, reference)
    frames = _frames(2)  # 96x160 -> 224x373
    res = g.detect(frames, ["man", "red shirt"])
    assert len(res) == 2 and res[0] and set(res[0]) <= {"man", "red shirt"}
    for det in res[0].values():
        assert len(det.box_xyxy) == 4 and 0.0 < det.score <= 1.0
    # groundingdino-py takes one caption per image too: a mixed pass equals one image at a time
    requests = [(frames[0], ["man", "red shirt"]), (frames[1], ["dog"])]
    for got, want in zip(g.detect_many(requests), [g.detect([f], t)[0] for f, t in requests], strict=True):
        assert got.keys() == want.keys()
        assert all(got[t].box_xyxy == want[t].box_xyxy for t in got)


@pytest.mark.slow
def test_gdino_other_layouts_fail_naming_the_file(released_gdino, tmp_path):
    _, reference = released_gdino
    state = reference.state_dict()
    first = list(state)[:12]
    # a Lightning-style file: every key under "model." inside "state_dict"; it used to load 0 tensors silently
    lightning = tmp_path / "lightning_gdino.ckpt"
    torch.save({"state_dict": {"model." + k: state[k] for k in first}}, lightning)
    g = GroundingDinoPy(checkpoint=str(lightning), text_encoder=str(tiny_bert_dir()))
    with pytest.raises(
        ModelLoadError,
        match=r"(?s)lightning_gdino\.ckpt.*expected layout.*tensors are missing "
        r"\(first: .*" + first[0].replace(".", r"\."),
    ):
        g.setup()
    # the released layout with one foreign key: refused too, the key is named
    extra = tmp_path / "extra_gdino.pth"
    torch.save(
        {"model": {**{"module." + k: v for k, v in state.items()}, "module.new_head.weight": torch.zeros(1)}}, extra
    )
    with pytest.raises(
        ModelLoadError,
        match=r"(?s)extra_gdino\.pth.*not the model's \(first: module\.new_head|"
        r"extra_gdino\.pth.*new_head\.weight",
    ):
        GroundingDinoPy(checkpoint=str(extra), text_encoder=str(tiny_bert_dir())).setup()
    extra.unlink()


# ---------------------------------------------------------------------------------------------------------------
# SAM


@pytest.mark.slow
def test_sam_released_layout_loads_every_tensor_and_segments_a_non_square_frame(released_sam):
    path, reference = released_sam
    sam = SegmentAnything("vit_b", str(path))
    sam.setup()
    _assert_same_state(sam.predictor.model, reference)
    frame = _frames(1, 120, 200)[0]
    (res,) = sam.segment(frame, [[20, 10, 150, 100]])
    assert res.mask.shape == (120, 200) and res.mask.dtype == bool and 0.0 <= res.iou_score <= 1.0


def test_sam_other_layout_fails_naming_the_file(tmp_path):
    from segment_anything import sam_model_registry

    state = sam_model_registry["vit_b"](checkpoint=None).state_dict()
    wrapped = tmp_path / "wrapped_sam.pth"
    torch.save({"model": {k: state[k] for k in list(state)[:3]}}, wrapped)  # a training checkpoint, not the release
    with pytest.raises(ModelLoadError, match=r"(?s)wrapped_sam\.pth.*plain state dict.*missing \(first: "):
        SegmentAnything("vit_b", str(wrapped)).setup()
    garbage = tmp_path / "garbage_sam.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match=r"garbage_sam\.pth is not a readable PyTorch file"):
        SegmentAnything("vit_b", str(garbage)).setup()


# ---------------------------------------------------------------------------------------------------------------
# YOLO face


def _assert_same_faces(got, want) -> None:
    got, want = sorted(got), sorted(want)
    assert [b for b, _ in got] == [b for b, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def _reference_faces(model: torch.nn.Module, frame: np.ndarray, shape, auto: bool) -> list[tuple[list[int], float]]:
    """The Face-S pipeline written out: letterbox, BGR quirk, forward, NMS 0.2/0.4, scale back, round."""
    lb = letterbox(frame, shape, stride=32, auto=auto)[0]
    x = torch.from_numpy(np.ascontiguousarray(lb[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255.0
    with torch.inference_mode():
        pred = yolo_nms(_first_tensor(model(x)).float(), 0.2, 0.4)[0]
        pred[:, :4] = _scale_boxes(x.shape[2:], pred[:, :4].clone(), frame.shape).round()
    return sorted(([int(v) for v in r[:4].tolist()], float(r[4])) for r in pred if int(r[5]) == 0)


@pytest.mark.parametrize("hw", [(360, 640), (480, 640), (640, 360), (97, 203)])
def test_yolo_torchscript_traced_at_640_runs_on_non_square_frames(tmp_path, hw):
    # The export froze the anchor grid of 640x640 (8400 anchors); a 384x640 stride-multiple letterbox (5040)
    # crashed. Frames now go to the full traced square, as YOLOv9's detect.py does for TorchScript.
    path = tmp_path / "yolov9-c-face.torchscript"
    model = write_yolo_torchscript(path)
    det = YoloFaceDetector(str(path))
    frame = _frames(1, *hw)[0]
    faces = det.detect(frame)
    assert det.auto is False and det.image_size == (640, 640)
    want = _reference_faces(model, frame, 640, auto=False)
    assert faces  # random weights: boxes pass conf 0.2
    _assert_same_faces(faces, want)
    assert all(0 <= b[0] <= b[2] <= hw[1] and 0 <= b[1] <= b[3] <= hw[0] for b, _ in faces)
    assert len(det.detect_batch([frame, frame])) == 2


@pytest.fixture
def yolo_pickled(tmp_path):
    repo = tmp_path / "yolov9"
    path = tmp_path / "best.pt"
    model = write_yolo_pickled(path, repo)
    yield path, repo, model
    for name in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
        del sys.modules[name]


def test_yolo_pickled_checkpoint_names_everything_it_needs_at_once(yolo_pickled):
    path, _, _ = yolo_pickled
    with pytest.raises(ModelLoadError) as err:
        YoloFaceDetector(str(path)).setup()
    msg = str(err.value)
    assert str(path) in msg and "WongKinYiu/yolov9 repository on PYTHONPATH" in msg and "models.yolo" in msg
    absent = [pip for mod, pip in faces_mod.YOLOV9_IMPORTS.items() if importlib.util.find_spec(mod) is None]
    for pip in absent:  # every package not installed here, in the same message
        assert pip in msg
    if absent:
        assert "alchemist-data[yolo-pt]" in msg
    assert "TorchScript" in msg


def test_yolo_pickled_checkpoint_loads_with_the_repository_and_letterboxes_like_the_benchmark(
    yolo_pickled, monkeypatch
):
    path, repo, model = yolo_pickled
    monkeypatch.syspath_prepend(str(repo))
    # IPython / psutil / seaborn are what the real repository's modules import; the stand-in imports none of them,
    # so only the repository is required here
    monkeypatch.setattr(faces_mod, "YOLOV9_IMPORTS", {})
    det = YoloFaceDetector(str(path))
    frame = _frames(1, 360, 640)[0]
    faces = det.detect(frame)
    assert det.auto is True  # the benchmark's stride-multiple letterbox (384x640 here)
    assert faces
    _assert_same_faces(faces, _reference_faces(model, frame, 640, auto=True))
