"""ArcFace IResNet backbones, state-dict compatible with insightface
``recognition/arcface_torch/backbones/iresnet.py``.

The benchmark's Face-S uses ``get_model("r100", fp16=False)`` loaded from ``backbone.pth``
(``models/arcface/inference.py``); this module rebuilds the same modules with the same names, so that file loads
with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
    "r200": (6, 26, 60, 6),
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + identity


class IResNet(nn.Module):
    fc_scale = 7 * 7  # 112x112 input -> 7x7 after four stride-2 stages

    def __init__(self, layers: tuple[int, int, int, int], num_features: int = 512, dropout: float = 0.0):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1])
        self.layer3 = self._make_layer(256, layers[2])
        self.layer4 = self._make_layer(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(planes, eps=1e-05),
        )
        layers = [IBasicBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


def iresnet(network: str = "r100", num_features: int = 512) -> IResNet:
    if network not in LAYERS:
        raise ValueError(f"unknown ArcFace network {network!r}; choose one of {', '.join(LAYERS)}")
    return IResNet(LAYERS[network], num_features=num_features)


def load_arcface(checkpoint: str | Path, network: str = "r100", device: str = "cpu") -> IResNet:
    """Build ``network`` and load an arcface_torch ``backbone.pth`` state dict (strict), in eval mode."""
    path = Path(checkpoint)
    if not str(checkpoint) or not path.is_file():
        raise FileNotFoundError(
            f"ArcFace checkpoint {str(checkpoint)!r} not found. Download the insightface arcface_torch {network} "
            "backbone.pth (the benchmark's models/arcface/weight/backbone.pth) and pass it with "
            "--set face.arcface_checkpoint=PATH or ALCHEMIST_ARCFACE_CHECKPOINT, or use --profile offline (dlib)."
        )
    from alchemist_data.models.checkpoints import load_exact, read_checkpoint, strip_prefix, unwrap_state_dict

    state = unwrap_state_dict(read_checkpoint(path, "ArcFace"), ("state_dict",))
    if isinstance(state, dict):
        state = strip_prefix(state)
    model = iresnet(network)
    layout = f"a plain state dict of arcface_torch's {network} IResNet (conv1, bn1, prelu, layer1..4, fc, features)"
    load_exact(model, state, path, "ArcFace", layout)
    return model.to(device).eval()
