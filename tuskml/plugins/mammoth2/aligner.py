"""Aligners: AR hidden states -> the DiT's condition tokens.

``mammoth2`` (MammothModa2's "unified condition encoding"):

1. plain mean of the hidden states of the configured layers (no learned weights);
2. text condition: the prompt tokens' states -> RMSNorm -> Linear ("caption embedder");
3. image condition: the generated visual tokens' states -> a Q-Former whose N learnable queries
   self-attend, cross-attend to those states and pass a SwiGLU, each sub-layer RMS-pre-normed;
   a fixed number of queries keeps the DiT sequence short however many visual tokens were planned;
4. [text | queries] concatenated into one sequence, then unmodulated "context refiner" blocks.

``last-layer`` (ablation): last hidden state of the text + visual tokens, one Linear.

Both return ``(cond [B, L, out_dim], cond_mask Bool[B, L])``; condition tokens are packed to the
left (sequence order kept), padding is masked.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tuskml.plugins.mammoth2.configs_gen import (
    GenerationInputError,
    LastLayerAlignerConfig,
    Mammoth2AlignerConfig,
)
from tuskml.plugins.mammoth2.dit import Attention, RMSNorm, attention_mask_for_sdpa, swiglu_hidden_size
from tuskml.plugins.mammoth2.layers import SwiGLU


def pack_by_mask(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather the tokens where ``mask`` is True to the front, keeping their order.

    [B, T, D], Bool[B, T] -> [B, Lmax, D], Bool[B, Lmax] with Lmax = max real count (at least 1, so
    a batch without any such token still gives a well-formed, fully masked sequence).
    """
    counts = mask.sum(dim=1)
    length = max(int(counts.max()) if mask.numel() else 0, 1)
    # stable sort puts real tokens first in their original order
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    if order.shape[1] < length:  # T == 0
        return x.new_zeros(x.shape[0], length, x.shape[2]), mask.new_zeros(x.shape[0], length)
    order = order[:, :length]
    packed = torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, x.shape[2]))
    packed_mask = torch.arange(length, device=mask.device)[None] < counts[:, None]
    return packed * packed_mask.unsqueeze(-1).to(packed.dtype), packed_mask


def _check_hidden_states(name: str, hidden_states: Sequence[torch.Tensor], text_mask: torch.Tensor,
                         visual_mask: torch.Tensor, in_dim: int) -> None:
    if not len(hidden_states):
        raise GenerationInputError(f"{name} aligner: hidden_states is empty; call the backbone with output_hidden_states=True")
    ref = hidden_states[-1]
    if ref.dim() != 3 or ref.shape[-1] != in_dim:
        raise GenerationInputError(
            f"{name} aligner: hidden states must be [B, T, {in_dim}] (in_dim), got {tuple(ref.shape)}"
        )
    for mask_name, mask in (("text_mask", text_mask), ("visual_mask", visual_mask)):
        if mask.shape != ref.shape[:2] or mask.dtype != torch.bool:
            raise GenerationInputError(
                f"{name} aligner: {mask_name} must be Bool{list(ref.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
            )


class QFormerLayer(nn.Module):
    """Queries: self-attention, cross-attention to the visual states, SwiGLU; RMS pre-norms."""

    def __init__(self, dim: int, heads: int, ffn_hidden: int, eps: float):
        super().__init__()
        self.self_norm = RMSNorm(dim, eps=eps)
        self.self_attn = Attention(dim, heads, eps=eps)
        self.cross_norm = RMSNorm(dim, eps=eps)
        self.context_norm = RMSNorm(dim, eps=eps)
        self.cross_attn = Attention(dim, heads, eps=eps)
        self.ffn_norm = RMSNorm(dim, eps=eps)
        self.ffn = SwiGLU(dim, ffn_hidden)

    def forward(self, queries: torch.Tensor, context: torch.Tensor, context_sdpa_mask: torch.Tensor | None,
                has_context: torch.Tensor) -> torch.Tensor:
        queries = queries + self.self_attn(self.self_norm(queries))
        cross = self.cross_attn(self.cross_norm(queries), context_sdpa_mask, context=self.context_norm(context))
        # a sample without visual tokens gets no cross-attention update (instead of attending to padding)
        queries = queries + cross * has_context[:, None, None].to(cross.dtype)
        return queries + self.ffn(self.ffn_norm(queries))


class RefinerBlock(nn.Module):
    """Unmodulated pre-norm transformer block over the condition sequence (no timestep)."""

    def __init__(self, dim: int, heads: int, ffn_hidden: int, eps: float):
        super().__init__()
        self.attn_norm = RMSNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, eps=eps)
        self.ffn_norm = RMSNorm(dim, eps=eps)
        self.ffn = SwiGLU(dim, ffn_hidden)

    def forward(self, x: torch.Tensor, sdpa_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), sdpa_mask)
        return x + self.ffn(self.ffn_norm(x))


class Mammoth2Aligner(nn.Module):
    """forward(hidden_states, text_mask, visual_mask) -> (cond, cond_mask); see the module docstring."""

    def __init__(self, config: Mammoth2AlignerConfig | None = None):
        super().__init__()
        config = config or Mammoth2AlignerConfig()
        self.config = config
        self.in_dim, self.out_dim = config.in_dim, config.out_dim
        qdim = config.qformer_dim or config.out_dim
        eps = config.norm_eps
        self.caption_embedder = nn.Sequential(RMSNorm(config.in_dim, eps=eps), nn.Linear(config.in_dim, config.out_dim))
        self.visual_in = nn.Sequential(RMSNorm(config.in_dim, eps=eps), nn.Linear(config.in_dim, qdim))
        self.queries = nn.Parameter(torch.randn(config.num_queries, qdim) * 0.02)
        self.qformer = nn.ModuleList(
            QFormerLayer(qdim, config.qformer_heads, swiglu_hidden_size(qdim, 8, config.ffn_mult), eps)
            for _ in range(config.qformer_depth)
        )
        self.qformer_out = nn.Sequential(RMSNorm(qdim, eps=eps), nn.Linear(qdim, config.out_dim))
        self.refiner = nn.ModuleList(
            RefinerBlock(config.out_dim, config.refiner_heads, swiglu_hidden_size(config.out_dim, 8, config.ffn_mult), eps)
            for _ in range(config.refiner_depth)
        )

    def mean_of_layers(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        n = len(hidden_states)
        bad = [i for i in self.config.layers if not -n <= i < n]
        if bad:
            raise GenerationInputError(
                f"mammoth2 aligner.layers {self.config.layers}: indices {bad} are out of range for {n} hidden "
                f"states (embeddings + {n - 1} layers); use indices in [-{n}, {n - 1}]"
            )
        return torch.stack([hidden_states[i] for i in self.config.layers], dim=0).mean(dim=0)

    def forward(self, hidden_states: Sequence[torch.Tensor], text_mask: torch.Tensor,
                visual_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_hidden_states("mammoth2", hidden_states, text_mask, visual_mask, self.in_dim)
        h = self.mean_of_layers(hidden_states)

        text, text_cond_mask = pack_by_mask(self.caption_embedder(h), text_mask)

        visual, packed_visual_mask = pack_by_mask(self.visual_in(h), visual_mask)
        has_visual = packed_visual_mask.any(dim=1)
        queries = self.queries.to(visual.dtype).unsqueeze(0).expand(h.shape[0], -1, -1)
        visual_sdpa_mask = attention_mask_for_sdpa(packed_visual_mask)
        for layer in self.qformer:
            queries = layer(queries, visual, visual_sdpa_mask, has_visual)
        query_cond = self.qformer_out(queries)
        query_mask = has_visual[:, None].expand(-1, query_cond.shape[1])

        cond = torch.cat([text, query_cond], dim=1)
        cond_mask = torch.cat([text_cond_mask, query_mask], dim=1)
        sdpa_mask = attention_mask_for_sdpa(cond_mask)
        for block in self.refiner:
            cond = block(cond, sdpa_mask)
        return cond, cond_mask

    def example_inputs(self) -> tuple:
        return _example_inputs(self.in_dim, num_hidden_states=max(abs(i) + (i >= 0) for i in self.config.layers) + 1)


class LastLayerAligner(nn.Module):
    """Ablation: Linear(last hidden state) of every text or visual token, packed to the left."""

    def __init__(self, config: LastLayerAlignerConfig | None = None):
        super().__init__()
        config = config or LastLayerAlignerConfig()
        self.config = config
        self.in_dim, self.out_dim = config.in_dim, config.out_dim
        self.proj = nn.Linear(config.in_dim, config.out_dim)

    def forward(self, hidden_states: Sequence[torch.Tensor], text_mask: torch.Tensor,
                visual_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_hidden_states("last-layer", hidden_states, text_mask, visual_mask, self.in_dim)
        return pack_by_mask(self.proj(hidden_states[-1]), text_mask | visual_mask)

    def example_inputs(self) -> tuple:
        return _example_inputs(self.in_dim, num_hidden_states=3)


def _example_inputs(dim: int, num_hidden_states: int) -> tuple:
    """Two sequences: [text x3 | visual x4 | pad] and [text x2 | visual x2 | pad x4]."""
    g = torch.Generator().manual_seed(0)
    hidden = tuple(torch.randn(2, 8, dim, generator=g) for _ in range(num_hidden_states))
    text_mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    visual_mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    return (hidden, text_mask, visual_mask)
