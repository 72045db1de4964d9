"""Encoders/VAE wrappers: loading by local path (save -> load round trip), shapes, word-token offsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alchemist_model.encoders import (
    Components,
    ImageEncoder,
    TextEncoder,
    VideoVAE,
    encode_conditions,
    find_word_span,
    reference_to_tensor,
)
from tests.model.helpers import LONG_CAPTION


def test_word_span_is_whole_word_and_case_insensitive():
    assert find_word_span("A Dog and a hotdog", "dog") == (2, 5)
    with pytest.raises(ValueError, match="does not occur"):
        find_word_span("A hotdog", "dog")


def test_text_encoder_offsets_locate_the_entity_word(tiny_components):
    text = tiny_components.text_encoder
    prompt = "A man in a red shirt walks a dog."
    enc = text.encode([prompt])
    assert enc.hidden_states.shape == (1, 32, 32) and enc.mask.dtype == torch.bool
    indices = TextEncoder.word_token_indices(prompt, "dog", enc.offsets[0])
    pieces = text.tokenizer.convert_ids_to_tokens(text.tokenizer(prompt)["input_ids"])
    assert "".join(pieces[i] for i in indices).replace("\u2581", "") == "dog"
    # an unknown word splits into several tokens; all of them are found
    prompt2 = "A zebra eats."
    enc2 = text.encode([prompt2])
    idx = TextEncoder.word_token_indices(prompt2, "zebra", enc2.offsets[0])
    assert len(idx) >= 2


def test_tiny_components_round_trip_by_path(tmp_path, tiny_components, capsys):
    tiny_components.save(tmp_path / "encoders")
    for name in ("text_encoder", "image_encoder", "vae"):
        assert (tmp_path / "encoders" / name / "RANDOM_WEIGHTS").exists()
    loaded = Components.load_saved(tmp_path / "encoders")
    prompt = ["A dog runs."]
    torch.testing.assert_close(
        loaded.text_encoder.encode(prompt).hidden_states, tiny_components.text_encoder.encode(prompt).hidden_states
    )
    images = torch.rand(2, 3, 56, 56)
    torch.testing.assert_close(loaded.image_encoder(images), tiny_components.image_encoder(images))
    video = torch.rand(1, 3, 9, 48, 64) * 2 - 1
    latents = tiny_components.vae.encode(video)
    assert latents.shape == (1, 16, 3, 6, 8)
    torch.testing.assert_close(loaded.vae.encode(video), latents)
    assert loaded.vae.decode(latents).shape == (1, 3, 9, 48, 64)
    assert loaded.text_encoder.is_random and loaded.image_encoder.is_random and loaded.vae.is_random


def test_image_encoders_token_shapes():
    dino = ImageEncoder.load("dinov2", "random-tiny", 56)
    clip = ImageEncoder.load("clip", "random-tiny", 56)
    images = torch.rand(3, 3, 56, 56)
    assert dino(images).shape == (3, 16, 32)  # (56/14)^2 patch tokens, CLS dropped
    assert clip(images).shape == (3, 16, 32)
    with pytest.raises(ValueError, match="dinov2 or clip"):
        ImageEncoder(dino.model, "siglip", 56)


def test_missing_checkpoints_fail_clearly_offline(tmp_path):
    with pytest.raises(ValueError, match="random-tiny"):
        TextEncoder.load(str(tmp_path / "no-such-t5"))
    with pytest.raises(ValueError, match="local directory"):
        ImageEncoder.load("dinov2", str(tmp_path / "no-such-dino"))
    with pytest.raises(ValueError, match="CogVideoX"):
        VideoVAE.load(str(tmp_path / "no-such-vae"))


def test_reference_to_tensor_pads_white_square():
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    tensor = reference_to_tensor(image, 56)
    assert tensor.shape == (3, 56, 56)
    assert torch.allclose(tensor[:, 0, 28], torch.ones(3), atol=1e-3)  # top padding is white
    assert torch.allclose(tensor[:, 28, 28], torch.zeros(3), atol=1e-3)


def test_encode_conditions_binds_words(tiny_components):
    captions = ["A man walks a dog.", "A cat sits."]
    images = torch.rand(2, 3, 3, 56, 56)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    words = [["man", "dog", ""], ["cat"]]
    cond = encode_conditions(tiny_components, captions, images, mask, words, word_token_len=3)
    assert cond["reference_image_tokens"].shape == (2, 3, 16, 32)
    assert cond["reference_word_tokens"].shape == (2, 3, 3, 32)
    assert torch.count_nonzero(cond["reference_image_tokens"][1, 1:]) == 0  # padding slots stay empty
    assert torch.count_nonzero(cond["reference_word_tokens"][0, 2]) == 0  # background without a word
    text = tiny_components.text_encoder.encode(captions)
    dog = TextEncoder.word_token_indices(captions[0], "dog", text.offsets[0])
    torch.testing.assert_close(cond["reference_word_tokens"][0, 1, : len(dog)], text.hidden_states[0, dog])


def test_entity_word_past_the_truncation_keeps_its_word_tokens(tiny_components):
    """A word the 32-token truncation cuts off is bound to its tokens from an untruncated encoding, not to zeros."""
    caption = LONG_CAPTION
    text = tiny_components.text_encoder
    assert len(text.tokenizer(caption)["input_ids"]) > 45 and text.max_length == 32
    truncated = text.encode([caption])
    assert TextEncoder.word_token_indices(caption, "cat", truncated.offsets[0]) == []  # cut off
    mask = torch.ones(1, 2, dtype=torch.bool)
    cond = encode_conditions(tiny_components, [caption], torch.rand(1, 2, 3, 56, 56), mask, [["dog", "cat"]])
    cat = cond["reference_word_tokens"][0, 1]
    assert float(cat.norm()) > 0.1
    full = text.encode([caption], truncate=False)
    cat_idx = TextEncoder.word_token_indices(caption, "cat", full.offsets[0])
    torch.testing.assert_close(cat[: len(cat_idx)], full.hidden_states[0, cat_idx])
    # a word inside the truncation keeps the truncated caption's tokens, and the text condition stays truncated
    dog_idx = TextEncoder.word_token_indices(caption, "dog", truncated.offsets[0])
    dog = cond["reference_word_tokens"][0, 0, : len(dog_idx)]
    torch.testing.assert_close(dog, truncated.hidden_states[0, dog_idx])
    assert cond["encoder_hidden_states"].shape[1] == 32
