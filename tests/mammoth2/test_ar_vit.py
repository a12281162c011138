"""timm-vit: the understanding encoder built by timm without downloads, with optional local weights."""

from __future__ import annotations

import pytest
import torch

import tuskml
from tuskml.plugins.mammoth2.vit import VisionInputError
from tuskml.testing import check_component

pytest.importorskip("timm")


def test_shapes_and_attributes():
    torch.manual_seed(0)
    vit = tuskml.create("backbone", "timm-vit").eval()
    feats = vit(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert feats.shape == (2, vit.num_tokens, vit.feature_dim) == (2, 16, 64)
    with_prefix = tuskml.create("backbone", "timm-vit", keep_prefix_tokens=True, patch_size=16)
    assert with_prefix.num_tokens == 4 + 1
    assert with_prefix(torch.zeros(1, 3, 32, 32)).shape == (1, 5, 64)


def test_local_weights_load_and_resample_to_a_new_image_size(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    vit = tuskml.create("backbone", "timm-vit").eval()
    path = tmp_path / "vit.safetensors"
    save_file(vit.model.state_dict(), str(path))
    same = tuskml.create("backbone", "timm-vit", weights_path=str(path)).eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(same(images), vit(images))
    bigger = tuskml.create("backbone", "timm-vit", weights_path=str(path), img_size=64)
    assert bigger(torch.zeros(1, 3, 64, 64)).shape == (1, 64, 64)
    assert torch.equal(bigger.model.blocks[0].attn.qkv.weight, vit.model.blocks[0].attn.qkv.weight)
    torch.save(vit.model.state_dict(), tmp_path / "vit.pth")
    assert tuskml.create("backbone", "timm-vit", weights_path=str(tmp_path / "vit.pth")) is not None


def test_bad_inputs_and_configs(tmp_path):
    vit = tuskml.create("backbone", "timm-vit")
    with pytest.raises(VisionInputError, match=r"expects images \[B, 3, 32, 32\]"):
        vit(torch.zeros(1, 3, 16, 16))
    with pytest.raises(tuskml.ConfigError, match="does not exist"):
        tuskml.create("backbone", "timm-vit", weights_path=str(tmp_path / "missing.safetensors"))
    with pytest.raises(tuskml.ConfigError, match="not divisible by patch_size"):
        tuskml.create("backbone", "timm-vit", img_size=30)
    with pytest.raises(tuskml.ConfigError, match="cannot build timm model 'no-such-vit'"):
        tuskml.create("backbone", "timm-vit", model_name="no-such-vit")
    wrong = tuskml.create("backbone", "timm-vit", embed_dim=32, num_heads=2)
    from safetensors.torch import save_file

    save_file(wrong.model.state_dict(), str(tmp_path / "wrong.safetensors"))
    with pytest.raises(tuskml.ConfigError, match="do not fit|cannot read"):
        tuskml.create("backbone", "timm-vit", weights_path=str(tmp_path / "wrong.safetensors"))


def test_conformance(tmp_path):
    check_component("backbones", "timm-vit", tmp_path)


def test_conv_stem_keeps_the_token_grid_and_learns_locality_from_timm_layers(tmp_path):
    from timm.layers import HybridEmbed

    torch.manual_seed(0)
    vit = tuskml.create("backbone", "timm-vit", stem_channels=(16, 32), stem_strides=(2, 2)).eval()
    assert isinstance(vit.model.patch_embed, HybridEmbed)
    assert vit.model.patch_embed.proj.kernel_size == (2, 2)  # 8 px per token = stem stride 4 x patch 2
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    assert vit(images).shape == (2, 16, 64) and vit.num_tokens == 16
    fine = tuskml.create("backbone", "timm-vit", stem_channels=(16, 32), stem_strides=(1, 2), patch_size=4,
                         stem_norm="group")
    assert fine.num_tokens == 64 and fine(images).shape == (2, 64, 64)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fine.modules())
    # a stem model's own weights load back (stem and BatchNorm statistics included)
    from safetensors.torch import save_file

    path = tmp_path / "stem.safetensors"
    save_file(vit.model.state_dict(), str(path))
    same = tuskml.create("backbone", "timm-vit", stem_channels=(16, 32), stem_strides=(2, 2),
                         weights_path=str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(same(images), vit(images))


def test_conv_stem_config_validation():
    from tuskml.plugins.mammoth2.configs_ar import TimmViTConfig

    with pytest.raises(ValueError, match="same length"):
        TimmViTConfig(stem_channels=(16, 32), stem_strides=(2,))
    with pytest.raises(ValueError, match="must be >= 1"):
        TimmViTConfig(stem_channels=(0,), stem_strides=(1,))
    with pytest.raises(ValueError, match="total stride 8 .* must divide patch_size=4"):
        TimmViTConfig(patch_size=4, stem_channels=(8, 8, 8), stem_strides=(2, 2, 2))
    with pytest.raises(ValueError, match="stem_norm"):
        TimmViTConfig(stem_channels=(8,), stem_strides=(1,), stem_norm="layer")
    assert TimmViTConfig().stem_channels == ()  # default: plain patchify, as before
    with pytest.raises(ValueError, match="colour_split needs a convolutional stem"):
        TimmViTConfig(colour_split=True)


def test_colour_split_tokens_are_a_colour_blind_stem_plus_each_patch_colour():
    torch.manual_seed(0)
    vit = tuskml.create("backbone", "timm-vit", stem_channels=(16, 32), stem_strides=(2, 2), colour_split=True).eval()
    embed = vit.model.patch_embed
    ys, xs = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    square = ((xs >= 3) & (xs < 13) & (ys >= 4) & (ys < 14)).float()
    red = (torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1) * square * 2 - 1).unsqueeze(0)
    blue = (torch.tensor([0.1, 0.2, 0.9]).view(3, 1, 1) * square * 2 - 1).unsqueeze(0)
    with torch.no_grad():
        # the stem sees the same 0/1 mask for both colours
        torch.testing.assert_close(embed.backbone(red), embed.backbone(blue))
        diff = (embed(red) - embed(blue)).abs().amax(-1)[0].view(4, 4)
        # so the tokens differ exactly on the token patches the square touches (rows 0-1, cols 0-1)
        touched = torch.zeros(4, 4, dtype=torch.bool)
        touched[:2, :2] = True
        assert bool((diff[touched] > 1e-4).all()) and float(diff[~touched].amax()) == 0.0
        assert vit(red).shape == (1, 16, 64)
