"""Transformer building blocks shared by the mammoth2 AR backbone and the DiT decoder.

The parameter names (``gate_proj``/``up_proj``/``down_proj``, ``q_proj`` ... ``o_proj``, ``q_norm``,
``k_norm``) and the numerics (RMSNorm computed in float32, RoPE in the "rotate half" layout) follow
Qwen3 as implemented in transformers, so real Qwen3 weights can be copied into these modules and
produce the same outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain; statistics in float32 for bf16 stability."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class SwiGLU(nn.Module):
    """Gated feed-forward ``down(silu(gate(x)) * up(x))`` (Qwen3 / Lumina-2 MLP)."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


# --- rotary position embedding ------------------------------------------------------------------------


def rope_inverse_frequencies(rotary_dim: int, theta: float) -> torch.Tensor:
    """``theta ** (-2i / rotary_dim)`` for i < rotary_dim / 2 (float32)."""
    if rotary_dim % 2:
        raise ValueError(f"rotary dimension must be even, got {rotary_dim}")
    return 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim))


def rope_cos_sin(position_ids: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``[..., T, rotary_dim]`` for integer or float positions ``[..., T]``.

    Computed in float32 (positions up to ~1e6 lose precision in bf16), then cast to ``dtype``.
    """
    freqs = position_ids.to(torch.float32).unsqueeze(-1) * inv_freq.to(position_ids.device)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, H, T, Dh]`` by tables ``[B, T, Dh]`` (broadcast over heads)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


def multi_axis_rope_cos_sin(position_ids: torch.Tensor, axes_dims: tuple[int, ...], theta: float,
                            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables for positions with several axes (``position_ids [B, T, n_axes]``), one band per axis.

    Each axis ``a`` rotates its own ``axes_dims[a]`` channels; the bands are concatenated per half so
    :func:`apply_rope` (rotate-half layout) applies them in one go. Used by the DiT's 3-axis RoPE.
    """
    if position_ids.shape[-1] != len(axes_dims):
        raise ValueError(f"position_ids has {position_ids.shape[-1]} axes, axes_dims has {len(axes_dims)}")
    cos_parts, sin_parts = [], []
    for axis, dim in enumerate(axes_dims):
        freqs = position_ids[..., axis].to(torch.float32).unsqueeze(-1) * rope_inverse_frequencies(dim, theta).to(position_ids.device)
        cos_parts.append(freqs.cos())
        sin_parts.append(freqs.sin())
    cos_half, sin_half = torch.cat(cos_parts, -1), torch.cat(sin_parts, -1)
    return torch.cat((cos_half, cos_half), -1).to(dtype), torch.cat((sin_half, sin_half), -1).to(dtype)


# --- attention ----------------------------------------------------------------------------------------

#: torch >= 2.5 lets SDPA broadcast K/V heads itself (``enable_gqa``)
_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


def scaled_dot_product_gqa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
                           is_causal: bool = False) -> torch.Tensor:
    """SDPA with grouped-query attention: ``q [B, Hq, T, Dh]``, ``k/v [B, Hkv, S, Dh]``, Hq % Hkv == 0.

    ``mask`` is boolean (True = may attend), broadcastable to ``[B, Hq, T, S]``.
    """
    hq, hkv = q.shape[1], k.shape[1]
    is_causal = is_causal and mask is None
    if hq != hkv:
        if hq % hkv:
            raise ValueError(f"{hq} query heads are not a multiple of {hkv} key/value heads")
        if _SDPA_HAS_GQA:  # no copies of K/V; several times faster for single-token decoding steps
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True)
        k = k.repeat_interleave(hq // hkv, dim=1)
        v = v.repeat_interleave(hq // hkv, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)


class GQAAttention(nn.Module):
    """Multi-head self-attention with grouped KV heads, optional QK RMSNorm and RoPE; no cache.

    ``forward(x, cos=None, sin=None, mask=None, is_causal=False)``; a bidirectional default suits
    the DiT. The AR backbone has its own cached, expert-routed variant in ``ar.py``.
    """

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, head_dim: int | None = None,
                 qk_norm: bool = True, bias: bool = False, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        self.head_dim = head_dim or dim // num_heads
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        self.q_proj = nn.Linear(dim, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, dim, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, eps) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, t, self.num_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if cos is not None and sin is not None:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = scaled_dot_product_gqa(q, k, v, mask=mask, is_causal=is_causal)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))
