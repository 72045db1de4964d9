"""AlchemistTransformer3DModel: shapes, save/load, adaLN-Zero identity, RoPE, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch

from alchemist_model.transformer_alchemist import (
    AlchemistRotaryPosEmbed,
    AlchemistTransformer3DModel,
    apply_rotary_emb,
    rope_axes_split,
)


def _randomized_model(kwargs: dict, seed: int = 0, **extra) -> AlchemistTransformer3DModel:
    """A model whose zero-initialised adaLN / output layers get random values, so the network is not trivially
    zero."""
    model = AlchemistTransformer3DModel(**kwargs, **extra)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(k in name for k in ("adaln_modulation", "personalization_gate", "norm_out_modulation", "proj_out")):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    return model


def _inputs(batch: int = 2, num_images: int = 3, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, num_images, dtype=torch.bool)
    mask[1, -1] = False  # padding slot
    text_mask = torch.ones(batch, 5, dtype=torch.bool)
    text_mask[0, 3:] = False
    return {
        "hidden_states": torch.randn(batch, 4, 3, 6, 8, generator=gen),
        "timestep": torch.tensor([0.3, 0.8])[:batch],
        "encoder_hidden_states": torch.randn(batch, 5, 16, generator=gen),
        "encoder_attention_mask": text_mask,
        "reference_image_tokens": torch.randn(batch, num_images, 4, 8, generator=gen),
        "reference_word_tokens": torch.randn(batch, num_images, 3, 16, generator=gen),
        "reference_mask": mask,
    }


def test_output_shape_matches_latents(tiny_transformer_kwargs):
    model = _randomized_model(tiny_transformer_kwargs)
    out = model(**_inputs()).sample
    assert out.shape == (2, 4, 3, 6, 8)
    assert torch.isfinite(out).all()
    # stage I path: no references at all
    inputs = _inputs()
    for key in ("reference_image_tokens", "reference_word_tokens", "reference_mask"):
        inputs.pop(key)
    assert model(**inputs).sample.shape == (2, 4, 3, 6, 8)


@pytest.mark.parametrize("shape", [(2, 4, 3, 7, 8), (2, 4, 3, 6, 9)])
def test_latent_size_not_divisible_by_patch_is_a_clear_error(tiny_transformer_kwargs, shape):
    # A 1x2x2 patch cannot tile an odd latent height/width; the strided conv would silently drop a row/column.
    model = AlchemistTransformer3DModel(**tiny_transformer_kwargs)
    inputs = _inputs()
    inputs["hidden_states"] = torch.randn(shape)
    with pytest.raises(ValueError, match="patch"):
        model(**inputs)


def test_fresh_model_predicts_zero_and_fresh_block_is_identity(tiny_transformer_kwargs):
    model = AlchemistTransformer3DModel(**tiny_transformer_kwargs)
    assert torch.count_nonzero(model(**_inputs()).sample) == 0
    block = model.blocks[0]
    hidden = torch.randn(2, 36, 24)
    temb = torch.randn(2, 24)
    rope = model.rope(3, 3, 4, hidden.device)
    out = block(hidden, temb, rope, torch.randn(2, 5, 16), None, torch.randn(2, 12, 8), None)
    torch.testing.assert_close(out, hidden, rtol=0, atol=0)


def test_new_personalization_branch_starts_as_the_stage1_model(tiny_transformer_kwargs):
    """The personalization gate is zero-initialised: adding references does not change a stage-I model."""
    model = AlchemistTransformer3DModel(**tiny_transformer_kwargs)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(k in name for k in ("adaln_modulation", "norm_out_modulation", "proj_out")):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    inputs = _inputs()
    with_refs = model(**inputs).sample
    for key in ("reference_image_tokens", "reference_word_tokens", "reference_mask"):
        inputs.pop(key)
    torch.testing.assert_close(with_refs, model(**inputs).sample)


def test_references_and_padding_matter_as_expected(tiny_transformer_kwargs):
    model = _randomized_model(tiny_transformer_kwargs)
    inputs = _inputs()
    base = model(**inputs).sample
    # a padding slot's content is ignored
    changed = dict(inputs, reference_image_tokens=inputs["reference_image_tokens"].clone())
    changed["reference_image_tokens"][1, -1] += 5.0
    torch.testing.assert_close(model(**changed).sample, base)
    # a real image's content is not
    changed["reference_image_tokens"][1, 0] += 5.0
    assert not torch.allclose(model(**changed).sample[1], base[1])
    torch.testing.assert_close(model(**changed).sample[0], base[0])
    # reference_keep = 0 zeroes the personalization embeddings of that sample only
    dropped = model(**dict(inputs, reference_keep=torch.tensor([1.0, 0.0]))).sample
    torch.testing.assert_close(dropped[0], base[0])
    assert not torch.allclose(dropped[1], base[1])


def test_save_load_round_trip(tmp_path, tiny_transformer_kwargs):
    model = _randomized_model(tiny_transformer_kwargs)
    model.save_pretrained(tmp_path / "transformer")
    loaded = AlchemistTransformer3DModel.from_pretrained(tmp_path / "transformer", low_cpu_mem_usage=False)
    assert loaded.config.num_layers == 2 and loaded.config.cond_dim == 8
    inputs = _inputs()
    torch.testing.assert_close(loaded(**inputs).sample, model(**inputs).sample, rtol=0, atol=0)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_transformer_kwargs):
    model = _randomized_model(tiny_transformer_kwargs)
    inputs = _inputs()
    model(**inputs).sample.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.enable_gradient_checkpointing()
    model(**inputs).sample.square().mean().backward()
    for name, param in model.named_parameters():
        if name in grads:
            torch.testing.assert_close(param.grad, grads[name])


def test_rope_axis_split_and_relative_positions():
    assert rope_axes_split(128) == (44, 42, 42)
    assert rope_axes_split(12) == (4, 4, 4)
    rope = AlchemistRotaryPosEmbed((4, 4, 4))
    cos, sin = rope(2, 3, 4, torch.device("cpu"))
    assert cos.shape == (1, 1, 24, 12)
    # RoPE makes q.k depend only on the position difference: shift every position by one frame
    q = torch.randn(1, 1, 1, 12)
    k = torch.randn(1, 1, 1, 12)
    cos2, sin2 = AlchemistRotaryPosEmbed((4, 4, 4))(4, 3, 4, torch.device("cpu"))

    def dot(i: int, j: int, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        qi = apply_rotary_emb(q, c[:, :, i : i + 1], s[:, :, i : i + 1])
        kj = apply_rotary_emb(k, c[:, :, j : j + 1], s[:, :, j : j + 1])
        return (qi * kj).sum()

    # token index = frame * 12 + row * 4 + col; (frame 0 vs frame 1) == (frame 1 vs frame 2), same row/col
    torch.testing.assert_close(dot(5, 17, cos2, sin2), dot(17, 29, cos2, sin2))
    with pytest.raises(ValueError, match="rope_axes_dim"):
        AlchemistTransformer3DModel(
            num_layers=1, num_attention_heads=1, attention_head_dim=12, rope_axes_dim=(4, 4, 2)
        )


def test_personalization_parameters_are_the_new_branch(tiny_transformer_kwargs):
    model = AlchemistTransformer3DModel(**tiny_transformer_kwargs)
    names = {n for n, p in model.named_parameters() if any(p is q for q in model.personalization_parameters())}
    assert any(n.startswith("personalization_embedder") for n in names)
    assert all(
        n.startswith("personalization_embedder") or ".attn3." in n or ".norm3." in n or ".personalization_gate." in n
        for n in names
    )
    assert not any(".attn1." in n or ".attn2." in n for n in names)


def test_self_conditioning_input_is_zero_initialised(tiny_transformer_kwargs):
    model = _randomized_model(tiny_transformer_kwargs, self_conditioning=True)
    inputs = _inputs()
    estimate = torch.randn_like(inputs["hidden_states"])
    fresh = model(**inputs).sample
    torch.testing.assert_close(model(**inputs, self_conditioning_latents=estimate).sample, fresh)  # ignored at init
    with torch.no_grad():
        model.self_conditioning_embedding.weight.normal_(0, 0.1)
    assert not torch.allclose(model(**inputs, self_conditioning_latents=estimate).sample, fresh)
    plain = AlchemistTransformer3DModel(**tiny_transformer_kwargs)
    assert not hasattr(plain, "self_conditioning_embedding")
    with pytest.raises(ValueError, match="self_conditioning"):
        plain(**inputs, self_conditioning_latents=estimate)
