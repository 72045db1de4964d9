"""Size profiles and training configuration.

A profile fixes everything about the *shape* of a run: the transformer's init kwargs, which encoders and VAE to
load (hub id, local path, or ``random-tiny``), the clip resolution and length, and the batch size. The training
config holds the optimisation and data choices; every choice the paper leaves open (spec §10) is a field here,
and docs/model.md lists them.

Profiles:

* ``tiny``: 2 blocks, width 24, random tiny encoders and VAE, 64x48 pixels, 9 frames. CPU tests and the demo.
* ``small``: 12 blocks, width 768 (12 heads x 64); one GPU; real encoders; 256x144, 17 frames.
* ``base``: 24 blocks, width 1536 (24 heads x 64); one GPU (bf16, gradient checkpointing); 256x144, 49 frames.
* ``paper``: 32 blocks, width 4096, 32 heads (spec §3.1); 512x288, 49 frames; FSDP on many GPUs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

#: Spec §4, Table 5: at most six conditioning images per sample.
MAX_REFERENCE_IMAGES = 6

#: Entity-word tokens kept per reference image (spec §3.4): the model's and ``TrainConfig``'s default.
WORD_TOKEN_LEN = 3

#: The frame rate training samples clips at and generation writes (frame counts 4k+1 are at this rate).
VIDEO_FPS = 24.0

#: Spec §4 (Table 6): a 1k-step linear warm-up in stage II; Table 6 lists none for stage I.
STAGE_WARMUP_STEPS = {1: 0, 2: 1_000}

#: ``TrainConfig.init_from`` value that asks for a random stage-II backbone on purpose (debugging only).
RANDOM_INIT = "random"

# Real checkpoints (hub ids; a local directory with the same layout works everywhere a hub id does).
DINOV2_L14 = "facebook/dinov2-large"  # ViT-L/14, 24 blocks, 1024 channels: 256 patch tokens at 224 px
CLIP_L14 = "openai/clip-vit-large-patch14"  # ViT-L/14 vision tower; we take block 23 (penultimate)
T5_TEXT = "google/t5-v1_1-large"  # d_model 1024 = the paper's "conditioning channels 1024" (spec §3.1, [I])
COGVIDEOX_VAE = "THUDM/CogVideoX-5b"  # subfolder "vae": 4x8x8, 16 latent channels (spec §3.1)

RANDOM_TINY = "random-tiny"


@dataclass(kw_only=True)
class ModelProfile:
    name: str
    #: AlchemistTransformer3DModel init kwargs (text_dim / cond_dim are filled from the encoders).
    transformer: dict[str, Any]
    text_encoder: str = T5_TEXT
    image_encoder_dinov2: str = DINOV2_L14
    image_encoder_clip: str = CLIP_L14
    vae: str = COGVIDEOX_VAE
    vae_subfolder: str = "vae"
    #: Encoder input side in pixels (224 -> 16x16 = 256 patch tokens for a /14 ViT, spec §3.3).
    image_size_px: int = 224
    width_px: int = 256
    height_px: int = 144
    num_frames: int = 17  # 4k+1 (spec §4)
    batch_size: int = 8
    max_text_tokens: int = 128
    parallelism: Literal["ddp", "fsdp"] = "ddp"
    gradient_checkpointing: bool = False
    #: Sampling steps when the requested size is none of spec §6's classes (see ``sample_steps_for``).
    sample_steps: int = 256

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _transformer(num_layers: int, num_heads: int, head_dim: int) -> dict[str, Any]:
    return {
        "num_layers": num_layers,
        "num_attention_heads": num_heads,
        "attention_head_dim": head_dim,
        "mlp_ratio": 4.0,
    }


PROFILES: dict[str, ModelProfile] = {
    "tiny": ModelProfile(
        name="tiny",
        transformer=_transformer(2, 2, 12),
        text_encoder=RANDOM_TINY,
        image_encoder_dinov2=RANDOM_TINY,
        image_encoder_clip=RANDOM_TINY,
        vae=RANDOM_TINY,
        image_size_px=56,  # tiny ViT with patch 14: 4x4 = 16 tokens per image
        width_px=64,
        height_px=48,
        num_frames=9,
        batch_size=2,
        max_text_tokens=32,
        sample_steps=8,
    ),
    "small": ModelProfile(name="small", transformer=_transformer(12, 12, 64), batch_size=8),
    "base": ModelProfile(
        name="base",
        transformer=_transformer(24, 24, 64),
        num_frames=49,
        batch_size=4,
        gradient_checkpointing=True,
    ),
    "paper": ModelProfile(
        name="paper",
        transformer=_transformer(32, 32, 128),
        width_px=512,
        height_px=288,
        num_frames=49,
        batch_size=1,
        parallelism="fsdp",
        gradient_checkpointing=True,
        sample_steps=128,
    ),
}


#: Spec §6: sampling steps per output resolution (time shifting aligns their SNR).
SAMPLE_STEPS_BY_RESOLUTION: dict[tuple[int, int], int] = {(256, 144): 256, (512, 288): 128, (1024, 576): 64}


def sample_steps_for(width: int, height: int, profile: ModelProfile) -> int:
    """Sampling steps for the requested size: spec §6's count for the resolution class with the nearest pixel count
    (any aspect: 144x256 counts as 256x144) when within a factor of 2 of it, else the profile's own (tiny)."""
    area = width * height
    (w, h), steps = min(SAMPLE_STEPS_BY_RESOLUTION.items(), key=lambda kv: abs(math.log(area / (kv[0][0] * kv[0][1]))))
    return steps if abs(math.log(area / (w * h))) <= math.log(2.0) else profile.sample_steps


def model_profile(name: str) -> ModelProfile:
    if name not in PROFILES:
        raise ValueError(f"unknown model profile {name!r}: choose one of {sorted(PROFILES)}")
    return dataclasses.replace(PROFILES[name], transformer=dict(PROFILES[name].transformer))


@dataclass(kw_only=True)
class DataConfig:
    """Dataset choices (spec §5). Fields marked [choice] are not stated in the paper."""

    fps: float = VIDEO_FPS
    #: Reference sampling of spec §5.3.
    max_subjects: int = 3
    max_images_per_subject: int = 3
    background_prob: float = 0.5
    max_reference_images: int = MAX_REFERENCE_IMAGES
    #: [choice] object words are sampled as "subjects" too (they have segmented crops like subjects).
    include_objects: bool = True
    #: [choice] spec §2.3 extracts face crops of human subjects but leaves their use open: each drawn image of a
    #: subject with face crops is one of them with this probability (its word binding unchanged), so the model
    #: learns both conditionings the benchmark tests (subject mode and face mode). 0 = segmented crops only.
    face_crop_prob: float = 0.5
    #: Spec §5.2 augmentations; off = the "No augmentation" ablation of Table 3.
    augment: bool = True
    #: [choice] augmentations of the background plate (spec §5.2 lists them for references): "all", "frame_safe"
    #: (all but rotation and shear, whose white corners a clean background never has) or "none".
    background_augment: Literal["all", "frame_safe", "none"] = "frame_safe"
    #: [choice] target clip start: "random" offset inside the clip, or "start".
    clip_start: Literal["random", "start"] = "random"
    #: Multi-resolution / multi-duration buckets (spec §4, Table 6; alchemist_model/buckets.py): "" = one bucket,
    #: the profile's size and length; "table6", a Table 6 column ("table6-256x144", ...) or "WxHxF[:weight],...".
    buckets: str = ""
    #: [choice] aspect classes (width / height) the buckets group clips by; Table 6 itself is 16:9 only.
    bucket_aspect_ratios: tuple[float, ...] = (16 / 9, 4 / 3, 1.0, 3 / 4, 9 / 16)


@dataclass(kw_only=True)
class TrainConfig:
    """One training run. Every field is saved to RUN/config.json."""

    profile: str = "tiny"
    steps: int = 100
    #: 1: text-to-video backbone only (personalization branch unused and frozen); 2: personalization.
    stage: Literal[1, 2] = 2
    #: Stage II trains only the new cross-attention (+ the personalization embedder) for this many steps,
    #: then the whole model (spec §4: 10k of 40k).
    stage2_cross_attn_only_steps: int = 10_000
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01
    grad_clip: float = 0.05
    #: Linear LR warm-up; None: the stage's value of spec §4 (stage I none, stage II 1k steps). Resolved and saved
    #: in RUN/config.json at the first start, like every schedule length, so a resume never recomputes it.
    warmup_steps: int | None = None
    batch_size: int | None = None  # None: the profile's
    seed: int = 0
    #: [choice] "logit_normal" (SD3's default, mean 0 std 1) or "uniform".
    timestep_sampling: Literal["uniform", "logit_normal"] = "logit_normal"
    #: [choice] SD3 time shift s; None: s = sqrt(num_tokens / shift_base_tokens), at least 1.
    time_shift: float | None = None
    shift_base_tokens: int = 1024
    #: Spec §4: each condition dropped (zeroed) 10 % of the time, [choice] independently.
    text_drop_prob: float = 0.1
    image_drop_prob: float = 0.1
    #: [choice] EMA is off by default (the paper does not say); 0.9999 is a usual value for long runs.
    ema_decay: float | None = None
    #: Self-conditioning (spec §3.1, Analog Bits): with this probability per sample a first pass without gradients
    #: estimates the clean latents and the trained pass sees that estimate; [S] 0.9 as in Set-and-Sequence (same
    #: backbone family). 0 = off (ablation): the model is then built without the self-conditioning input.
    self_conditioning_prob: float = 0.9
    #: Ablations of spec §8.4 (Table 3).
    image_encoder: Literal["dinov2", "clip"] = "dinov2"
    use_word_tokens: bool = True
    #: [choice] word tokens padded/truncated to this many tokens (Fig. 3 draws 3).
    word_token_len: int = WORD_TOKEN_LEN
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    gradient_checkpointing: bool | None = None  # None: the profile's
    checkpoint_every: int = 500
    log_every: int = 1
    num_data_workers: int = 0  # torch DataLoader workers
    data: DataConfig = field(default_factory=DataConfig)
    #: Stage II starting point: a stage-I RUN directory or transformer folder. Required for stage II outside the
    #: tiny profile; ``random`` asks for a random backbone explicitly (the tiny profile allows empty, with a warning).
    init_from: str = ""
    #: Ray Train input: "loader" (each rank reads its share of the seeded order with a DataLoader; exact resume)
    #: or "ray_data" (a Ray Data stream of the same samples split across workers; decoding scales with the
    #: cluster's CPUs, but the rank a sample lands on is not fixed, so resume is not bit-exact).
    data_source: Literal["loader", "ray_data"] = "loader"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolved(self) -> TrainConfig:
        """A copy with every derived schedule length filled in (what RUN/config.json stores at the first start)."""
        out = TrainConfig.from_dict(self.to_dict())
        if not 0.0 <= out.self_conditioning_prob <= 1.0:
            raise ValueError(f"self_conditioning_prob={out.self_conditioning_prob}: use a probability in [0, 1]")
        if out.warmup_steps is None:
            out.warmup_steps = STAGE_WARMUP_STEPS[int(out.stage)]
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        raw = dict(raw)
        data = dict(raw.pop("data", {}))
        if "bucket_aspect_ratios" in data:  # JSON has no tuples
            data["bucket_aspect_ratios"] = tuple(data["bucket_aspect_ratios"])
        data = DataConfig(**data)
        if "betas" in raw:
            raw["betas"] = tuple(raw["betas"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown training config fields {sorted(unknown)}")
        return cls(data=data, **raw)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
