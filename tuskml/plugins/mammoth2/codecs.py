"""Latent codecs: images in [-1, 1] (NCHW) <-> the latents the DiT denoises.

``pixel``: the identity, optionally folded space-to-depth by ``patch_size`` (so a toy DiT can work
directly in pixel space, with no VAE to train or download).
``autoencoder-kl``: diffusers' AutoencoderKL, from a local folder or built from a config (random
weights, for tests and toys); latents are normalised as (z - shift_factor) * scaling_factor, the
FLUX convention.

Both expose ``encode``, ``decode``, ``latent_channels`` and ``downsample``; ``forward`` is ``encode``.
"""

from __future__ import annotations

import pathlib

import torch
import torch.nn.functional as F
from torch import nn

from tuskml.core.errors import ConfigError
from tuskml.plugins.mammoth2.configs_gen import AutoencoderKLCodecConfig, GenerationInputError, PixelCodecConfig


def _check_images(name: str, images: torch.Tensor, channels: int, multiple: int) -> None:
    if images.dim() != 4 or images.shape[1] != channels:
        raise GenerationInputError(f"{name} codec: images must be [B, {channels}, H, W], got {tuple(images.shape)}")
    if images.shape[2] % multiple or images.shape[3] % multiple:
        raise GenerationInputError(
            f"{name} codec: image size {tuple(images.shape[2:])} is not divisible by the downsampling factor {multiple}"
        )


class PixelCodec(nn.Module):
    """Identity / space-to-depth codec: latents are the pixels, ``patch_size`` x ``patch_size`` folded into channels."""

    def __init__(self, config: PixelCodecConfig | None = None):
        super().__init__()
        config = config or PixelCodecConfig()
        self.config = config
        self.image_channels = config.image_channels
        self.downsample = config.patch_size
        self.latent_channels = config.image_channels * config.patch_size**2

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        _check_images("pixel", images, self.image_channels, self.downsample)
        return F.pixel_unshuffle(images, self.downsample) if self.downsample > 1 else images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dim() != 4 or latents.shape[1] != self.latent_channels:
            raise GenerationInputError(
                f"pixel codec: latents must be [B, {self.latent_channels}, h, w], got {tuple(latents.shape)}"
            )
        return F.pixel_shuffle(latents, self.downsample) if self.downsample > 1 else latents

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)

    def example_inputs(self) -> tuple:
        g = torch.Generator().manual_seed(0)
        size = 4 * self.downsample
        return (torch.rand(2, self.image_channels, size, size, generator=g) * 2 - 1,)


class AutoencoderKLCodec(nn.Module):
    """diffusers AutoencoderKL with FLUX-style latent shift/scale."""

    def __init__(self, config: AutoencoderKLCodecConfig | None = None):
        super().__init__()
        from diffusers import AutoencoderKL

        config = config or AutoencoderKLCodecConfig()
        self.config = config
        if config.pretrained_path is not None:
            folder = pathlib.Path(config.pretrained_path)
            if config.subfolder:
                folder = folder / config.subfolder
            if not (folder / "config.json").is_file():
                raise ConfigError(
                    f"autoencoder-kl.pretrained_path: {folder} has no config.json; point it at a local diffusers "
                    f"AutoencoderKL folder (and set subfolder='vae' for a pipeline folder)"
                )
            self.vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
        else:
            n = len(config.block_out_channels)
            self.vae = AutoencoderKL(
                in_channels=config.image_channels,
                out_channels=config.image_channels,
                down_block_types=("DownEncoderBlock2D",) * n,
                up_block_types=("UpDecoderBlock2D",) * n,
                block_out_channels=config.block_out_channels,
                layers_per_block=config.layers_per_block,
                latent_channels=config.latent_channels,
                norm_num_groups=config.norm_num_groups,
            )
        vae_config = self.vae.config
        self.image_channels = vae_config.in_channels
        self.latent_channels = vae_config.latent_channels
        self.downsample = 2 ** (len(vae_config.block_out_channels) - 1)
        shift = config.shift_factor if config.shift_factor is not None else getattr(vae_config, "shift_factor", None)
        scale = config.scaling_factor if config.scaling_factor is not None else getattr(vae_config, "scaling_factor", None)
        if config.pretrained_path is None:  # a random VAE has no calibrated statistics
            shift = 0.0 if config.shift_factor is None else config.shift_factor
            scale = 1.0 if config.scaling_factor is None else config.scaling_factor
        self.shift_factor = float(shift or 0.0)
        self.scaling_factor = float(scale if scale is not None else 1.0)

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_images("autoencoder-kl", images, self.image_channels, self.downsample)
        posterior = self.vae.encode(images).latent_dist
        z = posterior.sample(generator) if self.config.sample_posterior else posterior.mode()
        return (z - self.shift_factor) * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dim() != 4 or latents.shape[1] != self.latent_channels:
            raise GenerationInputError(
                f"autoencoder-kl codec: latents must be [B, {self.latent_channels}, h, w], got {tuple(latents.shape)}"
            )
        return self.vae.decode(latents / self.scaling_factor + self.shift_factor).sample

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)

    def example_inputs(self) -> tuple:
        g = torch.Generator().manual_seed(0)
        size = 4 * self.downsample
        return (torch.rand(1, self.image_channels, size, size, generator=g) * 2 - 1,)
