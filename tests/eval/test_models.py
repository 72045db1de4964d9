"""Checkpoint-loading code of every backend, exercised with tiny random weights saved to disk (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from alchemist_data.benchmark_rules import face_crop
from alchemist_eval import metrics as M
from alchemist_eval.models import (
    ClipEncoder,
    DinoEncoder,
    DisFlow,
    DlibFaceEmbedder,
    FaceEvalConfig,
    FaceFinder,
    RaftFlow,
    eval_profile,
)

from .conftest import astronaut_frames, moving_frames


def _random_and_reloaded(encoder_cls, folder: Path, parts: tuple[str, ...]):
    """A tiny random encoder, and a second one loaded from the folder its ``parts`` were saved to."""
    rnd = encoder_cls("random-tiny")
    rnd.setup()
    for part in parts:
        getattr(rnd, part).save_pretrained(folder)
    loaded = encoder_cls(str(folder))
    loaded.setup()
    return rnd, loaded


def test_clip_loads_from_a_local_folder_and_gives_the_same_embeddings(tmp_path):
    rnd, loaded = _random_and_reloaded(ClipEncoder, tmp_path / "clip", ("model", "tokenizer"))
    frames = np.stack([M.clip_preprocess(f) for f in moving_frames(3)])
    np.testing.assert_allclose(loaded.encode_images(frames), rnd.encode_images(frames), atol=1e-5)
    text = ["A man in a red shirt walks a dog. " * 20]  # longer than 77 tokens: truncated, not an error
    np.testing.assert_allclose(loaded.encode_texts(text), rnd.encode_texts(text), atol=1e-5)


def test_dino_loads_from_a_local_folder_and_uses_the_cls_token(tmp_path):
    rnd, loaded = _random_and_reloaded(DinoEncoder, tmp_path / "dino", ("model",))
    x = np.stack([M.dino_preprocess_rgb(f) for f in moving_frames(2)])
    np.testing.assert_allclose(loaded.encode(x), rnd.encode(x), atol=1e-5)
    with torch.inference_mode():
        cls = rnd.model(pixel_values=torch.from_numpy(x)).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(rnd.encode(x), cls, atol=1e-6)


def test_missing_hub_model_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from alchemist_eval.models import ModelLoadError

    with pytest.raises(ModelLoadError, match="no-such-org/no-such-clip.*HF_HUB_OFFLINE"):
        ClipEncoder("no-such-org/no-such-clip").setup()
    with pytest.raises(ModelLoadError, match="(?s)DINO model.*--set dino_model=DIR"):
        DinoEncoder("no-such-org/no-such-dino").setup()


def test_one_model_load_error_for_the_three_packages(tmp_path):
    # curation's wrappers, eval's encoders and the model's encoders raise the same type, which both styles of
    # caller catch: `except OSError` (data, eval) and `except ValueError` (the model's CLI)
    from alchemist_data.models.base import LazyModel, ModelLoadError
    from alchemist_data.models.segmentation import HFSam
    from alchemist_eval.models import ModelLoadError as EvalModelLoadError
    from alchemist_model.encoders import ImageEncoder

    assert EvalModelLoadError is ModelLoadError and issubclass(ModelLoadError, OSError | ValueError)
    assert isinstance(ClipEncoder("random-tiny"), LazyModel) and isinstance(DinoEncoder("random-tiny"), LazyModel)
    for load in (
        lambda: HFSam("alchemist-test/no-such-sam").setup(),
        lambda: DinoEncoder("alchemist-test/no-such-dino").setup(),
        lambda: ImageEncoder.load("dinov2", "alchemist-test/no-such-dinov2"),
    ):
        with pytest.raises(ModelLoadError, match="(?s)could not load .*no-such"):
            load()


def test_one_random_weights_notice_for_the_three_packages(capsys):
    from alchemist_data.profiles import curation_profile
    from alchemist_model.encoders import announce_random

    phrase = "RANDOMLY INITIALISED (no real weights were loaded)"
    assert phrase in curation_profile("tiny").random_model_notice()
    assert phrase in eval_profile("tiny").random_model_notice()
    announce_random("a unit-test component")
    assert f"a unit-test component is {phrase}" in capsys.readouterr().err
    # only the models that really are random are named
    notice = curation_profile("tiny", {"segmentation.model_type": "vit_b"}).random_model_notice()
    assert notice.startswith("profile 'tiny': GroundingDINO (random-tiny) is RANDOMLY") and "SAM" not in notice
    assert curation_profile("paper").random_model_notice() is None


def test_clip_runs_in_fp16_on_cuda_only_like_the_official_clip_load():
    from alchemist_eval.models import clip_dtype

    assert clip_dtype("cuda") == clip_dtype("cuda:1", "fp16") == "float16"
    assert clip_dtype("cuda", "fp32") == clip_dtype("cpu", "fp16") == clip_dtype("cpu", "fp32") == "float32"
    with pytest.raises(ValueError, match="clip_precision='bf16'"):
        clip_dtype("cuda", "bf16")
    with pytest.raises(ValueError, match="clip_precision"):
        eval_profile("tiny", {"clip_precision": "fp8"})
    paper = eval_profile("paper")
    assert paper.clip_precision == "fp16" and paper.device == "cuda"
    # what CLIP really ran in is part of the scores' signature: fp16 GT embeddings are never reused for fp32 runs
    assert paper.signature()["clip_precision"] == "float16"
    assert eval_profile("paper", {"clip_precision": "fp32"}).signature()["clip_precision"] == "float32"
    enc = ClipEncoder("random-tiny", device="cpu", precision="fp16")
    enc.setup()
    assert enc.model.dtype == torch.float32  # the official clip package casts to float32 on CPU


@pytest.mark.gpu
def test_clip_fp16_on_cuda_is_close_to_fp32():
    frames = np.stack([M.clip_preprocess(f) for f in moving_frames(3)])
    half, full = ClipEncoder("random-small", "cuda"), ClipEncoder("random-small", "cuda", precision="fp32")
    half.setup()
    full.setup()
    assert half.model.dtype == torch.float16 and full.model.dtype == torch.float32
    got, want = half.encode_images(frames), full.encode_images(frames)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-2, rtol=2e-2)
    assert M.cosine_matrix(got, want).diagonal().min() > 0.999
    np.testing.assert_allclose(half.encode_texts(["a dog runs"]), full.encode_texts(["a dog runs"]), atol=2e-2)


def test_arcface_iresnet_round_trip_and_missing_checkpoint(tmp_path):
    from alchemist_eval.iresnet import iresnet, load_arcface
    from alchemist_eval.models import ArcFaceEmbedder

    torch.manual_seed(0)
    net = iresnet("r18").eval()
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "backbone.pth")
    emb = ArcFaceEmbedder(str(tmp_path / "backbone.pth"), "r18")
    emb.setup()
    crops = [np.full((40, 30, 3), 128, np.uint8), astronaut_frames(1, 64)[0]]
    out = emb.embed(crops)
    assert out.shape == (2, 512)
    with torch.inference_mode():
        ref = net(torch.from_numpy(np.stack([M.face_preprocess(c) for c in crops]))).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)
    assert sum(p.numel() for p in iresnet("r100").parameters()) > 60e6  # the benchmark's R100
    with pytest.raises(FileNotFoundError, match="ArcFace checkpoint"):
        load_arcface(tmp_path / "missing.pth")


def test_raft_loads_a_local_state_dict_and_pads_to_multiples_of_8(tmp_path):
    from torchvision.models.optical_flow import raft_large

    torch.manual_seed(0)
    torch.save(raft_large(weights=None).state_dict(), tmp_path / "raft.pth")
    flow = RaftFlow(str(tmp_path / "raft.pth"), iters=2)
    flow.setup()
    flows = flow.flows(moving_frames(3, h=130, w=140))
    assert len(flows) == 2 and flows[0].shape == (136, 144, 2)  # InputPadder: next multiple of 8
    assert flow.flows(moving_frames(2, h=60, w=70))[0].shape == (128, 128, 2)  # torchvision RAFT's minimum
    with pytest.raises(FileNotFoundError, match="RAFT checkpoint"):
        RaftFlow(str(tmp_path / "nope.pth")).setup()


def test_dis_flow_recovers_a_pan():
    dis = DisFlow()
    dis.setup()
    (f,) = dis.flows(moving_frames(2, step_px=4))
    assert np.median(f[..., 0]) == pytest.approx(-4, abs=0.5)


def test_real_face_detector_and_dlib_descriptor_on_a_real_face():
    frames = list(astronaut_frames(2))
    finder = FaceFinder(FaceEvalConfig(detector="mtcnn", min_score=0.9))
    finder.setup()
    boxes = finder.find_batch(frames + [np.full((128, 128, 3), 90, np.uint8)])
    assert boxes[0] is not None and boxes[1] is not None and boxes[2] is None
    emb = DlibFaceEmbedder()
    emb.setup()
    e = emb.embed([face_crop(f, b) for f, b in zip(frames, boxes[:2], strict=False)])
    assert e.shape == (2, 128) and M.cosine_matrix(e[:1], e[1:])[0, 0] > 0.9


def test_face_finder_keeps_thin_boxes_like_the_official_detect_face_crops():
    # raw [10, 20, 11, 40] in a 64x100 frame: y0 = max(int(20 - 0.17 * 20), 0) = int(16.6) = 16,
    # y1 = min(int(40 + 0.03 * (40 - 16)), 99) = int(40.72) = 40; 1 px wide, still a face for the benchmark
    assert FaceFinder.extended_box([10, 20, 11, 40], 64, 100) == [10, 16, 11, 40]
    # bottom clipped to H - 1: y0 = int(90 - 0.17 * 10) = 88, y1 = min(int(100 + 0.03 * 12), 99) = 99
    assert FaceFinder.extended_box([0, 90, 30, 100], 64, 100) == [0, 88, 30, 99]
    assert FaceFinder.extended_box([10, 20, 10, 40], 64, 100) is None  # empty crop: no face


def test_profiles_and_overrides():
    tiny = eval_profile("tiny")
    assert tiny.clip_model == "random-tiny" and tiny.flow == "dis" and "CLIP" in tiny.random_models
    assert "RANDOMLY INITIALISED" in tiny.random_model_notice()
    paper = eval_profile("paper", {"clip_model": "/models/clip", "face.arcface_checkpoint": "/m/bb.pth"})
    assert paper.clip_model == "/models/clip" and paper.face.embedder == "arcface" and paper.flow == "raft"
    assert paper.face.arcface_checkpoint == "/m/bb.pth" and paper.random_model_notice() is None
    assert paper.grounding.box_threshold == 0.4 and paper.segmentation.iou_threshold == 0.9
    with pytest.raises(ValueError, match="unknown config field"):
        eval_profile("tiny", {"nope": "1"})
