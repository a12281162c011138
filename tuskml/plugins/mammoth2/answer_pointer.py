"""Answer words read from the asked image (``Mammoth2Config.answer_pointer_words``, an extension).

A trained tiny model answered "what colour is the circle?" right 44 of 45 times for colour-shape
pairs seen in training and 30 of 51 times for held-out pairs (seed-0 run, 96 held-out questions):
every wrong answer was a colour seen on a circle. The text head had learned which colours go with
which shape, as the colour head of text to image had (plugin README, "The colour from the pointer
alone"). Here the choice among a set of words (the colour words) comes from the image alone:

* a query from the answer position's final hidden state scores the ViT tokens (keys: their final
  hidden states, which in a question-first row have seen the question) and a null slot;
* each ViT token brings the words of its patch's VQ digit (the colour digit of a colour-structure
  VQ, whose codebook never sees shapes) through a table on that digit, averaged over the VQ cells
  the token covers;
* the text head keeps the total mass of the words (whether a colour word comes next at all), the
  pointer alone decides which: ``logits[w] = logsumexp(head[W]) + log_softmax(pointer)[w]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tuskml.core.errors import ConfigError


class AnswerPointer(nn.Module):
    """Logits ``[B, T, len(words)]`` for the pointer words from the ViT tokens' VQ digits (module docstring).

    Keys and queries start at unit variance and the table at zero, read through ``value_gain``, as for
    the colour pointer of image tokens (``ar.TextCopy``): at the backbone's 0.02-std initialisation a
    pointer stays uniform."""

    value_gain = 8.0

    def __init__(self, hidden_size: int, num_codes: int, num_words: int, dim: int = 32):
        super().__init__()
        self.dim = dim
        self.query = nn.Linear(hidden_size, dim, bias=False)
        self.key = nn.Linear(hidden_size, dim, bias=False)
        self.null_key = nn.Parameter(torch.zeros(dim))
        self.value = nn.Parameter(torch.zeros(num_codes, num_words))
        self.null_value = nn.Parameter(torch.zeros(num_words))
        for proj in (self.query, self.key):
            nn.init.normal_(proj.weight, std=hidden_size ** -0.5)

    def forward(self, x: torch.Tensor, key_states: torch.Tensor, key_codes: torch.Tensor) -> torch.Tensor:
        """``x [B, T, D]`` queries, ``key_states [B, K, D]`` the ViT tokens' final hidden states,
        ``key_codes [B, K, C]`` each token's share of every digit value (rows sum to 1)."""
        q = self.query(x)
        scores = q @ self.key(key_states).transpose(1, 2) * self.dim ** -0.5
        null = (q @ self.null_key.to(q.dtype)).unsqueeze(-1) * self.dim ** -0.5
        weights = torch.softmax(torch.cat((null, scores), dim=-1).float(), dim=-1)
        values = key_codes.float() @ self.value.float()
        out = weights[..., 1:] @ values + weights[..., :1] * self.null_value.float()
        return out * self.value_gain


def pointer_word_logits(text_logits: torch.Tensor, word_ids: torch.Tensor, pointer_logits: torch.Tensor) -> torch.Tensor:
    """``text_logits [..., V]`` with the columns ``word_ids`` replaced: their logsumexp stays the head's,
    their split among themselves is ``softmax(pointer_logits [..., W])``."""
    head = text_logits.float()
    mass = torch.logsumexp(head[..., word_ids], dim=-1, keepdim=True)
    out = head.clone()
    out[..., word_ids] = mass + F.log_softmax(pointer_logits.float(), dim=-1)
    return out.to(text_logits.dtype)


def patch_digit_shares(digits: torch.Tensor, num_values: int, token_grid: tuple[int, int]) -> torch.Tensor:
    """One VQ digit per cell ``Long[B, h, w]`` -> ``[B, gh * gw, num_values]``: for each of the ViT's
    ``token_grid`` patches (raster order), the share of its VQ cells holding each value of the digit."""
    b, h, w = digits.shape
    gh, gw = token_grid
    if h % gh or w % gw:
        raise ConfigError(f"answer_pointer_words: the VQ grid {h}x{w} does not split into the ViT's {gh}x{gw} patches")
    one_hot = F.one_hot(digits, num_values).float()  # [B, h, w, C]
    pooled = F.avg_pool2d(one_hot.permute(0, 3, 1, 2), (h // gh, w // gw))  # [B, C, gh, gw]
    return pooled.flatten(2).transpose(1, 2)
