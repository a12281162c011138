"""Latent codecs: pixel identity / space-to-depth, diffusers AutoencoderKL with shift/scale."""

from __future__ import annotations

import pytest
import torch

import tuskml
from tuskml.plugins.mammoth2.configs_gen import GenerationInputError


def test_pixel_codec_is_identity_by_default():
    codec = tuskml.create("codec", "pixel")
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(codec.encode(images), images) and torch.equal(codec.decode(images), images)
    assert codec.latent_channels == 3 and codec.downsample == 1


def test_pixel_codec_folds_patches_into_channels():
    codec = tuskml.create("codec", "pixel", patch_size=2)
    images = torch.rand(2, 3, 8, 6) * 2 - 1
    latents = codec.encode(images)
    assert latents.shape == (2, 12, 4, 3) and codec.latent_channels == 12 and codec.downsample == 2
    assert torch.equal(codec.decode(latents), images)
    assert torch.equal(latents[0, :4, 0, 0], images[0, 0, :2, :2].reshape(-1))
    with pytest.raises(GenerationInputError, match="divisible"):
        codec.encode(torch.rand(1, 3, 7, 8))
    with pytest.raises(GenerationInputError, match="latents"):
        codec.decode(torch.rand(1, 3, 4, 4))


def test_autoencoder_kl_shapes_and_shift_scale():
    torch.manual_seed(0)
    codec = tuskml.create("codec", "autoencoder-kl", latent_channels=4, shift_factor=0.5, scaling_factor=2.0).eval()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        latents = codec.encode(images)
        raw = codec.vae.encode(images).latent_dist.mode()
        assert latents.shape == (2, 4, 8, 8) and codec.downsample == 2 and codec.latent_channels == 4
        assert torch.allclose(latents, (raw - 0.5) * 2.0)
        decoded = codec.decode(latents)
        assert decoded.shape == images.shape
        assert torch.allclose(decoded, codec.vae.decode(raw).sample, atol=1e-5)
        assert torch.equal(codec.encode(images), latents)  # deterministic (posterior mean)
    with pytest.raises(GenerationInputError, match="images"):
        codec.encode(torch.rand(1, 1, 16, 16))


def test_autoencoder_kl_from_local_folder_takes_its_factors(tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4,
                        scaling_factor=0.25, shift_factor=0.1)
    vae.save_pretrained(tmp_path / "vae")
    codec = tuskml.create("codec", "autoencoder-kl", pretrained_path=str(tmp_path), subfolder="vae").eval()
    assert codec.scaling_factor == 0.25 and codec.shift_factor == pytest.approx(0.1) and codec.downsample == 1
    images = torch.rand(1, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(codec.encode(images), (vae.encode(images).latent_dist.mode() - 0.1) * 0.25, atol=1e-6)
    with pytest.raises(tuskml.ConfigError, match="config.json"):
        tuskml.create("codec", "autoencoder-kl", pretrained_path=str(tmp_path))
    with pytest.raises(tuskml.ConfigError, match="norm_num_groups"):
        tuskml.create("codec", "autoencoder-kl", block_out_channels=[6, 8])
