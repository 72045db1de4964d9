"""AlchemistPipeline: personalized text-to-video inference (spec §6), in the diffusers pipeline style.

Inputs: a prompt, references ``{entity word: [images]}`` (segmented RGBA crops or RGB; transparent pixels become
white), an optional background image, frames / size / steps. Each denoising step runs three evaluations in one
batch, full / text dropped / images dropped, combined with the two-term CFG of spec §6 (sT = 8, sI = 3), and
takes an Euler step of the rectified-flow ODE on the same shifted time grid as training; a self-conditioning model
gets each branch's previous clean-latent estimate. Every input takes a path training took: without references a
stage-II model runs its personalization cross-attention on zeroed embeddings, as for a dropped image condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alchemist_data.media import decode_image, write_video
from alchemist_model.configs import VIDEO_FPS, ModelProfile, TrainConfig, model_profile, sample_steps_for
from alchemist_model.encoders import (
    Components,
    check_reference_word,
    encode_conditions,
    find_word_span,
    reference_to_tensor,
    white_fill,
)
from alchemist_model.flow import combine_guidance, euler_step, sampling_schedule, time_shift_for
from alchemist_model.transformer_alchemist import AlchemistTransformer3DModel

ImageLike = np.ndarray | str | Path


@dataclass
class AlchemistPipelineOutput:
    frames: np.ndarray  # (T, H, W, 3) uint8
    path: Path | None


def load_image(image: ImageLike, what: str = "image") -> np.ndarray:
    """Path or array -> RGB uint8 with transparent pixels filled white."""
    if isinstance(image, str | Path):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"{what}: file {str(path)!r} does not exist")
        try:
            array = decode_image(path.read_bytes())
        except OSError as err:  # PIL's UnidentifiedImageError is an OSError
            raise ValueError(f"{what}: {str(path)!r} is not a readable image ({err})") from err
    else:
        array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"{what}: expected a uint8 HxW[xC] image, got {array.dtype} {array.shape}")
    return white_fill(array)


class AlchemistPipeline:
    def __init__(
        self,
        transformer: AlchemistTransformer3DModel,
        components: Components,
        profile: ModelProfile,
        train_config: TrainConfig | None = None,
    ) -> None:
        self.transformer = transformer.eval()
        self.components = components
        self.profile = profile
        self.train_config = train_config or TrainConfig(profile=profile.name)

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | None = None, prefer_ema: bool = True) -> AlchemistPipeline:
        """Load a training RUN folder (offline: the run holds its encoders or their ids/paths)."""
        from alchemist_model.checkpoint import resolve_transformer_dir

        run_dir = Path(run_dir)
        if not (run_dir / "config.json").exists() or not (run_dir / "encoders" / "components.json").exists():
            raise ValueError(
                f"--checkpoint {str(run_dir)!r} is not a training run folder (config.json and "
                "encoders/ are missing); pass the --output folder of `alchemist train`"
            )
        cfg = TrainConfig.load(run_dir / "config.json")
        transformer = AlchemistTransformer3DModel.from_pretrained(
            resolve_transformer_dir(run_dir, prefer_ema), low_cpu_mem_usage=False
        )
        components = Components.load_saved(run_dir / "encoders")
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        pipe = cls(transformer, components, model_profile(cfg.profile), cfg)
        return pipe.to(dev)

    def to(self, device: torch.device | str) -> AlchemistPipeline:
        self.transformer.to(device)
        self.components.to(device)
        return self

    def prepare_references(
        self,
        prompt: str,
        references: dict[str, list[ImageLike]] | None,
        background: ImageLike | None = None,
        background_word: str | None = None,
    ) -> tuple[torch.Tensor | None, list[str]]:
        """Validate and order references (user order; the background last) -> (1, N, 3, S, S), words."""
        images: list[np.ndarray] = []
        words: list[str] = []
        for word, items in (references or {}).items():
            check_reference_word(prompt, word)
            if not items:
                raise ValueError(f"reference word {word!r} has no images")
            for item in items:
                images.append(load_image(item, what=f"reference image for {word!r}"))
                words.append(word)
        if background is not None:
            if background_word:
                find_word_span(prompt, background_word)
            images.append(load_image(background, what="background image"))
            words.append(background_word or "")
        max_images = self.transformer.config.max_images
        if len(images) > max_images:
            raise ValueError(
                f"{len(images)} reference images given (background included); the model takes at most {max_images}"
            )
        if not images:
            return None, []
        size = self.components.image_encoder.image_size_px
        return torch.stack([reference_to_tensor(img, size) for img in images])[None], words

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        references: dict[str, list[ImageLike]] | None = None,
        background: ImageLike | None = None,
        background_word: str | None = None,
        num_frames: int | None = None,
        width: int | None = None,
        height: int | None = None,
        num_inference_steps: int | None = None,
        text_guidance_scale: float = 8.0,
        image_guidance_scale: float = 3.0,
        seed: int = 0,
        output_path: str | Path | None = None,
        fps: float = VIDEO_FPS,
        progress: bool = True,
    ) -> AlchemistPipelineOutput:
        num_frames = num_frames or self.profile.num_frames
        width, height = width or self.profile.width_px, height or self.profile.height_px
        steps = num_inference_steps or sample_steps_for(width, height, self.profile)  # spec §6: by resolution
        vae = self.components.vae
        multiple = vae.spatial_compression * self.transformer.config.patch_size[1]
        if width % multiple or height % multiple:
            raise ValueError(f"--size {width}x{height}: width and height must be multiples of {multiple}")
        if (num_frames - 1) % vae.temporal_compression:
            raise ValueError(f"--frames {num_frames}: use 4k+1 frames (e.g. 9, 17, 49)")
        ref_images, words = self.prepare_references(prompt, references, background, background_word)
        device = self.device
        cfg = self.train_config
        stage = int(cfg.stage)
        if ref_images is not None and stage == 1:
            raise ValueError(
                "this run is stage I (text-to-video): it never learned reference images; generate "
                "without --ref/--background, or use a stage-II run"
            )
        conditions = encode_conditions(
            self.components,
            [prompt],
            ref_images,
            None if ref_images is None else torch.ones(1, len(words), dtype=torch.bool),
            [words],
            self.transformer.config.word_token_len,
        )
        # Batch of 3: (full), (text zeroed), (images zeroed).
        text = conditions["encoder_hidden_states"].repeat(3, 1, 1)
        text[1] = 0.0
        kwargs: dict[str, Any] = {
            "encoder_hidden_states": text,
            "encoder_attention_mask": conditions["encoder_attention_mask"].repeat(3, 1),
        }
        if ref_images is not None:
            kwargs.update(
                reference_image_tokens=conditions["reference_image_tokens"].repeat(3, 1, 1, 1),
                reference_word_tokens=conditions["reference_word_tokens"].repeat(3, 1, 1, 1),
                reference_mask=conditions["reference_mask"].repeat(3, 1),
                reference_keep=torch.tensor([1.0, 1.0, 0.0], device=device),
            )
        elif stage == 2:
            # Stage-II training never skips the personalization cross-attention: a dropped image condition runs it
            # on zeroed embeddings. Without references take that same path: one slot, zeroed in all three branches
            # (zero keys give the same attention output whatever the slot count or token count).
            config = self.transformer.config
            kwargs.update(
                reference_image_tokens=torch.zeros(3, 1, 1, config.cond_dim, device=device),
                reference_word_tokens=torch.zeros(3, 1, config.word_token_len, config.text_dim, device=device),
                reference_mask=torch.ones(3, 1, dtype=torch.bool, device=device),
                reference_keep=torch.zeros(3, device=device),
            )
        latent_shape = (
            1,
            vae.latent_channels,
            (num_frames - 1) // vae.temporal_compression + 1,
            height // vae.spatial_compression,
            width // vae.spatial_compression,
        )
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn(latent_shape, generator=generator).to(device)
        p_t, p_h, p_w = self.transformer.config.patch_size
        num_tokens = (latent_shape[2] // p_t) * (latent_shape[3] // p_h) * (latent_shape[4] // p_w)
        shift = time_shift_for(num_tokens, cfg.shift_base_tokens, cfg.time_shift)
        times = sampling_schedule(steps, shift)
        use_bf16 = device.type == "cuda"
        iterator = range(steps)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc="generate", unit="step")
        # Self-conditioning as in training: each branch sees its own previous clean-latent estimate x_t - t v
        # (zeros at the first step, like a training pass without an estimate).
        if self.transformer.config.self_conditioning:
            kwargs["self_conditioning_latents"] = torch.zeros((3, *latent_shape[1:]), device=device)
        for i in iterator:
            t, t_next = float(times[i]), float(times[i + 1])
            branches = latents.repeat(3, 1, 1, 1, 1)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                prediction = self.transformer(branches, torch.full((3,), t, device=device), **kwargs).sample.float()
            if "self_conditioning_latents" in kwargs:
                kwargs["self_conditioning_latents"] = branches - t * prediction
            full, no_text, no_image = prediction.chunk(3)
            image_scale = image_guidance_scale if ref_images is not None else 0.0
            velocity = combine_guidance(full, no_text, no_image, text_guidance_scale, image_scale)
            latents = euler_step(latents, velocity, t, t_next)
        # CogVideoX decodes an even latent count to 4 frames more than 4k+1 (all paper lengths are 8k+1): trim.
        video = vae.decode(latents)[0][:, :num_frames]  # (3, T, H, W) in [-1, 1]
        frames = ((video.permute(1, 2, 3, 0) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        path = write_video(output_path, frames, fps=fps) if output_path is not None else None
        return AlchemistPipelineOutput(frames, path)
