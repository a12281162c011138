"""Configs of mammoth2's generation side: aligners, decoders (DiTs) and latent codecs.

Torch-free on purpose: the plugin module imports this to register specs, and listing plugins must
never import torch. Defaults build toy-sized components in well under a second; the reference
MammothModa2 sizes are noted in the field comments and reached through presets or overrides.
"""

from __future__ import annotations

from typing import Literal

import attrs

import tuskml
from tuskml.core.errors import ConfigError, TuskmlError

_ge1 = attrs.validators.ge(1)
_ge0 = attrs.validators.ge(0)


class GenerationInputError(TuskmlError, ValueError):
    """A tensor handed to an aligner, decoder, codec or sampler has the wrong shape, size or dtype."""


def _check_head_split(width: int, heads: int, kv_heads: int, where: str) -> int:
    if width % heads:
        raise ConfigError(f"{where}: hidden_size {width} is not divisible by num_heads {heads}")
    if heads % kv_heads:
        raise ConfigError(f"{where}: num_heads {heads} is not divisible by num_kv_heads {kv_heads} (GQA groups)")
    return width // heads


def _check_axes(head_dim: int, axes: tuple[int, ...], where: str, field: str) -> None:
    if len(axes) != 3 or any(a <= 0 or a % 2 for a in axes):
        raise ConfigError(f"{where}.{field}: need three positive even sizes (time/row/col), got {axes}")
    if sum(axes) != head_dim:
        raise ConfigError(
            f"{where}.{field}: the 3-axis RoPE sizes {axes} sum to {sum(axes)}, but the head dim is {head_dim}; "
            f"make them sum to hidden_size / num_heads"
        )


# --- aligners ----------------------------------------------------------------------------------------


@tuskml.config_class
class Mammoth2AlignerConfig(tuskml.AlignerConfig):
    """AR hidden states -> DiT condition tokens (mean over layers, caption embedder, Q-Former, refiner).

    Reference: layers (-2, -5, -8, -11, -14, -17) of a 36-layer Qwen3-VL, 128 queries, 2 Q-Former
    layers, 2 refiner blocks.
    """

    in_dim: int = attrs.field(default=32, validator=_ge1)  # AR hidden size; set by the model
    out_dim: int = attrs.field(default=32, validator=_ge1)  # decoder condition width (decoder.cond_dim)
    layers: tuple[int, ...] = attrs.field(default=(-1, -2))  # hidden_states indices, averaged
    num_queries: int = attrs.field(default=8, validator=_ge1)
    qformer_depth: int = attrs.field(default=2, validator=_ge0)
    qformer_dim: int | None = None  # None: out_dim
    qformer_heads: int = attrs.field(default=2, validator=_ge1)
    refiner_depth: int = attrs.field(default=2, validator=_ge0)
    refiner_heads: int = attrs.field(default=2, validator=_ge1)
    ffn_mult: float = attrs.field(default=8 / 3)
    norm_eps: float = 1e-6

    def __attrs_post_init__(self) -> None:
        if not self.layers:
            raise ConfigError("mammoth2 aligner.layers: give at least one hidden-state index to average")
        if len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"mammoth2 aligner.layers: {self.layers} repeats an index")
        qdim = self.qformer_dim or self.out_dim
        if qdim % self.qformer_heads:
            raise ConfigError(f"mammoth2 aligner: qformer width {qdim} is not divisible by qformer_heads {self.qformer_heads}")
        if self.out_dim % self.refiner_heads:
            raise ConfigError(f"mammoth2 aligner: out_dim {self.out_dim} is not divisible by refiner_heads {self.refiner_heads}")


@tuskml.config_class
class LastLayerAlignerConfig(tuskml.AlignerConfig):
    """Ablation baseline: the last hidden state of the condition tokens, one linear projection."""

    in_dim: int = attrs.field(default=32, validator=_ge1)
    out_dim: int = attrs.field(default=32, validator=_ge1)


# --- decoders ----------------------------------------------------------------------------------------


@tuskml.config_class
class Mammoth2DiTConfig(tuskml.DecoderConfig):
    """Lumina-2 style single-stream DiT with in-context conditioning.

    Reference (~2B): hidden 2520, 21 heads / 7 KV heads, RoPE axes (40, 40, 40), 16 latent channels,
    2 noise / 2 reference / 2 context refiner layers, up to 5 reference images.
    """

    in_channels: int = attrs.field(default=3, validator=_ge1)  # latent channels of the codec
    patch_size: int = attrs.field(default=2, validator=_ge1)
    hidden_size: int = attrs.field(default=32, validator=_ge1)
    depth: int = attrs.field(default=2, validator=_ge1)  # joint blocks
    num_heads: int = attrs.field(default=2, validator=_ge1)
    num_kv_heads: int = attrs.field(default=1, validator=_ge1)
    ffn_hidden_size: int | None = None  # None: 8/3 * hidden rounded up to ffn_multiple_of
    ffn_multiple_of: int = attrs.field(default=32, validator=_ge1)
    noise_refiner_depth: int = attrs.field(default=1, validator=_ge0)
    ref_refiner_depth: int = attrs.field(default=1, validator=_ge0)
    context_refiner_depth: int = attrs.field(default=1, validator=_ge0)
    cond_dim: int | None = None  # width of condition tokens; None: hidden_size
    max_ref_images: int = attrs.field(default=5, validator=_ge0)
    rope_axes_dim: tuple[int, int, int] = (4, 6, 6)  # must sum to hidden_size / num_heads
    rope_theta: float = 10000.0
    timestep_scale: float = 1000.0  # t in [0, 1] is multiplied by this before the sinusoidal embedding
    # also add each reference latent of the target's size, patch by patch (own linear embedding per
    # reference slot), to the noisy tokens: a spatially aligned shortcut next to the in-context
    # references, which a small model learns far faster than routing by attention (not in the reference)
    reference_shortcut: bool = False
    norm_eps: float = 1e-5

    def __attrs_post_init__(self) -> None:
        head_dim = _check_head_split(self.hidden_size, self.num_heads, self.num_kv_heads, "mammoth2-dit")
        _check_axes(head_dim, self.rope_axes_dim, "mammoth2-dit", "rope_axes_dim")


@tuskml.config_class
class Lumina2DecoderConfig(tuskml.DecoderConfig):
    """diffusers' Lumina2Transformer2DModel behind the mammoth2 decoder interface.

    ``pretrained_path`` loads a local diffusers folder (its config wins over the size fields).
    Lumina2 has no reference-image input; ``reference_images="channel-concat"`` concatenates up to
    ``max_ref_images`` reference latents (same size as the target) to the noisy latent's channels,
    ``"unsupported"`` makes edits with reference latents an error.
    """

    in_channels: int = attrs.field(default=3, validator=_ge1)
    patch_size: int = attrs.field(default=2, validator=_ge1)
    hidden_size: int = attrs.field(default=32, validator=_ge1)
    num_layers: int = attrs.field(default=2, validator=_ge1)
    num_refiner_layers: int = attrs.field(default=1, validator=_ge1)
    num_heads: int = attrs.field(default=2, validator=_ge1)
    num_kv_heads: int = attrs.field(default=1, validator=_ge1)
    multiple_of: int = attrs.field(default=32, validator=_ge1)
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_axes_dim: tuple[int, int, int] = (4, 6, 6)
    rope_axes_lens: tuple[int, int, int] = (512, 512, 512)
    cond_dim: int | None = None  # Lumina2's cap_feat_dim; None: hidden_size
    reference_images: Literal["channel-concat", "unsupported"] = "channel-concat"
    max_ref_images: int = attrs.field(default=1, validator=_ge1)
    pretrained_path: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.pretrained_path is None:
            head_dim = _check_head_split(self.hidden_size, self.num_heads, self.num_kv_heads, "lumina2")
            _check_axes(head_dim, self.rope_axes_dim, "lumina2", "rope_axes_dim")
        elif self.reference_images == "channel-concat":
            raise ConfigError(
                "lumina2: reference_images='channel-concat' widens the patch embedding, so it cannot load "
                f"pretrained weights from {self.pretrained_path!r}; set reference_images='unsupported'"
            )


# --- latent codecs -----------------------------------------------------------------------------------


@tuskml.config_class
class PixelCodecConfig(tuskml.CodecConfig):
    """Identity codec: pixels (optionally space-to-depth folded by ``patch_size``) are the latents."""

    image_channels: int = attrs.field(default=3, validator=_ge1)
    patch_size: int = attrs.field(default=1, validator=_ge1)


@tuskml.config_class
class AutoencoderKLCodecConfig(tuskml.CodecConfig):
    """diffusers AutoencoderKL, loaded from a local folder or built (randomly) from the size fields.

    latents = (mean - shift_factor) * scaling_factor. ``None`` takes the factor from the VAE's own
    config (FLUX's VAE: shift 0.1159, scale 0.3611; 8x down, 16 channels).
    """

    pretrained_path: str | None = None
    subfolder: str | None = None
    image_channels: int = attrs.field(default=3, validator=_ge1)
    latent_channels: int = attrs.field(default=4, validator=_ge1)
    block_out_channels: tuple[int, ...] = (8, 16)
    layers_per_block: int = attrs.field(default=1, validator=_ge1)
    norm_num_groups: int = attrs.field(default=4, validator=_ge1)
    shift_factor: float | None = None
    scaling_factor: float | None = None
    sample_posterior: bool = False  # False: use the posterior mean (deterministic encode)

    def __attrs_post_init__(self) -> None:
        if not self.block_out_channels:
            raise ConfigError("autoencoder-kl.block_out_channels: give at least one width")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if self.pretrained_path is None and bad:
            raise ConfigError(
                f"autoencoder-kl.block_out_channels {self.block_out_channels}: widths {bad} are not divisible "
                f"by norm_num_groups {self.norm_num_groups}"
            )
