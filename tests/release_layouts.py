"""Checkpoint files laid out exactly as the released ones, built here with the official architectures and random
weights (no real checkpoint can be downloaded on the project's machines).

Each ``write_*`` builds the model from the installed package that defines it, saves it the way its publisher did,
and returns the model (so tests can compare every tensor and every output). The layouts are those of
``shared/notes/dependencies.md`` §5:

* GroundingDINO SwinT-OGC ``groundingdino_swint_ogc.pth``: ``{'model': {'module.' + key}}`` (groundingdino-py),
  with the two harmless extras released files carry;
* SAM ``sam_vit_b_01ec64.pth``: a plain state dict (segment-anything);
* ArcFace r100 ``backbone.pth``: a plain state dict without prefixes (``alchemist_eval.iresnet``, the arcface_torch
  architecture);
* princeton RAFT ``raft-things.pth``: the state dict of ``nn.DataParallel(RAFT)`` (``tests/princeton_raft.py``);
* DINO ViT-B/16 ``dino_vitbase16_pretrain.pth``: a plain state dict of dino's VisionTransformer, whose names are
  timm's ``VisionTransformer`` (dino's is derived from it);
* YOLO face TorchScript: a YOLOv9-style detector (DDetect head: anchors built from the input size on the first
  call, DFL box decoding) traced at 640x640 and saved with YOLO's ``config.txt``, so its anchors are frozen just as
  in a real export.

Used by the release-layout tests, the CPU ``paper`` end-to-end run and ``bench/gpu_check.py`` (when no real
checkpoint is given).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

SEED = 0


def _seeded(seed: int):
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
# GroundingDINO


def build_gdino(text_encoder: str | os.PathLike, seed: int = SEED) -> nn.Module:
    """groundingdino-py's SwinT-OGC model with random weights (``text_encoder``: a local BERT directory)."""
    from groundingdino.models import build_model
    from groundingdino.util.slconfig import SLConfig

    from alchemist_data.models.grounding import _default_gdino_config

    args = SLConfig.fromfile(_default_gdino_config())
    args.device = "cpu"
    args.text_encoder_type = str(text_encoder)
    _seeded(seed)
    return build_model(args).eval()


def write_gdino(path: str | os.PathLike, text_encoder: str | os.PathLike, seed: int = SEED) -> nn.Module:
    """``{'model': {'module.' + key: tensor}}`` plus ``label_enc.weight`` and ``bert.embeddings.position_ids``."""
    model = build_gdino(text_encoder, seed)
    state = {"module." + k: v for k, v in model.state_dict().items()}
    # extras seen in the released file that the current model does not use
    state["module.label_enc.weight"] = torch.zeros(2001, 256)
    state["module.bert.embeddings.position_ids"] = torch.arange(512)[None]
    torch.save({"model": state}, path)
    return model


#: GroundingDinoPy settings for CPU tests: a 224 px short side keeps the 900 queries below the number of image tokens
#: while staying fast; every box is kept, so a random model still returns some.
CPU_GDINO_SETTINGS = {"resize_short": 224, "box_threshold": 0.0, "batch_size": 2}


def load_gdino_for_cpu(checkpoint: str | os.PathLike, max_size: int):
    """groundingdino-py's detector on ``checkpoint`` with the tiny local BERT and CPU_GDINO_SETTINGS, set up."""
    from alchemist_data.models.grounding import GroundingDinoPy
    from alchemist_data.models.tiny import tiny_bert_dir

    detector = GroundingDinoPy(
        checkpoint=str(checkpoint), text_encoder=str(tiny_bert_dir()), max_size=max_size, **CPU_GDINO_SETTINGS
    )
    detector.setup()
    return detector


# ---------------------------------------------------------------------------------------------------------------
# SAM


def write_sam(path: str | os.PathLike, model_type: str = "vit_b", seed: int = SEED) -> nn.Module:
    from segment_anything import sam_model_registry

    _seeded(seed)
    sam = sam_model_registry[model_type](checkpoint=None).eval()
    torch.save(sam.state_dict(), path)
    return sam


# ---------------------------------------------------------------------------------------------------------------
# ArcFace, RAFT, DINO


def write_arcface(path: str | os.PathLike, network: str = "r100", seed: int = SEED) -> nn.Module:
    from alchemist_eval.iresnet import iresnet

    _seeded(seed)
    net = iresnet(network).eval()
    # random BatchNorm statistics, so that a load that skipped them would show in the outputs
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), path)
    return net


def write_raft_princeton(path: str | os.PathLike, seed: int = SEED) -> nn.Module:
    from tests.princeton_raft import RAFT

    _seeded(seed)
    model = RAFT().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(nn.DataParallel(model).state_dict(), path)
    return model


def write_dino(path: str | os.PathLike, seed: int = SEED) -> nn.Module:
    """dino_vitb16's ``VisionTransformer(patch_size=16, embed_dim=768, depth=12, num_heads=12, qkv_bias=True)``
    without a head; its ``forward_features(x)[:, 0]`` is DINO's output."""
    from timm.models.vision_transformer import VisionTransformer

    _seeded(seed)
    model = VisionTransformer(
        patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4, qkv_bias=True, num_classes=0
    ).eval()
    with torch.no_grad():  # timm starts pos_embed / cls_token near zero; random values test their mapping
        model.pos_embed.normal_(0, 0.02)
        model.cls_token.normal_(0, 0.02)
    torch.save(model.state_dict(), path)
    return model


# ---------------------------------------------------------------------------------------------------------------
# YOLO face


def _conv(c1: int, c2: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.SiLU())


class DFL(nn.Module):
    """YOLOv9's distribution focal loss integral: the expected bin of each box side's distribution."""

    def __init__(self, c1: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class DDetect(nn.Module):
    """YOLOv9's detection head: anchors from the feature sizes of the call that changed the shape (so a traced
    model keeps the ones of its tracing size), then ``[B, 4 + nc, N]`` cxcywh boxes in input pixels."""

    def __init__(self, nc: int, ch: tuple[int, ...], strides: tuple[int, ...]):
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(ch), 16
        self.no = nc + 4 * self.reg_max
        self.stride = torch.tensor(strides, dtype=torch.float)
        self.cv2 = nn.ModuleList(nn.Sequential(_conv(c, 64), nn.Conv2d(64, 4 * self.reg_max, 1)) for c in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(_conv(c, 32), nn.Conv2d(32, nc, 1)) for c in ch)
        self.dfl = DFL(self.reg_max)
        self.export = False  # export.py sets it: the output is then the decoded tensor alone
        self.shape = None
        self.anchors = torch.empty(0)
        self.strides = torch.empty(0)

    def forward(self, x: list[torch.Tensor]):
        shape = x[0].shape
        x = [torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1) for i in range(self.nl)]
        if self.shape != shape:
            points, strides = [], []
            for xi, s in zip(x, self.stride, strict=True):
                h, w = xi.shape[2:]
                sy, sx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
                points.append(torch.stack((sx, sy), -1).view(-1, 2))
                strides.append(torch.full((h * w, 1), float(s)))
            self.anchors, self.strides = torch.cat(points).T, torch.cat(strides).T
            self.shape = shape
        box, cls = torch.cat([xi.view(shape[0], self.no, -1) for xi in x], 2).split((4 * self.reg_max, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = self.anchors.unsqueeze(0) - lt, self.anchors.unsqueeze(0) + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * self.strides
        y = torch.cat((dbox, cls.sigmoid()), 1)
        return y if self.export else (y, x)


class TinyYoloFace(nn.Module):
    """A small YOLOv9-style face detector: stride-8/16/32 features and a DDetect head (one class, "face")."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(_conv(3, 8, 3, 2), _conv(8, 16, 3, 2), _conv(16, 16, 3, 2))  # stride 8
        self.p4 = _conv(16, 32, 3, 2)
        self.p5 = _conv(32, 32, 3, 2)
        self.head = DDetect(1, (16, 32, 32), (8, 16, 32))
        self.stride = self.head.stride
        self.names = {0: "face"}

    def forward(self, x: torch.Tensor):
        p3 = self.stem(x)
        p4 = self.p4(p3)
        return self.head([p3, p4, self.p5(p4)])


def write_yolo_torchscript(path: str | os.PathLike, size: int = 640, seed: int = SEED) -> nn.Module:
    """WongKinYiu/yolov9 ``export.py --include torchscript``: ``torch.jit.trace`` at ``(1, 3, size, size)`` and
    ``config.txt = {"shape", "stride", "names"}``."""
    import warnings

    _seeded(seed)
    model = TinyYoloFace().eval()
    model.head.export = True
    im = torch.zeros(1, 3, size, size)
    for _ in range(2):  # export.py's dry runs: the head's anchors are built here, then traced as constants
        model(im)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and TorchScript deprecation warnings
        ts = torch.jit.trace(model, im, strict=False)
        meta = {"shape": list(im.shape), "stride": int(max(model.stride)), "names": model.names}
        ts.save(str(path), _extra_files={"config.txt": json.dumps(meta)})
    model.head.export = False
    return model


YOLOV9_STUB = '''"""Stand-in for the WongKinYiu/yolov9 repository's models/yolo.py (its pickles name models.yolo.*)."""
from tests.release_layouts import TinyYoloFace


class DetectionModel(TinyYoloFace):
    pass
'''


def write_yolo_pickled(path: str | os.PathLike, repo_dir: str | os.PathLike, seed: int = SEED) -> nn.Module:
    """A yolov9 training checkpoint ``{'model': DetectionModel (half), 'ema': None, ...}`` whose pickle names
    ``models.yolo.DetectionModel``, as ``best.pt`` does. ``repo_dir`` gets the stand-in ``models`` package (put it
    on ``sys.path`` to load the file)."""
    import importlib
    import sys

    repo = Path(repo_dir)
    (repo / "models").mkdir(parents=True, exist_ok=True)
    (repo / "models" / "__init__.py").write_text("")
    (repo / "models" / "yolo.py").write_text(YOLOV9_STUB)
    sys.path.insert(0, str(repo))
    try:
        importlib.invalidate_caches()
        yolo = importlib.import_module("models.yolo")
        _seeded(seed)
        model = yolo.DetectionModel().eval()
        torch.save({"model": model.half(), "ema": None, "epoch": -1}, path)
    finally:
        sys.path.remove(str(repo))
        for name in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
            del sys.modules[name]
    return model.float()
