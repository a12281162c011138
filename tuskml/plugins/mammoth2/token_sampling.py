"""Choosing the next token from logits: classifier-free guidance, temperature, top-k, top-p.

Kept apart from the decoding loop so each rule can be tested on hand-made logits. Sampling draws
from an explicit ``torch.Generator`` so a seed fixes the result.
"""

from __future__ import annotations

import torch

from tuskml.core.errors import TuskmlError


class SamplingError(TuskmlError, ValueError):
    """A sampling setting out of range."""


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """CFG on logits: ``uncond + scale * (cond - uncond)``; scale 1 gives ``cond``."""
    return uncond + scale * (cond - uncond)


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if temperature < 0:
        raise SamplingError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise SamplingError(f"top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise SamplingError(f"top_p must lie in (0, 1] or be None, got {top_p}")


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set logits outside the top-k and outside the smallest top-p nucleus to -inf (always keeps one)."""
    out = logits.float()
    if top_k is not None and top_k < out.shape[-1]:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(out, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens before it already cover top_p
        before = probs.cumsum(-1) - probs
        drop_sorted = before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def sample_next(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Logits ``[B, V]`` -> token indices ``Long[B]``; ``temperature == 0`` means greedy (argmax)."""
    check_sampling_args(temperature, top_k, top_p)
    if temperature == 0:
        return logits.float().argmax(-1)
    filtered = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = filtered.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
