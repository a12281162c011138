"""``mammoth2-dit``: the single-stream diffusion transformer that renders AR plans as latents.

Lumina-2 / OmniGen2 style, as used by MammothModa2:

* 2x2 patchify + linear embedding of the noisy latent (and, with their own embedding, of the
  reference-image latents, each tagged with a learned image-index embedding);
* refiners that first work on each stream alone: a timestep-modulated *noise refiner* (target
  latent), a timestep-modulated *reference refiner* (reference images) and an unmodulated *context
  refiner* (condition tokens);
* then N joint blocks over ONE sequence [condition | references | target] with full bidirectional
  attention and a key padding mask: conditioning is in-context, there is no cross-attention;
* each block: GQA attention with QK RMSNorm and 3-axis RoPE, SwiGLU FFN, sandwich norms (RMSNorm
  before and after each sub-layer), adaLN "RMSNormZero" giving a scale (no shift) and a tanh gate
  per sub-layer; the modulation is zero-initialised, so a fresh modulated block is the identity;
* output: norm * (1 + scale) -> linear to p*p*C, unpatchify.

Time convention: t = 0 is noise, t = 1 is data, and the output is the velocity x_data - noise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tuskml.plugins.mammoth2.configs_gen import GenerationInputError, Mammoth2DiTConfig
from tuskml.plugins.mammoth2.layers import SwiGLU
from tuskml.plugins.mammoth2.rope3d import RotaryEmbedding3D, apply_rotary, sequence_position_ids

Rope = torch.Tensor  # complex rotations [B, S, head_dim / 2], see rope3d


# --- building blocks (also used by the aligner) -------------------------------------------------------


def swiglu_hidden_size(dim: int, multiple_of: int, mult: float = 8 / 3) -> int:
    """The LLaMA/Lumina rule: about 8/3 * dim, rounded up to a multiple (keeps parameters ~ a 4x MLP)."""
    hidden = int(dim * mult)
    return multiple_of * math.ceil(hidden / multiple_of)


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm whose gain follows the input dtype, so bf16 autocast keeps the fused kernel
    (a float32 gain on a bf16 input makes torch fall back to the unfused path)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype) if self.weight is not None else None
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


def attention_mask_for_sdpa(key_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Bool[B, S] (True = real key) -> a broadcastable SDPA mask, or None when nothing is masked.

    A row without any real key would make softmax NaN; such a sample attends to all its keys
    instead (its outputs are padding and are never read as real tokens).
    """
    if key_mask is None:
        return None
    key_mask = key_mask | ~key_mask.any(dim=-1, keepdim=True)
    return key_mask[:, None, None, :]


class Attention(nn.Module):
    """Multi-head attention with grouped KV heads, per-head QK RMSNorm and optional RoPE.

    Self-attention by default; with ``context`` (width ``context_dim``) it is cross-attention.
    """

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, *, context_dim: int | None = None,
                 qk_norm: bool = True, eps: float = 1e-6):
        super().__init__()
        num_kv_heads = num_kv_heads or num_heads
        if dim % num_heads or num_heads % num_kv_heads:
            raise GenerationInputError(
                f"attention: width {dim} / heads {num_heads} / kv heads {num_kv_heads} do not divide evenly"
            )
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        kv_in = context_dim or dim
        self.to_q = nn.Linear(dim, num_heads * self.head_dim, bias=False)
        self.to_k = nn.Linear(kv_in, num_kv_heads * self.head_dim, bias=False)
        self.to_v = nn.Linear(kv_in, num_kv_heads * self.head_dim, bias=False)
        self.to_out = nn.Linear(num_heads * self.head_dim, dim, bias=False)
        self.norm_q = RMSNorm(self.head_dim, eps=eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(self.head_dim, eps=eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, sdpa_mask: torch.Tensor | None = None, rope: Rope | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, _ = x.shape
        source = x if context is None else context
        q = self.to_q(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.to_k(source).view(batch, source.shape[1], self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.to_v(source).view(batch, source.shape[1], self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.norm_q(q), self.norm_k(k)
        if rope is not None:
            q, k = apply_rotary(q, rope), apply_rotary(k, rope)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=sdpa_mask, enable_gqa=self.num_kv_heads != self.num_heads
        )
        return self.to_out(out.transpose(1, 2).reshape(batch, length, -1))


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of a float timestep [B] -> [B, dim] (cos half first)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, out_dim: int, frequency_dim: int = 256, scale: float = 1000.0):
        super().__init__()
        self.frequency_dim, self.scale = frequency_dim, scale
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_embedding(t * self.scale, self.frequency_dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


# --- the DiT ------------------------------------------------------------------------------------------


class DiTBlock(nn.Module):
    """Sandwich-normed attention + SwiGLU block, optionally modulated by the timestep.

    Modulated: x += tanh(g_a) * norm(attn(norm(x) * (1 + s_a))); x += tanh(g_f) * norm(ffn(norm(x) * (1 + s_f)))
    with (s_a, g_a, s_f, g_f) = Linear(silu(temb)), zero-initialised (a fresh block is the identity).
    Unmodulated (context refiner): the same without scale and gate.
    """

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, ffn_hidden: int, *, modulated: bool,
                 temb_dim: int, eps: float):
        super().__init__()
        self.modulated = modulated
        self.attn_norm_in = RMSNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, num_kv_heads, eps=eps)
        self.attn_norm_out = RMSNorm(dim, eps=eps)
        self.ffn_norm_in = RMSNorm(dim, eps=eps)
        self.ffn = SwiGLU(dim, ffn_hidden)
        self.ffn_norm_out = RMSNorm(dim, eps=eps)
        if modulated:
            self.modulation = nn.Linear(temb_dim, 4 * dim)
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, sdpa_mask: torch.Tensor | None, rope: Rope,
                temb: torch.Tensor | None = None) -> torch.Tensor:
        if not self.modulated:
            x = x + self.attn_norm_out(self.attn(self.attn_norm_in(x), sdpa_mask, rope))
            return x + self.ffn_norm_out(self.ffn(self.ffn_norm_in(x)))
        scale_attn, gate_attn, scale_ffn, gate_ffn = self.modulation(F.silu(temb)).unsqueeze(1).chunk(4, dim=-1)
        h = self.attn(self.attn_norm_in(x) * (1 + scale_attn), sdpa_mask, rope)
        x = x + gate_attn.tanh() * self.attn_norm_out(h)
        h = self.ffn(self.ffn_norm_in(x) * (1 + scale_ffn))
        return x + gate_ffn.tanh() * self.ffn_norm_out(h)


class FinalLayer(nn.Module):
    """LayerNorm (no affine) * (1 + scale(temb)) -> Linear to patch pixels; zero-initialised."""

    def __init__(self, dim: int, temb_dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.scale = nn.Linear(temb_dim, dim)
        self.linear = nn.Linear(dim, out_dim)
        for layer in (self.scale, self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale = self.scale(F.silu(temb)).unsqueeze(1)
        return self.linear(self.norm(x) * (1 + scale))


def decoder_example_inputs(in_channels: int, patch_size: int, cond_dim: int, *, padding_row: tuple[bool, ...],
                           with_reference: bool) -> tuple:
    """Seeded inputs of the decoder interface for conformance checks: 2 samples of 4x4 patches, 5
    condition tokens (the second sample masked as ``padding_row``), optionally one reference latent."""
    g = torch.Generator().manual_seed(0)
    size = 4 * patch_size
    x_t = torch.randn(2, in_channels, size, size, generator=g)
    t = torch.rand(2, generator=g)
    cond = torch.randn(2, len(padding_row), cond_dim, generator=g)
    cond_mask = torch.tensor([[True] * len(padding_row), list(padding_row)])
    refs = [torch.randn(2, in_channels, size, size, generator=g)] if with_reference else None
    return (x_t, t, cond, cond_mask, refs)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)*(W/p), p*p*C], patches row-major, each patch (pi, pj, c)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: torch.Tensor, p: int, channels: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`patchify`; ``height``/``width`` are in pixels (latent cells)."""
    b = tokens.shape[0]
    x = tokens.view(b, height // p, width // p, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, height, width)


class Mammoth2DiT(nn.Module):
    """forward(x_t, t, cond, cond_mask, ref_latents=None) -> velocity (see module docstring)."""

    def __init__(self, config: Mammoth2DiTConfig | None = None):
        super().__init__()
        config = config or Mammoth2DiTConfig()
        self.config = config
        dim, p = config.hidden_size, config.patch_size
        self.in_channels = config.in_channels
        self.cond_dim = config.cond_dim or dim
        self.patch_size = p
        temb_dim = min(dim, 1024)
        ffn_hidden = config.ffn_hidden_size or swiglu_hidden_size(dim, config.ffn_multiple_of)

        def block(modulated: bool) -> DiTBlock:
            return DiTBlock(dim, config.num_heads, config.num_kv_heads, ffn_hidden, modulated=modulated,
                            temb_dim=temb_dim, eps=config.norm_eps)

        self.t_embedder = TimestepEmbedder(temb_dim, scale=config.timestep_scale)
        self.cond_embedder = nn.Sequential(RMSNorm(self.cond_dim, eps=config.norm_eps), nn.Linear(self.cond_dim, dim))
        self.x_embedder = nn.Linear(p * p * config.in_channels, dim)
        self.ref_embedder = nn.Linear(p * p * config.in_channels, dim)
        self.ref_index_embedding = nn.Parameter(torch.randn(max(config.max_ref_images, 1), dim) * 0.02)
        self.ref_shortcut = nn.ModuleList(
            nn.Linear(p * p * config.in_channels, dim) for _ in range(config.max_ref_images if config.reference_shortcut else 0))
        self.rope = RotaryEmbedding3D(config.rope_axes_dim, config.rope_theta)
        self.context_refiner = nn.ModuleList(block(False) for _ in range(config.context_refiner_depth))
        self.noise_refiner = nn.ModuleList(block(True) for _ in range(config.noise_refiner_depth))
        self.ref_refiner = nn.ModuleList(block(True) for _ in range(config.ref_refiner_depth))
        self.blocks = nn.ModuleList(block(True) for _ in range(config.depth))
        self.final = FinalLayer(dim, temb_dim, p * p * config.in_channels)

    # -- input checks ------------------------------------------------------------------------------
    def _check_latent(self, x: torch.Tensor, name: str) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise GenerationInputError(
                f"mammoth2-dit: {name} must be [B, {self.in_channels}, H, W] (in_channels={self.in_channels}), "
                f"got {tuple(x.shape)}"
            )
        if x.shape[2] % self.patch_size or x.shape[3] % self.patch_size:
            raise GenerationInputError(
                f"mammoth2-dit: {name} spatial size {tuple(x.shape[2:])} is not divisible by patch_size {self.patch_size}"
            )

    def _check_inputs(self, x_t, t, cond, cond_mask, refs) -> None:
        self._check_latent(x_t, "x_t")
        batch = x_t.shape[0]
        if t.shape != (batch,):
            raise GenerationInputError(f"mammoth2-dit: t must be Float[{batch}], got shape {tuple(t.shape)}")
        if cond.dim() != 3 or cond.shape[0] != batch or cond.shape[2] != self.cond_dim:
            raise GenerationInputError(
                f"mammoth2-dit: cond must be [{batch}, L, {self.cond_dim}] (cond_dim), got {tuple(cond.shape)}"
            )
        if cond_mask.shape != cond.shape[:2] or cond_mask.dtype != torch.bool:
            raise GenerationInputError(
                f"mammoth2-dit: cond_mask must be Bool{list(cond.shape[:2])}, got {cond_mask.dtype} {tuple(cond_mask.shape)}"
            )
        if len(refs) > self.config.max_ref_images:
            raise GenerationInputError(
                f"mammoth2-dit: {len(refs)} reference images given, max_ref_images is {self.config.max_ref_images}"
            )
        for k, ref in enumerate(refs):
            self._check_latent(ref, f"ref_latents[{k}]")
            if ref.shape[0] != batch:
                raise GenerationInputError(f"mammoth2-dit: ref_latents[{k}] has batch {ref.shape[0]}, x_t has {batch}")

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor,
                ref_latents: list[torch.Tensor] | None = None) -> torch.Tensor:
        refs = list(ref_latents or [])
        self._check_inputs(x_t, t, cond, cond_mask, refs)
        p = self.patch_size
        batch, channels, height, width = x_t.shape
        grids = [(r.shape[2] // p, r.shape[3] // p) for r in refs] + [(height // p, width // p)]
        cond_ids, image_ids = sequence_position_ids(cond_mask, grids)
        temb = self.t_embedder(t)

        # each stream alone first
        cond_rope = self.rope(cond_ids)
        ctx = self.cond_embedder(cond)
        ctx_mask = attention_mask_for_sdpa(cond_mask)
        for block in self.context_refiner:
            ctx = block(ctx, ctx_mask, cond_rope)

        target_rope = self.rope(image_ids[-1])
        x = self.x_embedder(patchify(x_t, p))
        for k, r in enumerate(refs if len(self.ref_shortcut) else []):
            if r.shape[2:] == x_t.shape[2:]:
                x = x + self.ref_shortcut[k](patchify(r, p))
        for block in self.noise_refiner:
            x = block(x, None, target_rope, temb)

        segments, ropes = [ctx], [cond_rope]
        if refs:
            ref_tokens = torch.cat(
                [self.ref_embedder(patchify(r, p)) + self.ref_index_embedding[k] for k, r in enumerate(refs)], dim=1
            )
            ref_rope = self.rope(torch.cat(image_ids[:-1], dim=1))
            for block in self.ref_refiner:
                ref_tokens = block(ref_tokens, None, ref_rope, temb)
            segments.append(ref_tokens)
            ropes.append(ref_rope)
        segments.append(x)
        ropes.append(target_rope)

        # one sequence, full bidirectional attention, padded condition keys masked
        seq = torch.cat(segments, dim=1)
        rope = torch.cat(ropes, dim=1)
        key_mask = torch.cat([cond_mask, cond_mask.new_ones(batch, seq.shape[1] - cond.shape[1])], dim=1)
        joint_mask = None if bool(cond_mask.all()) else attention_mask_for_sdpa(key_mask)
        for block in self.blocks:
            seq = block(seq, joint_mask, rope, temb)

        target = seq[:, seq.shape[1] - x.shape[1]:]
        return unpatchify(self.final(target, temb), p, channels, height, width)

    def example_inputs(self) -> tuple:
        return decoder_example_inputs(self.in_channels, self.patch_size, self.cond_dim,
                                      padding_row=(True, True, True, False, False),
                                      with_reference=bool(self.config.max_ref_images))
