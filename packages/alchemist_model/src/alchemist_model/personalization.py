"""Personalization embeddings: bind each reference image to its entity word (spec §3.4, Fig. 3).

For reference image n with encoder tokens ``x_n`` (l x d) and entity-word text tokens ``c_n`` (k x d_text):

1. ``c_n`` is flattened to one vector of ``word_token_len * d_text`` (zero-padded or truncated to
   ``word_token_len`` tokens before flattening);
2. that vector is copied onto each of the l image tokens and concatenated along channels;
3. a shared linear layer maps ``d + word_token_len * d_text -> d`` and the image tokens are added back (residual);
4. a learnable per-image index embedding (one row per slot, ``max_images`` rows) is added;
5. all images are concatenated along the token axis: ``f`` has ``N * l`` tokens.

Index assignment [choice]: slot n of the (already ordered) reference list gets row n; the dataset and pipeline
decide the order (draw order in training, the user's order at inference).
"""

from __future__ import annotations

import torch
from torch import nn

from alchemist_model.configs import MAX_REFERENCE_IMAGES, WORD_TOKEN_LEN


class PersonalizationEmbedder(nn.Module):
    """Shapes: B batch, N images (padded), L image tokens, D image channels, K word tokens, E text channels."""

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        word_token_len: int = WORD_TOKEN_LEN,
        max_images: int = MAX_REFERENCE_IMAGES,
        use_word_tokens: bool = True,
    ) -> None:
        super().__init__()
        self.word_token_len = word_token_len
        self.max_images = max_images
        self.use_word_tokens = use_word_tokens
        self.proj = nn.Linear(image_dim + word_token_len * text_dim, image_dim)
        self.index_embedding = nn.Embedding(max_images, image_dim)
        # Small init keeps f close to the encoder tokens at the start of stage II.
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)
        nn.init.normal_(self.index_embedding.weight, std=0.02)

    def forward(
        self,
        image_tokens: torch.Tensor,
        word_tokens: torch.Tensor,
        image_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            image_tokens: (B, N, L, D) frozen encoder patch tokens.
            word_tokens: (B, N, K, E) entity-word token embeddings, already zero-padded/truncated to K.
            image_mask: (B, N) bool, True for real images (padding slots are ignored downstream).

        Returns:
            f: (B, N * L, D) personalization embeddings; mask: (B, N * L) bool.
        """
        batch_size, num_images, num_tokens, _ = image_tokens.shape
        if num_images > self.max_images:
            raise ValueError(f"{num_images} reference images given; the model takes at most {self.max_images}")
        assert word_tokens.shape[2] == self.word_token_len, word_tokens.shape
        # (B, N, K, E) -> (B, N, K*E) -> (B, N, L, K*E)
        words = word_tokens.flatten(2)
        if not self.use_word_tokens:
            words = torch.zeros_like(words)
        words = words.unsqueeze(2).expand(-1, -1, num_tokens, -1)
        hidden = self.proj(torch.cat([image_tokens, words.to(image_tokens.dtype)], dim=-1)) + image_tokens
        index = self.index_embedding.weight[:num_images]  # (N, D)
        hidden = hidden + index[None, :, None, :].to(hidden.dtype)
        mask = image_mask[:, :, None].expand(-1, -1, num_tokens)
        return hidden.reshape(batch_size, num_images * num_tokens, -1), mask.reshape(batch_size, -1)


def pad_word_tokens(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """(k, E) -> (length, E): truncate to the first ``length`` tokens or zero-pad at the end."""
    out = tokens.new_zeros(length, tokens.shape[-1])
    count = min(length, tokens.shape[0])
    out[:count] = tokens[:count]
    return out
