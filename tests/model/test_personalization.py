"""Spec §3.4: word binding, index embedding, padding, and the no-word-token ablation."""

from __future__ import annotations

import pytest
import torch

from alchemist_model.personalization import PersonalizationEmbedder, pad_word_tokens


def _embedder(use_word_tokens: bool = True) -> PersonalizationEmbedder:
    torch.manual_seed(0)
    return PersonalizationEmbedder(
        image_dim=8, text_dim=6, word_token_len=3, max_images=6, use_word_tokens=use_word_tokens
    )


def test_output_is_all_images_concatenated():
    emb = _embedder()
    image_tokens = torch.randn(2, 4, 5, 8)
    f, mask = emb(image_tokens, torch.randn(2, 4, 3, 6), torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]).bool())
    assert f.shape == (2, 4 * 5, 8)
    assert mask.tolist()[1] == [True] * 5 + [False] * 15


def test_changing_the_bound_word_changes_only_that_images_tokens():
    emb = _embedder()
    image_tokens = torch.randn(1, 3, 5, 8)
    words = torch.randn(1, 3, 3, 6)
    mask = torch.ones(1, 3, dtype=torch.bool)
    f, _ = emb(image_tokens, words, mask)
    other = words.clone()
    other[0, 1] = torch.randn(3, 6)  # image 1 is now bound to another word
    g, _ = emb(image_tokens, other, mask)
    per_image_f, per_image_g = f.view(3, 5, 8), g.view(3, 5, 8)
    torch.testing.assert_close(per_image_f[0], per_image_g[0])
    torch.testing.assert_close(per_image_f[2], per_image_g[2])
    assert (per_image_f[1] - per_image_g[1]).abs().min() > 0  # every token of image 1 changed


def test_index_embedding_separates_identical_images():
    emb = _embedder()
    one = torch.randn(1, 1, 5, 8)
    f, _ = emb(one.repeat(1, 2, 1, 1), torch.zeros(1, 2, 3, 6), torch.ones(1, 2, dtype=torch.bool))
    first, second = f.view(2, 5, 8)
    torch.testing.assert_close(
        first - second, (emb.index_embedding.weight[0] - emb.index_embedding.weight[1]).expand(5, 8)
    )


def test_residual_keeps_image_tokens():
    emb = _embedder()
    with torch.no_grad():
        emb.proj.weight.zero_()
        emb.index_embedding.weight.zero_()
    image_tokens = torch.randn(1, 2, 5, 8)
    f, _ = emb(image_tokens, torch.randn(1, 2, 3, 6), torch.ones(1, 2, dtype=torch.bool))
    torch.testing.assert_close(f, image_tokens.reshape(1, 10, 8))


def test_no_word_token_ablation_ignores_words():
    emb = _embedder(use_word_tokens=False)
    image_tokens = torch.randn(1, 2, 5, 8)
    mask = torch.ones(1, 2, dtype=torch.bool)
    f, _ = emb(image_tokens, torch.randn(1, 2, 3, 6), mask)
    g, _ = emb(image_tokens, torch.randn(1, 2, 3, 6), mask)
    torch.testing.assert_close(f, g)


def test_too_many_images_is_an_error():
    with pytest.raises(ValueError, match="at most 6"):
        _embedder()(torch.randn(1, 7, 5, 8), torch.randn(1, 7, 3, 6), torch.ones(1, 7, dtype=torch.bool))


def test_pad_word_tokens_pads_and_truncates():
    tokens = torch.arange(10.0).view(5, 2)
    assert pad_word_tokens(tokens, 3).tolist() == [[0, 1], [2, 3], [4, 5]]
    assert pad_word_tokens(tokens[:1], 3).tolist() == [[0, 1], [0, 0], [0, 0]]
