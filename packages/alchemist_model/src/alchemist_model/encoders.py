"""Frozen encoders and the VAE, each loadable from a hub id or a local directory, or built tiny and random.

* ``TextEncoder``: a T5 encoder (transformers ``T5EncoderModel``) and its *fast* tokenizer; the fast tokenizer's
  offset mapping gives the token positions of an entity word inside the caption (spec §3.4).
* ``ImageEncoder``: DINOv2 ViT-L/14 patch tokens from the last block (after its final LayerNorm [choice]), or
  CLIP ViT-L/14 patch tokens from the penultimate block (the Table 3 ablation). CLS tokens are dropped. Input
  policy [choice]: pad to a white square, resize to ``image_size_px`` (224 -> 16 x 16 = 256 tokens).
* ``VideoVAE``: diffusers ``AutoencoderKLCogVideoX`` (4x8x8, 16 channels); latents = posterior mode x
  ``scaling_factor`` [choice: the mode, not a sample, so data loading stays deterministic].

``random-tiny`` builds tiny random models from a fixed seed. Random weights are announced on stderr: anything
generated with them is noise that only proves the plumbing works. ``save(dir)`` writes a directory that
``load(dir)`` reads back offline (with a ``RANDOM_WEIGHTS`` marker so the announcement survives the round trip).
"""

from __future__ import annotations

import json
import re
import string
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from alchemist_data.benchmark_rules import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from alchemist_data.models.base import ModelLoadError, offline_hint, random_weights_notice
from alchemist_model.configs import RANDOM_TINY, WORD_TOKEN_LEN

RANDOM_MARKER = "RANDOM_WEIGHTS"
T = TypeVar("T")
_ANNOUNCED: set[str] = set()


# Words the tiny tokenizer knows as whole pieces (the sample corpus' vocabulary); anything else splits into
# characters, so every caption still tokenizes and has offsets.
_TINY_WORDS = (
    "a an the of in on at to and with across through near into by his her its their is are "
    "man woman boy girl person child dog cat horse bird car bicycle ball shirt hat jacket dress "
    "red blue green yellow white black orange purple brown gray small big young old "
    "walks runs plays sits stands rides jumps holds throws carries chases looks "
    "park beach street room kitchen field forest garden road city snow grass water sky"
).split()


def announce_random(component: str) -> None:
    """Say loudly (stderr, once per component) that a model runs with random weights."""
    if component in _ANNOUNCED:
        return
    _ANNOUNCED.add(component)
    notice = random_weights_notice(
        [component],
        "It is a tiny test model: its outputs are meaningless noise.",
        "Pass a hub id or local checkpoint directory for real results.",
    )
    print(f"[alchemist] WARNING: {notice}", file=sys.stderr, flush=True)


def _is_random_dir(source: str) -> bool:
    return Path(source).is_dir() and (Path(source) / RANDOM_MARKER).exists()


def _mark_random(path: Path, component: str) -> None:
    (path / RANDOM_MARKER).write_text(f"{component} was built with random weights (alchemist_model random-tiny)\n")


def _load_or_build(
    source: str, component: str, checkpoint: str, build_tiny: Callable[[], T], from_pretrained: Callable[[], T]
) -> tuple[T, bool]:
    """(model, is_random): ``build_tiny()`` for ``random-tiny``, else ``from_pretrained()`` from the hub id or local
    folder ``source`` (a failure names the ``checkpoint`` and how to work offline). Random weights, built or saved
    ones reloaded, are announced as ``component``."""
    if source == RANDOM_TINY:
        announce_random(component)
        return build_tiny(), True
    try:
        loaded = from_pretrained()
    except (OSError, ValueError) as err:
        raise _hub_error(checkpoint, source, err) from err
    is_random = _is_random_dir(source)
    if is_random:
        announce_random(component)
    return loaded, is_random


def _hub_error(kind: str, source: str, err: Exception) -> ModelLoadError:
    instead = (
        f"a local directory with the checkpoint, or a hub id with network access (HF_HUB_OFFLINE=1 forbids "
        f"downloads), or '{RANDOM_TINY}' for a tiny random model"
    )
    return ModelLoadError(offline_hint(f"the {kind} from {source!r}", err, instead))


def find_word_span(caption: str, word: str) -> tuple[int, int]:
    """Character span of the first whole-word, case-insensitive occurrence of ``word`` in ``caption``."""
    match = re.search(rf"(?<!\w){re.escape(word.strip())}(?!\w)", caption, flags=re.IGNORECASE)
    if match is None:
        raise ValueError(f"entity word {word!r} does not occur in the caption {caption!r}")
    return match.start(), match.end()


def check_reference_word(prompt: str, word: str) -> None:
    """A reference binds to a word of the prompt: a ValueError that says how to name one when ``word`` is not."""
    try:
        find_word_span(prompt, word)
    except ValueError as err:
        raise ValueError(
            f"reference word {word!r} does not occur in the prompt {prompt!r}; each --ref must name a word "
            "of the prompt (e.g. --ref 'dog=dog.png' for '... a dog ...')"
        ) from err


class FrozenComponent(nn.Module, ABC):
    """A frozen part of a run (text encoder, image encoder, VAE) that knows whether its weights are random.

    ``save(dir)`` writes what ``saved_parts`` lists with ``save_pretrained`` and, for random weights, the
    ``RANDOM_MARKER`` (naming the component ``marker_name``) that keeps the announcement across a reload.
    """

    marker_name: str

    def __init__(self, is_random: bool) -> None:
        super().__init__()
        self.is_random = is_random

    @abstractmethod
    def saved_parts(self) -> tuple[Any, ...]:
        """The objects whose ``save_pretrained`` writes this component's folder."""

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for part in self.saved_parts():
            part.save_pretrained(path)
        if self.is_random:
            _mark_random(path, self.marker_name)


@dataclass
class TextEncoding:
    hidden_states: torch.Tensor  # (B, L, E)
    mask: torch.Tensor  # (B, L) bool
    offsets: list[list[tuple[int, int]]]  # per prompt, per token: character span in the prompt ((0, 0) = special)


class TextEncoder(FrozenComponent):
    marker_name = "text encoder"

    def __init__(self, model: nn.Module, tokenizer, max_length: int, is_random: bool = False) -> None:
        super().__init__(is_random)
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    @classmethod
    def load(cls, source: str, max_length: int = 128, seed: int = 0) -> TextEncoder:
        from transformers import AutoTokenizer, T5EncoderModel

        def from_pretrained() -> tuple[nn.Module, Any]:
            tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
            return T5EncoderModel.from_pretrained(source), tokenizer

        (model, tokenizer), is_random = _load_or_build(
            source, "text encoder (T5)", "T5 text encoder", lambda: _tiny_t5(seed), from_pretrained
        )
        if not tokenizer.is_fast:
            raise ValueError(f"{source!r}: a fast tokenizer (tokenizer.json) is needed for entity-word offsets")
        return cls(model, tokenizer, max_length, is_random)

    def saved_parts(self) -> tuple[Any, ...]:
        return self.model, self.tokenizer

    @torch.no_grad()
    def encode(self, prompts: list[str], truncate: bool = True) -> TextEncoding:
        """Prompts -> token embeddings padded to ``max_length`` (``truncate=False``: every token, padded to the
        longest prompt; only used to recover the words a truncated encoding cut off)."""
        limits = {"padding": "max_length", "truncation": True, "max_length": self.max_length}
        batch = self.tokenizer(
            prompts,
            **(limits if truncate else {"padding": "longest", "truncation": False}),
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        device = next(self.model.parameters()).device
        mask = batch["attention_mask"].to(device)
        hidden = self.model(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
        offsets = [[(int(s), int(e)) for s, e in row] for row in batch["offset_mapping"].tolist()]
        return TextEncoding(hidden.float(), mask.bool(), offsets)

    @staticmethod
    def word_token_indices(prompt: str, word: str, offsets: list[tuple[int, int]]) -> list[int]:
        """Token positions whose character span overlaps the entity word's span in the prompt."""
        start, end = find_word_span(prompt, word)
        return [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]


def _tiny_t5(seed: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(ch, -5.0) for ch in string.ascii_letters + string.digits + string.punctuation]
    vocab += [("\u2581" + w, -1.0) for w in _TINY_WORDS]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Replace(" {2,}", " ")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer = T5TokenizerFast(
        tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0
    )
    config = T5Config(
        vocab_size=len(vocab),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5EncoderModel(config)
    return model, tokenizer


class ImageEncoder(FrozenComponent):
    """Reference images (N, 3, S, S) in [0, 1] -> patch tokens (N, L, D)."""

    def __init__(self, model: nn.Module, kind: str, image_size_px: int, is_random: bool = False) -> None:
        super().__init__(is_random)
        if kind not in ("dinov2", "clip"):
            raise ValueError(f"image encoder kind {kind!r}: choose dinov2 or clip")
        self.model = model.eval().requires_grad_(False)
        self.kind = kind
        self.image_size_px = image_size_px
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if kind == "dinov2" else (CLIP_MEAN, CLIP_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @classmethod
    def load(cls, kind: str, source: str, image_size_px: int = 224, seed: int = 0) -> ImageEncoder:
        from transformers import CLIPVisionModel, Dinov2Model

        model_class = Dinov2Model if kind == "dinov2" else CLIPVisionModel
        model, is_random = _load_or_build(
            source,
            f"image encoder ({kind})",
            f"{kind} image encoder",
            lambda: _tiny_image_model(kind, image_size_px, seed),
            lambda: model_class.from_pretrained(source),
        )
        return cls(model, kind, image_size_px, is_random)

    @property
    def marker_name(self) -> str:
        return f"image encoder ({self.kind})"

    def saved_parts(self) -> tuple[Any, ...]:
        return (self.model,)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixel_values = ((images - self.mean) / self.std).to(next(self.model.parameters()).dtype)
        if self.kind == "dinov2":
            # last_hidden_state = block 24 output after the final LayerNorm; drop CLS
            return self.model(pixel_values=pixel_values).last_hidden_state[:, 1:].float()
        hidden_states = self.model(pixel_values=pixel_values, output_hidden_states=True).hidden_states
        return hidden_states[-2][:, 1:].float()  # penultimate block (23 of 24), drop CLS


def _tiny_image_model(kind: str, image_size_px: int, seed: int) -> nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model

    # Both kinds are the same tiny ViT (/14 patches, as the real ones), in their own model class.
    vit = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "patch_size": 14,
        "image_size": image_size_px,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "dinov2":
            return Dinov2Model(Dinov2Config(**vit))
        return CLIPVisionModel(CLIPVisionConfig(**vit))


def white_fill(rgba: np.ndarray) -> np.ndarray:
    """RGBA uint8 -> RGB uint8 composited over white (transparent = white). RGB input passes through.

    How a reference crop becomes the image encoder's input, in training and at inference alike (the benchmark's
    own ``alpha == 0`` rule for scoring is ``alchemist_data.benchmark_rules.white_where_alpha_zero``)."""
    if rgba.ndim == 2:
        return np.repeat(rgba[..., None], 3, axis=-1)
    if rgba.shape[-1] == 3:
        return rgba
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def reference_to_tensor(image: np.ndarray, size_px: int) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (3, S, S) float in [0, 1]: pad to a white square, then resize (bicubic)."""
    import torch.nn.functional as F

    h, w = image.shape[:2]
    side = max(h, w)
    canvas = np.full((side, side, 3), 255, dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = image[..., :3]
    tensor = torch.from_numpy(canvas).permute(2, 0, 1).float()[None] / 255.0
    tensor = F.interpolate(tensor, size=(size_px, size_px), mode="bicubic", align_corners=False, antialias=True)
    return tensor[0].clamp(0.0, 1.0)


def _tiny_vae(seed: int) -> nn.Module:
    from diffusers import AutoencoderKLCogVideoX

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKLCogVideoX(
            block_out_channels=(8, 8, 8, 8),
            norm_num_groups=2,
            temporal_compression_ratio=4,
            latent_channels=16,
            layers_per_block=1,
            down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4,
        )


class VideoVAE(FrozenComponent):
    """Pixels (B, 3, F, H, W) in [-1, 1] <-> scaled latents (B, 16, (F-1)/4+1, H/8, W/8)."""

    marker_name = "video VAE"

    def __init__(self, vae: nn.Module, is_random: bool = False) -> None:
        super().__init__(is_random)
        self.vae = vae.eval().requires_grad_(False)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def temporal_compression(self) -> int:
        return self.vae.config.temporal_compression_ratio

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @classmethod
    def load(cls, source: str, subfolder: str = "vae", seed: int = 0) -> VideoVAE:
        from diffusers import AutoencoderKLCogVideoX

        sub = subfolder if subfolder and not (Path(source) / "config.json").exists() else None
        vae, is_random = _load_or_build(
            source,
            "video VAE (CogVideoX)",
            "CogVideoX VAE",
            lambda: _tiny_vae(seed),
            lambda: AutoencoderKLCogVideoX.from_pretrained(source, subfolder=sub, low_cpu_mem_usage=False),
        )
        return cls(vae, is_random)

    def saved_parts(self) -> tuple[Any, ...]:
        return (self.vae,)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        latents = self.vae.encode(video.to(dtype)).latent_dist.mode()
        return latents.float() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        return self.vae.decode((latents / self.vae.config.scaling_factor).to(dtype)).sample.float().clamp(-1, 1)


@dataclass
class Components:
    """The frozen parts of a run, loaded once."""

    text_encoder: TextEncoder
    image_encoder: ImageEncoder
    vae: VideoVAE

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Components:
        for module in (self.text_encoder, self.image_encoder, self.vae):
            module.to(device)
            if dtype is not None:
                module.to(dtype)
        return self

    sources: dict[str, str] | None = None  # where real (non-random) components came from

    def save(self, path: Path) -> None:
        """RUN/encoders/: random components are saved in full (a run must reload offline); real ones are
        referenced by their hub id / path in components.json (copying the CogVideoX-5b VAE per run helps nobody)."""
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "image_encoder_kind": self.image_encoder.kind,
            "image_size_px": self.image_encoder.image_size_px,
            "max_text_tokens": self.text_encoder.max_length,
            "sources": {},
        }
        sources = self.sources or {}
        for name, module in (
            ("text_encoder", self.text_encoder),
            ("image_encoder", self.image_encoder),
            ("vae", self.vae),
        ):
            if module.is_random or name not in sources:
                module.save(path / name)
                meta["sources"][name] = name
            else:
                meta["sources"][name] = sources[name]
        (path / "components.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load_saved(cls, path: Path) -> Components:
        meta = json.loads((path / "components.json").read_text())

        def where(name: str) -> str:
            source = meta["sources"][name]
            return str(path / source) if (path / source).is_dir() else source

        return cls(
            TextEncoder.load(where("text_encoder"), max_length=meta["max_text_tokens"]),
            ImageEncoder.load(meta["image_encoder_kind"], where("image_encoder"), meta["image_size_px"]),
            VideoVAE.load(where("vae")),
            sources={k: where(k) for k in meta["sources"]},
        )


def load_image_encoder(profile, kind: str = "dinov2", seed: int = 0) -> tuple[ImageEncoder, str]:
    """The profile's ``kind`` image encoder and where it came from; a random one is drawn from ``seed + 1`` (the
    text encoder takes ``seed``, the VAE ``seed + 2``), so a run's random components do not depend on which of them
    were loaded together."""
    source = profile.image_encoder_dinov2 if kind == "dinov2" else profile.image_encoder_clip
    return ImageEncoder.load(kind, source, profile.image_size_px, seed=seed + 1), source


def load_components(profile, image_encoder: str = "dinov2", seed: int = 0) -> Components:
    """Load the profile's encoders and VAE (hub ids / local paths / random-tiny)."""
    image, source = load_image_encoder(profile, image_encoder, seed)
    return Components(
        TextEncoder.load(profile.text_encoder, max_length=profile.max_text_tokens, seed=seed),
        image,
        VideoVAE.load(profile.vae, profile.vae_subfolder, seed=seed + 2),
        sources={"text_encoder": profile.text_encoder, "image_encoder": source, "vae": profile.vae},
    )


@dataclass
class TextConditions:
    """The text side of a batch: what the text encoder gives, or what ``alchemist encode`` stored."""

    hidden_states: torch.Tensor  # (B, L, E) embeddings of the truncated caption (zeros past the mask)
    mask: torch.Tensor  # (B, L) bool
    word_tokens: list[dict[str, torch.Tensor]]  # per caption: entity word -> its (k, E) token embeddings


def entity_word_tokens(
    text_encoder: TextEncoder, prompts: list[str], encoding: TextEncoding, words: list[list[str]]
) -> list[dict[str, torch.Tensor]]:
    """Per prompt, each entity word's token embeddings cut from the *full* caption's encoding (spec §3.4).

    A word the tokenizer's truncation (``max_text_tokens``) cuts off, wholly or in part, would get no tokens and its
    reference would be bound to nothing; its tokens come from an untruncated encoding of that prompt instead (T5's
    relative positions take any length). The text cross-attention still sees the truncated caption.
    """
    out: list[dict[str, torch.Tensor]] = []
    for b, prompt in enumerate(prompts):
        tokens: dict[str, torch.Tensor] = {}
        full: TextEncoding | None = None
        for word in dict.fromkeys(w for w in (words[b] if b < len(words) else []) if w):
            indices = kept_word_indices(prompt, word, encoding.offsets[b])
            if indices is not None:
                tokens[word] = encoding.hidden_states[b, indices]
                continue
            full = full or text_encoder.encode([prompt], truncate=False)
            tokens[word] = full.hidden_states[0, TextEncoder.word_token_indices(prompt, word, full.offsets[0])]
        out.append(tokens)
    return out


def kept_word_indices(prompt: str, word: str, offsets: list[tuple[int, int]]) -> list[int] | None:
    """Token positions of ``word`` in an encoding of ``prompt``, or None when its truncation cut the word off
    (wholly or in part)."""
    covered_to = max((e for _, e in offsets), default=0)  # last character the encoding kept
    if find_word_span(prompt, word)[1] > covered_to:
        return None
    return TextEncoder.word_token_indices(prompt, word, offsets)


def encode_text(components: Components, captions: list[str], words: list[list[str]]) -> TextConditions:
    text = components.text_encoder.encode(captions)
    hidden = text.hidden_states * text.mask[..., None].to(text.hidden_states.dtype)  # padding positions carry nothing
    return TextConditions(hidden, text.mask, entity_word_tokens(components.text_encoder, captions, text, words))


def encode_conditions(
    components: Components,
    captions: list[str],
    ref_images: torch.Tensor | None = None,
    ref_mask: torch.Tensor | None = None,
    ref_words: list[list[str]] | None = None,
    word_token_len: int = WORD_TOKEN_LEN,
    text: TextConditions | None = None,
) -> dict[str, torch.Tensor]:
    """Frozen-encoder inputs of the transformer for a batch (text always; references when given).

    ``text`` skips the text encoder (precomputed embeddings). Word tokens are cut from the *full* caption's
    encoding (spec §3.4), before any text-condition dropout. A reference with an empty word (a background whose
    caption has no background word) gets zero word tokens.
    """
    from alchemist_model.personalization import pad_word_tokens

    if text is None:
        text = encode_text(components, captions, ref_words or [])
    out = {"encoder_hidden_states": text.hidden_states, "encoder_attention_mask": text.mask}
    if ref_images is None:
        return out
    device = text.hidden_states.device
    batch_size, num_images = ref_images.shape[:2]
    ref_mask = ref_mask.to(device)
    valid = ref_images.to(device)[ref_mask]  # (M, 3, S, S): encode real images only
    tokens = components.image_encoder(valid)
    image_tokens = tokens.new_zeros((batch_size, num_images) + tuple(tokens.shape[1:]))
    image_tokens[ref_mask] = tokens
    word_tokens = text.hidden_states.new_zeros(batch_size, num_images, word_token_len, text.hidden_states.shape[-1])
    for b in range(batch_size):
        for n, word in enumerate(ref_words[b]):
            if word:
                word_tokens[b, n] = pad_word_tokens(text.word_tokens[b][word].to(device), word_token_len)
    out.update(reference_image_tokens=image_tokens, reference_word_tokens=word_tokens, reference_mask=ref_mask)
    return out
