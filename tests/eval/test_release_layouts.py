"""The benchmark's own checkpoint files (RAFT raft-things.pth, ArcFace r100 backbone.pth, DINO
dino_vitbase16_pretrain.pth), laid out exactly as released and loaded through the scorer's backends: every tensor
lands, the outputs equal the official architecture's on a non-square input, and another layout fails naming the
file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alchemist_data.models.base import ModelLoadError
from alchemist_eval import metrics as M
from alchemist_eval.models import ArcFaceEmbedder, DinoEncoder, RaftFlow, eval_profile
from tests.release_layouts import write_arcface, write_dino, write_raft_princeton

from .conftest import astronaut_frames, moving_frames


@pytest.fixture(scope="module")
def raft_things(tmp_path_factory):
    path = tmp_path_factory.mktemp("raft") / "raft-things.pth"
    return path, write_raft_princeton(path)


def test_raft_princeton_layout_is_converted_and_reproduces_princeton_flow(raft_things):
    path, princeton = raft_things
    keys = torch.load(path, weights_only=True).keys()
    assert all(k.startswith("module.") for k in keys) and "module.fnet.conv1.weight" in keys
    flow = RaftFlow(str(path), iters=4)
    flow.setup()
    # every torchvision tensor filled from the file (load_exact), and the networks agree on the same pixels
    frames = moving_frames(2, h=136, w=200)  # non-square, already a multiple of 8: no padding either side
    (ours,) = flow.flows(frames)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        ref = princeton(x[:1], x[1:], iters=4)[0].permute(1, 2, 0).numpy()
    assert ours.shape == ref.shape == (136, 200, 2)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)  # measured 1.6e-5 at 20 iterations, |flow| up to 11


def test_raft_torchvision_layout_still_loads_and_other_layouts_fail_naming_the_file(raft_things, tmp_path):
    from torchvision.models.optical_flow import raft_large

    from alchemist_eval.models import raft_princeton_to_torchvision

    path, _ = raft_things
    converted = raft_princeton_to_torchvision(torch.load(path, weights_only=True))
    tv = tmp_path / "raft_large_C_T_V1-22a6c225.pth"
    torch.save(converted, tv)
    flow = RaftFlow(str(tv), iters=2)
    flow.setup()
    reference = raft_large(weights=None)
    reference.load_state_dict(converted)
    for k, v in reference.state_dict().items():
        assert torch.equal(flow.model.state_dict()[k], v), k
    small = tmp_path / "raft-small.pth"  # e.g. princeton's raft-small: another architecture
    torch.save({"module.fnet.conv1.weight": torch.zeros(32, 3, 7, 7)}, small)
    with pytest.raises(ModelLoadError, match=r"(?s)raft-small\.pth.*princeton-vl RAFT raft-things.*missing"):
        RaftFlow(str(small)).setup()


def test_paper_profile_drives_dync_d_with_the_benchmarks_raft_file(monkeypatch):
    monkeypatch.delenv("ALCHEMIST_RAFT_CHECKPOINT", raising=False)
    cfg = eval_profile("paper")
    assert cfg.flow == "raft" and cfg.raft_checkpoint == "raft-things.pth"


@pytest.mark.slow
def test_arcface_r100_released_layout_loads_every_tensor(tmp_path):
    path = tmp_path / "backbone.pth"
    reference = write_arcface(path, "r100")
    assert len(torch.load(path, weights_only=True)) == 925  # arcface_torch's r100 backbone.pth
    emb = ArcFaceEmbedder(str(path), "r100")
    emb.setup()
    for k, v in reference.state_dict().items():
        assert torch.equal(emb.model.state_dict()[k], v), k
    crops = [astronaut_frames(1, 64)[0][:, :40], np.full((30, 50, 3), 128, np.uint8)]  # non-square face crops
    with torch.inference_mode():
        want = reference(torch.from_numpy(np.stack([M.face_preprocess(c) for c in crops]))).numpy()
    np.testing.assert_allclose(emb.embed(crops), want, atol=1e-4)
    wrong = tmp_path / "r50-as-r100.pth"
    torch.save({k: v for k, v in reference.state_dict().items() if not k.startswith("layer3.2")}, wrong)
    with pytest.raises(ModelLoadError, match=r"(?s)r50-as-r100\.pth.*r100 IResNet.*missing \(first: layer3\.2\."):
        ArcFaceEmbedder(str(wrong), "r100").setup()
    path.unlink()


@pytest.mark.slow
def test_dino_hub_checkpoint_file_loads_and_gives_dinos_cls_embedding(tmp_path):
    path = tmp_path / "dino_vitbase16_pretrain.pth"
    reference = write_dino(path)
    enc = DinoEncoder(str(path))
    enc.setup()
    # put on its device in eval mode like a hub or folder model (this path used to skip both)
    assert not enc.model.training and next(enc.model.parameters()).device.type == "cpu"
    n_file = len(torch.load(path, weights_only=True))
    # the 12 fused qkv weights and biases become 3 tensors each
    assert len(enc.model.state_dict()) == n_file + 12 * 2 * 2
    # DINO's input: a subject crop (non-square) padded to a white square, resized to 224
    crop = np.concatenate([astronaut_frames(1, 96)[0][:, :60], np.full((96, 60, 1), 255, np.uint8)], axis=2)
    x = M.dino_preprocess_rgba(crop)[None]
    with torch.inference_mode():
        want = reference.forward_features(torch.from_numpy(x))[:, 0].numpy()
    np.testing.assert_allclose(enc.encode(x), want, atol=1e-4)
    wrong = tmp_path / "dino_resnet50_pretrain.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, wrong)
    with pytest.raises(ModelLoadError, match=r"(?s)dino_resnet50_pretrain\.pth.*VisionTransformer.*no cls_token"):
        DinoEncoder(str(wrong)).setup()
    path.unlink()
