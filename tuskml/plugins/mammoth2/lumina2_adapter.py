"""``lumina2``: diffusers' Lumina2Transformer2DModel behind the mammoth2 decoder interface.

It makes the decoder swappable by config (and lets real Lumina-Image-2.0 weights be used from a
local folder). The mapping onto Lumina2's own forward:

* time: Lumina2 is trained with t = 0 noise, t = 1 data and predicts x_data - noise (its diffusers
  pipeline passes ``1 - sigma`` and negates the output for the scheduler), which is exactly our
  convention, so ``t`` and the velocity pass through unchanged;
* condition: Lumina2 assumes the real caption tokens come first (it derives positions from
  ``mask.sum()``), so condition tokens are packed to the left first; its caption embedder
  (RMSNorm + Linear) maps ``cond_dim`` (its ``cap_feat_dim``) to its width;
* reference images: Lumina2 has no such input. ``reference_images="channel-concat"`` concatenates
  up to ``max_ref_images`` reference latents (zeros when absent) to the noisy latent's channels
  (InstructPix2Pix style; they must have the target's size). ``"unsupported"`` raises instead.
"""

from __future__ import annotations

import pathlib

import torch
from torch import nn

from tuskml.core.errors import ConfigError
from tuskml.plugins.mammoth2.aligner import pack_by_mask
from tuskml.plugins.mammoth2.configs_gen import GenerationInputError, Lumina2DecoderConfig
from tuskml.plugins.mammoth2.dit import decoder_example_inputs


def build_lumina2(config: Lumina2DecoderConfig) -> nn.Module:
    from diffusers import Lumina2Transformer2DModel

    if config.pretrained_path is not None:
        folder = pathlib.Path(config.pretrained_path)
        if (folder / "transformer" / "config.json").is_file():
            folder = folder / "transformer"
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"lumina2.pretrained_path: {config.pretrained_path} has no config.json (nor transformer/config.json); "
                f"point it at a local diffusers Lumina2Transformer2DModel folder"
            )
        return Lumina2Transformer2DModel.from_pretrained(str(folder), local_files_only=True)
    extra = config.max_ref_images if config.reference_images == "channel-concat" else 0
    return Lumina2Transformer2DModel(
        patch_size=config.patch_size,
        in_channels=config.in_channels * (1 + extra),
        out_channels=config.in_channels,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_refiner_layers=config.num_refiner_layers,
        num_attention_heads=config.num_heads,
        num_kv_heads=config.num_kv_heads,
        multiple_of=config.multiple_of,
        ffn_dim_multiplier=config.ffn_dim_multiplier,
        norm_eps=config.norm_eps,
        axes_dim_rope=config.rope_axes_dim,
        axes_lens=config.rope_axes_lens,
        cap_feat_dim=config.cond_dim or config.hidden_size,
    )


class Lumina2Decoder(nn.Module):
    """forward(x_t, t, cond, cond_mask, ref_latents=None) -> velocity, through Lumina2Transformer2DModel."""

    def __init__(self, config: Lumina2DecoderConfig | None = None):
        super().__init__()
        config = config or Lumina2DecoderConfig()
        self.config = config
        self.transformer = build_lumina2(config)
        inner = self.transformer.config
        self.in_channels = inner.out_channels or inner.in_channels
        self.cond_dim = inner.cap_feat_dim
        self.patch_size = inner.patch_size
        self.num_ref_slots = (inner.in_channels // self.in_channels) - 1

    def _with_references(self, x_t: torch.Tensor, refs: list[torch.Tensor]) -> torch.Tensor:
        if refs and self.config.reference_images == "unsupported":
            raise GenerationInputError(
                "lumina2 decoder: got reference latents but reference_images='unsupported'; use the "
                "mammoth2-dit decoder for edits, or reference_images='channel-concat'"
            )
        if len(refs) > self.num_ref_slots:
            raise GenerationInputError(
                f"lumina2 decoder: {len(refs)} reference images given, it was built for {self.num_ref_slots} "
                f"(max_ref_images)"
            )
        for k, ref in enumerate(refs):
            if ref.shape != x_t.shape:
                raise GenerationInputError(
                    f"lumina2 decoder: ref_latents[{k}] has shape {tuple(ref.shape)}; channel-concat needs the "
                    f"target's shape {tuple(x_t.shape)}"
                )
        if self.num_ref_slots == 0:
            return x_t
        slots = list(refs) + [torch.zeros_like(x_t)] * (self.num_ref_slots - len(refs))
        return torch.cat([x_t, *slots], dim=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor,
                ref_latents: list[torch.Tensor] | None = None) -> torch.Tensor:
        if x_t.dim() != 4 or x_t.shape[1] != self.in_channels:
            raise GenerationInputError(f"lumina2 decoder: x_t must be [B, {self.in_channels}, H, W], got {tuple(x_t.shape)}")
        if x_t.shape[2] % self.patch_size or x_t.shape[3] % self.patch_size:
            raise GenerationInputError(
                f"lumina2 decoder: x_t size {tuple(x_t.shape[2:])} is not divisible by patch_size {self.patch_size}"
            )
        if cond.dim() != 3 or cond.shape[0] != x_t.shape[0] or cond.shape[2] != self.cond_dim:
            raise GenerationInputError(
                f"lumina2 decoder: cond must be [{x_t.shape[0]}, L, {self.cond_dim}] (cond_dim), got {tuple(cond.shape)}"
            )
        if cond_mask.shape != cond.shape[:2] or cond_mask.dtype != torch.bool:
            raise GenerationInputError(
                f"lumina2 decoder: cond_mask must be Bool{list(cond.shape[:2])}, got {cond_mask.dtype} {tuple(cond_mask.shape)}"
            )
        if t.shape != (x_t.shape[0],):
            raise GenerationInputError(f"lumina2 decoder: t must be Float[{x_t.shape[0]}], got {tuple(t.shape)}")
        cond, cond_mask = pack_by_mask(cond, cond_mask)
        x = self._with_references(x_t, list(ref_latents or []))
        return self.transformer(x, t, cond, cond_mask, return_dict=False)[0]

    def example_inputs(self) -> tuple:
        # padding in the middle of the row: the adapter must move real tokens to the front
        return decoder_example_inputs(self.in_channels, self.patch_size, self.cond_dim,
                                      padding_row=(True, False, True, False, False),
                                      with_reference=bool(self.num_ref_slots))
