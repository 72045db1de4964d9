"""Optical flow backends shared by curation (the motion pre-filter) and evaluation (Dync-D).

* :class:`DisFlow`: OpenCV DIS (``PRESET_MEDIUM``) on grayscale frames, a real, CPU-fast stand-in for RAFT;
* :class:`RaftFlow`: torchvision ``raft_large`` with the raft-things weights (the benchmark's Dync-D model).

Both return one ``(H, W, 2)`` float32 flow in pixels per frame pair: ``pairs(firsts, seconds)`` for arbitrary pairs,
``flows(frames)`` for consecutive frames of one sequence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class DisFlow:
    """OpenCV DIS optical flow (``PRESET_MEDIUM``) on grayscale frames: a real, CPU-fast stand-in for RAFT."""

    pads_to_8 = False

    def setup(self) -> None:
        import cv2

        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def pairs(self, firsts: np.ndarray, seconds: np.ndarray) -> list[np.ndarray]:
        import cv2

        gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in (*firsts, *seconds)]
        n = len(firsts)
        return [self.dis.calc(gray[i], gray[n + i], None) for i in range(n)]

    def flows(self, frames: np.ndarray) -> list[np.ndarray]:
        return self.pairs(frames[:-1], frames[1:]) if len(frames) >= 2 else []


# princeton-vl/RAFT module names -> torchvision raft_large names (the same RAFT-large architecture). Applied in
# order to the key without "module."; a shared norm registered twice by princeton (layerN.0.norm3, also
# downsample.1) is dropped.
_RAFT_RENAMES = (
    (r"^fnet\.", "feature_encoder."),
    (r"^cnet\.", "context_encoder."),
    (r"^(feature|context)_encoder\.conv1\.", r"\1_encoder.convnormrelu.0."),
    (r"^(feature|context)_encoder\.norm1\.", r"\1_encoder.convnormrelu.1."),
    (r"^(feature|context)_encoder\.conv2\.", r"\1_encoder.conv."),
    (r"\.(layer\d\.\d)\.conv([12])\.", r".\1.convnormrelu\2.0."),
    (r"\.(layer\d\.\d)\.norm([12])\.", r".\1.convnormrelu\2.1."),
    (r"^update_block\.encoder\.convc([12])\.", r"update_block.motion_encoder.convcorr\1.0."),
    (r"^update_block\.encoder\.convf([12])\.", r"update_block.motion_encoder.convflow\1.0."),
    (r"^update_block\.encoder\.conv\.", "update_block.motion_encoder.conv.0."),
    (r"^update_block\.gru\.conv([zrq])([12])\.", r"update_block.recurrent_block.convgru\2.conv\1."),
    (r"^update_block\.mask\.0\.", "mask_predictor.convrelu.0."),
    (r"^update_block\.mask\.2\.", "mask_predictor.conv."),
)
RAFT_LAYOUT = (
    "princeton-vl RAFT raft-things.pth (module.fnet..., module.cnet..., module.update_block...) or torchvision "
    "raft_large (feature_encoder..., context_encoder..., update_block..., mask_predictor...)"
)


def raft_princeton_to_torchvision(state: dict) -> dict:
    """A princeton-vl/RAFT state dict (``raft-things.pth``: ``module.fnet...``) under torchvision's names."""
    import re

    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if re.search(r"\.layer\d\.\d\.norm3\.", key):
            continue
        for pattern, repl in _RAFT_RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


class RaftFlow:
    """RAFT (torchvision ``raft_large``) with the raft-things weights, 20 iterations, frames padded to a multiple of
    8 by edge replication as RAFT's ``InputPadder`` (sintel mode) does; the flow is returned at the padded size,
    because the official top-5 % cut is taken on the padded flow (:func:`unpad` crops it back).

    The checkpoint may be the benchmark's own princeton-vl ``raft-things.pth`` (converted to torchvision's names on
    load) or torchvision's ``raft_large_C_T_V1`` file; any other layout fails naming the file.
    ``setting`` names the option that sets the checkpoint, for the error message of a missing file.
    """

    pads_to_8 = True

    def __init__(
        self,
        checkpoint: str,
        iters: int = 20,
        device: str = "cpu",
        batch_size: int = 8,
        setting: str = "--set raft_checkpoint=PATH",
    ) -> None:
        self.checkpoint, self.iters, self.device, self.batch_size = checkpoint, iters, device, batch_size
        self.setting = setting

    def setup(self) -> None:
        from torchvision.models.optical_flow import raft_large

        from alchemist_data.models.checkpoints import load_exact, read_checkpoint, strip_prefix

        if not self.checkpoint or not Path(self.checkpoint).is_file():
            raise FileNotFoundError(
                f"RAFT checkpoint {self.checkpoint!r} not found. Download the benchmark's RAFT weights "
                "(princeton-vl/RAFT models.zip -> models/raft-things.pth) or torchvision's port of them "
                f"(raft_large_C_T_V1-22a6c225.pth) and pass {self.setting} or ALCHEMIST_RAFT_CHECKPOINT, or use "
                "--profile offline (OpenCV DIS)."
            )
        state = read_checkpoint(self.checkpoint, "RAFT")
        if isinstance(state, dict) and any(k.removeprefix("module.").startswith("fnet.") for k in state):
            state = raft_princeton_to_torchvision(state)
        elif isinstance(state, dict):
            state = strip_prefix(state)
        self.model = raft_large(weights=None, progress=False)
        load_exact(self.model, state, self.checkpoint, "RAFT", RAFT_LAYOUT)
        self.model.to(self.device).eval()

    def _prepare(self, frames: np.ndarray):
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        h, w = x.shape[-2:]
        pad_h, pad_w = (((h // 8) + 1) * 8 - h) % 8, (((w // 8) + 1) * 8 - w) % 8
        # torchvision's RAFT needs >= 128 px (its correlation pyramid); smaller videos are padded further, the one
        # deviation from InputPadder (the benchmark's videos are 256 px and more).
        pad_h, pad_w = max(pad_h, 128 - h), max(pad_w, 128 - w)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2], mode="replicate")
        # Original RAFT maps 0..255 to [-1, 1] inside forward; torchvision expects it done.
        return x / 255.0 * 2.0 - 1.0

    def pairs(self, firsts: np.ndarray, seconds: np.ndarray) -> list[np.ndarray]:
        import torch

        if len(firsts) != len(seconds):
            raise ValueError(f"got {len(firsts)} first frames but {len(seconds)} second frames")
        if len(firsts) == 0:
            return []
        a_all, b_all = self._prepare(np.asarray(firsts)), self._prepare(np.asarray(seconds))
        out = []
        with torch.inference_mode():
            for i in range(0, len(a_all), self.batch_size):
                a = a_all[i : i + self.batch_size].to(self.device)
                b = b_all[i : i + self.batch_size].to(self.device)
                flow = self.model(a, b, num_flow_updates=self.iters)[-1]
                out.extend(f.permute(1, 2, 0).cpu().numpy() for f in flow)
        return out

    def flows(self, frames: np.ndarray) -> list[np.ndarray]:
        return self.pairs(frames[:-1], frames[1:]) if len(frames) >= 2 else []


def unpad(flow: np.ndarray, height_px: int, width_px: int) -> np.ndarray:
    """The ``height_px`` x ``width_px`` centre of a flow computed on centre-padded frames (RaftFlow's padding)."""
    top, left = (flow.shape[0] - height_px) // 2, (flow.shape[1] - width_px) // 2
    return flow[top : top + height_px, left : left + width_px]
