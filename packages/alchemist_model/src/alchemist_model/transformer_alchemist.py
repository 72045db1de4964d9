"""AlchemistTransformer3DModel: the Video Alchemist DiT (spec §3), modelled on diffusers' transformer_wan.py.

Each block (spec §3.2): self-attention over video tokens (3D RoPE, QK-norm) -> cross-attention to the text
embeddings -> cross-attention to the personalization embeddings -> MLP. Every residual branch is gated by an
adaLN-Zero scale (DiT): the modulation layers are zero-initialised, so a fresh block is the identity and a
fresh model predicts zero.

Choices where the paper is silent (spec §10; docs/model.md):

* RoPE axis split (``rope_axes_dim``): default as in Wan, h = w = 2 * (head_dim // 6), t = the rest
  (head_dim 128 -> t 44, h 42, w 42); each axis uses theta 10000 and positions in patch units.
* QK-norm: RMSNorm per head over head_dim, on queries and keys of all three attentions.
* adaLN: per-block ``Linear(dim, 7 * dim)`` on SiLU(temb): shift/scale/gate for self-attention and MLP plus a
  gate for the text cross-attention; the personalization cross-attention has its own zero-initialised gate
  layer so that a stage-I checkpoint extended with it starts stage II as exactly the stage-I model.
* Cross-attention inputs go through an affine LayerNorm (no modulation) as in Wan's ``cross_attn_norm``.
* MLP ratio 4 with tanh-GELU; text and personalization contexts are projected to keys/values directly from their
  own widths (``text_dim``, ``cond_dim``).
* Timestep: flow time t in [0, 1], scaled by 1000 before the sinusoidal embedding.
* Self-conditioning (spec §3.1, Analog Bits; ``self_conditioning=True``): the previous estimate of the clean
  latents enters through its own zero-initialised patch embedding, added to the video tokens (zeros when absent),
  so a fresh model ignores it.

Shapes: B batch, C latent channels, F latent frames, H/W latent height/width, S video tokens, D width,
Lt text tokens, Lp personalization tokens.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from alchemist_model.configs import MAX_REFERENCE_IMAGES, WORD_TOKEN_LEN
from alchemist_model.personalization import PersonalizationEmbedder


def rope_axes_split(head_dim: int) -> tuple[int, int, int]:
    """(t, h, w) rotary dims of one head: Wan's split, every part even."""
    h_dim = w_dim = 2 * (head_dim // 6)
    t_dim = head_dim - h_dim - w_dim
    return t_dim, h_dim, w_dim


class AlchemistRotaryPosEmbed(nn.Module):
    """3D RoPE over (frame, row, column) patch positions; returns cos/sin of shape (1, 1, S, head_dim)."""

    def __init__(self, axes_dim: tuple[int, int, int], theta: float = 10000.0) -> None:
        super().__init__()
        assert all(d % 2 == 0 for d in axes_dim), axes_dim
        self.axes_dim = tuple(axes_dim)
        self.theta = theta

    def forward(self, num_frames: int, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        grids = torch.meshgrid(
            torch.arange(num_frames, device=device, dtype=torch.float64),
            torch.arange(height, device=device, dtype=torch.float64),
            torch.arange(width, device=device, dtype=torch.float64),
            indexing="ij",
        )
        angles = []
        for positions, dim in zip(grids, self.axes_dim, strict=True):
            inv_freq = 1.0 / (self.theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim))
            # (S, dim/2) -> interleaved pairs (S, dim)
            angle = positions.reshape(-1, 1) * inv_freq[None]
            angles.append(angle.repeat_interleave(2, dim=-1))
        angles = torch.cat(angles, dim=-1)
        return angles.cos().float()[None, None], angles.sin().float()[None, None]


def apply_rotary_emb(hidden_states: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs (x0, x1) by the position angle; hidden_states: (B, heads, S, head_dim)."""
    x1, x2 = hidden_states.float().unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack([-x2, x1], dim=-1).flatten(-2)
    out = hidden_states.float() * freqs_cos + rotated * freqs_sin
    return out.type_as(hidden_states)


class AlchemistAttention(nn.Module):
    """Multi-head attention with QK-norm; self-attention when ``kv_dim`` is None, cross-attention otherwise."""

    def __init__(
        self, dim: int, heads: int, head_dim: int, kv_dim: int | None = None, qk_norm: bool = True, eps: float = 1e-6
    ) -> None:
        super().__init__()
        inner_dim = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner_dim)
        self.to_k = nn.Linear(kv_dim or dim, inner_dim)
        self.to_v = nn.Linear(kv_dim or dim, inner_dim)
        self.to_out = nn.Linear(inner_dim, dim)
        self.norm_q = nn.RMSNorm(head_dim, eps=eps) if qk_norm else nn.Identity()
        self.norm_k = nn.RMSNorm(head_dim, eps=eps) if qk_norm else nn.Identity()

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        # (B, L, heads * head_dim) -> (B, heads, L, head_dim)
        # QK-norm in fp32 (its weight stays fp32 under autocast), back to the compute dtype for attention.
        value = self.to_v(context).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        query = self.to_q(hidden_states).unflatten(-1, (self.heads, -1))
        query = self.norm_q(query.float()).to(value.dtype).transpose(1, 2)
        key = self.to_k(context).unflatten(-1, (self.heads, -1))
        key = self.norm_k(key.float()).to(value.dtype).transpose(1, 2)
        if rotary_emb is not None:
            query = apply_rotary_emb(query, *rotary_emb)
            key = apply_rotary_emb(key, *rotary_emb)
        mask = None
        has_keys = None
        if attention_mask is not None:
            # A row with no valid key (e.g. no text) would give NaN; attend to everything and zero it afterwards.
            has_keys = attention_mask.any(dim=-1)
            mask = (attention_mask | ~has_keys[:, None])[:, None, None, :]
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        out = self.to_out(out.transpose(1, 2).flatten(2))
        if has_keys is not None:
            out = out * has_keys[:, None, None].to(out.dtype)
        return out


class AlchemistTransformerBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        text_dim: int,
        cond_dim: int,
        mlp_ratio: float,
        qk_norm: bool,
        eps: float,
    ) -> None:
        super().__init__()
        # 1. Self-attention (modulated norm)
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.attn1 = AlchemistAttention(dim, num_heads, head_dim, None, qk_norm, eps)
        # 2. Text cross-attention
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=True)
        self.attn2 = AlchemistAttention(dim, num_heads, head_dim, text_dim, qk_norm, eps)
        # 3. Personalization cross-attention (the layer added in stage II)
        self.norm3 = nn.LayerNorm(dim, eps=eps, elementwise_affine=True)
        self.attn3 = AlchemistAttention(dim, num_heads, head_dim, cond_dim, qk_norm, eps)
        self.personalization_gate = nn.Linear(dim, dim)
        # 4. MLP (modulated norm)
        self.norm4 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        hidden = int(dim * mlp_ratio)
        self.ff = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        # adaLN-Zero: shift/scale/gate (self-attn), gate (text), shift/scale/gate (MLP)
        self.adaln_modulation = nn.Linear(dim, 7 * dim)
        for layer in (self.adaln_modulation, self.personalization_gate):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None,
        personalization_hidden_states: torch.Tensor | None,
        personalization_attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        # temb: (B, D), already SiLU-activated -> 7 x (B, 1, D)
        shift_msa, scale_msa, gate_msa, gate_text, shift_mlp, scale_mlp, gate_mlp = self.adaln_modulation(temb)[
            :, None
        ].chunk(7, dim=-1)
        norm_hidden_states = self.norm1(hidden_states) * (1 + scale_msa) + shift_msa
        hidden_states = hidden_states + gate_msa * self.attn1(norm_hidden_states, rotary_emb=rotary_emb)

        attn_output = self.attn2(self.norm2(hidden_states), encoder_hidden_states, encoder_attention_mask)
        hidden_states = hidden_states + gate_text * attn_output

        if personalization_hidden_states is not None:
            attn_output = self.attn3(
                self.norm3(hidden_states), personalization_hidden_states, personalization_attention_mask
            )
            hidden_states = hidden_states + self.personalization_gate(temb)[:, None] * attn_output

        norm_hidden_states = self.norm4(hidden_states) * (1 + scale_mlp) + shift_mlp
        return hidden_states + gate_mlp * self.ff(norm_hidden_states)


class AlchemistTransformer3DModel(ModelMixin, ConfigMixin):
    r"""
    The Video Alchemist diffusion transformer.

    Args:
        patch_size (`tuple[int]`, defaults to `(1, 2, 2)`): (t, h, w) patch over VAE latents.
        in_channels / out_channels (`int`, defaults to 16): VAE latent channels (CogVideoX: 16).
        num_layers (`int`): DiT blocks (paper: 32).
        num_attention_heads (`int`), attention_head_dim (`int`): width = heads * head_dim (paper: 32 x 128).
        mlp_ratio (`float`, defaults to 4.0): MLP hidden width / model width (not stated in the paper).
        text_dim (`int`): text-encoder width (T5 v1.1 large: 1024).
        cond_dim (`int`): image-encoder width = personalization context width (DINOv2/CLIP ViT-L: 1024).
        word_token_len (`int`, defaults to 3): entity-word tokens kept per reference image (spec §3.4).
        max_images (`int`, defaults to 6): reference images per sample = rows of the index embedding.
        use_word_tokens (`bool`): the "No word token" ablation when False.
        self_conditioning (`bool`, defaults to False): take a previous clean-latent estimate as an extra input.
        rope_axes_dim (`tuple[int]`, optional): (t, h, w) rotary dims; default from `rope_axes_split`.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["AlchemistTransformerBlock"]
    _repeated_blocks = ["AlchemistTransformerBlock"]

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        in_channels: int = 16,
        out_channels: int = 16,
        num_layers: int = 32,
        num_attention_heads: int = 32,
        attention_head_dim: int = 128,
        mlp_ratio: float = 4.0,
        text_dim: int = 1024,
        cond_dim: int = 1024,
        freq_dim: int = 256,
        qk_norm: bool = True,
        eps: float = 1e-6,
        rope_theta: float = 10000.0,
        rope_axes_dim: tuple[int, int, int] | None = None,
        word_token_len: int = WORD_TOKEN_LEN,
        max_images: int = MAX_REFERENCE_IMAGES,
        use_word_tokens: bool = True,
        self_conditioning: bool = False,
    ) -> None:
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        axes = tuple(rope_axes_dim) if rope_axes_dim is not None else rope_axes_split(attention_head_dim)
        if sum(axes) != attention_head_dim:
            raise ValueError(f"rope_axes_dim {axes} must sum to attention_head_dim {attention_head_dim}")

        # 1. Patch & position embedding
        self.rope = AlchemistRotaryPosEmbed(axes, rope_theta)
        self.patch_embedding = nn.Conv3d(in_channels, inner_dim, kernel_size=patch_size, stride=patch_size)
        if self_conditioning:
            self.self_conditioning_embedding = nn.Conv3d(
                in_channels, inner_dim, kernel_size=patch_size, stride=patch_size
            )
            nn.init.zeros_(self.self_conditioning_embedding.weight)
            nn.init.zeros_(self.self_conditioning_embedding.bias)

        # 2. Condition embeddings
        self.time_proj = Timesteps(freq_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedder = TimestepEmbedding(freq_dim, inner_dim)
        self.personalization_embedder = PersonalizationEmbedder(
            cond_dim, text_dim, word_token_len, max_images, use_word_tokens
        )

        # 3. Transformer blocks
        self.blocks = nn.ModuleList(
            [
                AlchemistTransformerBlock(
                    inner_dim, num_attention_heads, attention_head_dim, text_dim, cond_dim, mlp_ratio, qk_norm, eps
                )
                for _ in range(num_layers)
            ]
        )

        # 4. Output norm & projection (DiT final layer: adaLN shift/scale, zero-initialised projection)
        self.norm_out = nn.LayerNorm(inner_dim, eps=eps, elementwise_affine=False)
        self.norm_out_modulation = nn.Linear(inner_dim, 2 * inner_dim)
        self.proj_out = nn.Linear(inner_dim, out_channels * math.prod(patch_size))
        for layer in (self.norm_out_modulation, self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

        self.gradient_checkpointing = False

    def personalization_parameters(self) -> list[nn.Parameter]:
        """The parameters new in stage II: the embedder plus each block's personalization cross-attention."""
        params = list(self.personalization_embedder.parameters())
        for block in self.blocks:
            for module in (block.norm3, block.attn3, block.personalization_gate):
                params.extend(module.parameters())
        return params

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        reference_image_tokens: torch.Tensor | None = None,
        reference_word_tokens: torch.Tensor | None = None,
        reference_mask: torch.Tensor | None = None,
        reference_keep: torch.Tensor | None = None,
        self_conditioning_latents: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor | Transformer2DModelOutput:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(B, C, F, H, W)`): noisy VAE latents x_t.
            timestep (`torch.Tensor` of shape `(B,)`): flow time t in [0, 1] (1 = pure noise).
            encoder_hidden_states (`torch.Tensor` of shape `(B, Lt, text_dim)`): text-encoder output (zeros when
                the text condition is dropped).
            encoder_attention_mask (`torch.Tensor` of shape `(B, Lt)`, bool, optional): valid text tokens.
            reference_image_tokens (`torch.Tensor` of shape `(B, N, L, cond_dim)`, optional): frozen image-encoder
                tokens of N reference images. None skips the personalization branch (stage I).
            reference_word_tokens (`torch.Tensor` of shape `(B, N, word_token_len, text_dim)`): each image's
                entity-word tokens.
            reference_mask (`torch.Tensor` of shape `(B, N)`, bool): real (True) vs padding image slots.
            reference_keep (`torch.Tensor` of shape `(B,)`, optional): 0 zeroes the personalization embeddings of
                that sample (image-condition dropout / the unconditional CFG branch), 1 keeps them.
            self_conditioning_latents (`torch.Tensor` of shape `(B, C, F, H, W)`, optional): the previous estimate
                of the clean latents (self-conditioning models only; None = zeros, "no estimate yet").

        Returns:
            The predicted velocity, shape `(B, out_channels, F, H, W)`.
        """
        batch_size, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        if num_frames % p_t or height % p_h or width % p_w:
            raise ValueError(
                f"latent size (frames, height, width) = {(num_frames, height, width)} is not divisible by the patch "
                f"size {(p_t, p_h, p_w)}; choose a video size whose latents tile into whole patches"
            )
        post_patch_num_frames, post_patch_height, post_patch_width = num_frames // p_t, height // p_h, width // p_w

        # 1. Patch & position embedding: (B, C, F, H, W) -> (B, D, F', H', W') -> (B, S, D)
        rotary_emb = self.rope(post_patch_num_frames, post_patch_height, post_patch_width, hidden_states.device)
        if self.config.self_conditioning:
            if self_conditioning_latents is None:
                self_conditioning_latents = torch.zeros_like(hidden_states)
            embedded = self.patch_embedding(hidden_states) + self.self_conditioning_embedding(
                self_conditioning_latents.to(hidden_states.dtype)
            )
        elif self_conditioning_latents is not None:
            raise ValueError("self_conditioning_latents given to a model built without self_conditioning")
        else:
            embedded = self.patch_embedding(hidden_states)
        hidden_states = embedded.flatten(2).transpose(1, 2)

        # 2. Condition embeddings
        temb = self.time_embedder(self.time_proj(timestep.float() * 1000.0).to(self.time_embedder.linear_1.weight))
        temb = F.silu(temb).to(hidden_states.dtype)
        personalization_hidden_states = personalization_attention_mask = None
        if reference_image_tokens is not None:
            if reference_mask is None:
                reference_mask = torch.ones(
                    reference_image_tokens.shape[:2], dtype=torch.bool, device=reference_image_tokens.device
                )
            personalization_hidden_states, personalization_attention_mask = self.personalization_embedder(
                reference_image_tokens, reference_word_tokens, reference_mask
            )
            if reference_keep is not None:
                keep = reference_keep.to(personalization_hidden_states.dtype)[:, None, None]
                personalization_hidden_states = personalization_hidden_states * keep

        # 3. Transformer blocks
        block_args = (
            temb,
            rotary_emb,
            encoder_hidden_states,
            encoder_attention_mask,
            personalization_hidden_states,
            personalization_attention_mask,
        )
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(block, hidden_states, *block_args)
            else:
                hidden_states = block(hidden_states, *block_args)

        # 4. Output norm, projection & unpatchify
        shift, scale = self.norm_out_modulation(temb)[:, None].chunk(2, dim=-1)
        hidden_states = self.proj_out(self.norm_out(hidden_states) * (1 + scale) + shift)
        # (B, S, p_t*p_h*p_w*C) -> (B, F', H', W', p_t, p_h, p_w, C) -> (B, C, F, H, W)
        hidden_states = hidden_states.reshape(
            batch_size, post_patch_num_frames, post_patch_height, post_patch_width, p_t, p_h, p_w, -1
        )
        output = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)

        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)


def transformer_flops_per_token(
    config: dict[str, Any], num_video_tokens: int, num_text_tokens: int, num_reference_tokens: int
) -> float:
    """Forward matmul FLOPs per video token (2 per multiply-add); training = 3x this (forward + backward)."""
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    hidden = int(dim * config["mlp_ratio"])
    per_block = 2 * (
        4 * dim * dim  # self-attention projections
        + 2 * dim * dim
        + 2 * dim * dim  # cross-attention q/out (text + personalization)
        + 2 * dim * hidden  # MLP
    )
    # adaLN (7 dim) + personalization gate (dim) run once per sample, not per token.
    per_block += 2 * 8 * dim * dim / max(num_video_tokens, 1)
    # Attention score and value matmuls: 2 * 2 * dim per key.
    per_block += 4 * dim * (num_video_tokens + num_text_tokens + num_reference_tokens)
    # Cross-attention keys/values are computed per context token, amortised over the video tokens.
    kv = 2 * 2 * dim * (config["text_dim"] * num_text_tokens + config["cond_dim"] * num_reference_tokens)
    per_block += kv / max(num_video_tokens, 1)
    return config["num_layers"] * per_block
