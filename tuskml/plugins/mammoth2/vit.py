"""``timm-vit``: the understanding vision encoder (continuous features for placeholder tokens).

Built with ``timm.create_model(model_name, pretrained=False, img_size=..., patch_size=...)`` so
nothing is downloaded; real weights come from a local file. Images arrive in the shared mammoth2
convention (float ``[-1, 1]``, NCHW) and are mapped to the normalisation the timm model was trained
with. The model that owns this encoder projects the features to the AR width.
"""

from __future__ import annotations

import functools
import math
import pathlib
import sys
from typing import Any

import torch
from torch import nn

from tuskml.core.errors import ConfigError, TuskmlError
from tuskml.plugins.mammoth2.colour_split import PatchColour, value_structure
from tuskml.plugins.mammoth2.configs_ar import TimmViTConfig


class VisionInputError(TuskmlError, ValueError):
    """Images that do not fit the vision encoder."""


def _read_state_dict(path: pathlib.Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"timm-vit: weights_path {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"timm-vit: cannot read weights file {str(path)!r}: {exc}") from exc
    for key in ("state_dict", "model"):  # common training-checkpoint wrappers
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"timm-vit: {str(path)!r} does not hold a state dict")
    return state


class _ValueStructure(nn.Module):
    def __init__(self, patch: int):
        super().__init__()
        self.patch = patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return value_structure(x, self.patch)


class TimmViTEncoder(nn.Module):
    """``forward(images [B, C, H, W] in [-1, 1]) -> features [B, num_tokens, feature_dim]``."""

    def __init__(self, config: TimmViTConfig | None = None):
        super().__init__()
        import timm

        config = config or TimmViTConfig()
        self.config = config
        self.tuskml_config = config
        overrides: dict[str, Any] = {k: v for k, v in (("embed_dim", config.embed_dim), ("depth", config.depth),
                                                        ("num_heads", config.num_heads)) if v}
        patch_size = config.patch_size
        if config.stem_channels:
            overrides["embed_layer"] = self._stem_embed(config)
            patch_size //= math.prod(config.stem_strides)  # HybridEmbed patchifies the stem's feature map
        try:
            self.model = timm.create_model(config.model_name, pretrained=False, num_classes=0, img_size=config.img_size,
                                           patch_size=patch_size, in_chans=config.in_chans, **overrides)
        except RuntimeError as exc:  # timm's "Unknown model"
            raise ConfigError(f"timm-vit: cannot build timm model {config.model_name!r}: {exc}") from exc
        except TypeError as exc:
            raise ConfigError(
                f"timm-vit: timm model {config.model_name!r} does not accept img_size/patch_size/embed_dim/depth/"
                f"num_heads as given: {exc}"
            ) from exc
        if config.weights_path is not None:
            self._load_weights(pathlib.Path(config.weights_path))
        data_cfg = getattr(self.model, "pretrained_cfg", {}) or {}
        mean = torch.tensor(data_cfg.get("mean", (0.5, 0.5, 0.5)), dtype=torch.float32)[: config.in_chans]
        std = torch.tensor(data_cfg.get("std", (0.5, 0.5, 0.5)), dtype=torch.float32)[: config.in_chans]
        self.register_buffer("pixel_mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", std.view(1, -1, 1, 1), persistent=False)
        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0))
        self.feature_dim = int(getattr(self.model, "num_features", getattr(self.model, "embed_dim", 0)))
        patch_embed = getattr(self.model, "patch_embed", None)
        if patch_embed is not None and hasattr(patch_embed, "num_patches"):
            num_patches = int(patch_embed.num_patches)
        else:
            with torch.no_grad():
                probe = torch.zeros(1, config.in_chans, config.img_size, config.img_size)
                num_patches = self._tokens(self.model.forward_features(probe)).shape[1] - self.num_prefix_tokens
        self.num_tokens = num_patches + (self.num_prefix_tokens if config.keep_prefix_tokens else 0)

    @staticmethod
    def _stem_embed(config: TimmViTConfig) -> Any:
        """timm's ``HybridEmbed`` around a ``ConvStem`` (3x3 convs, norm + ReLU between them); with
        ``colour_split`` the stem sees the value structure and each token gets its patch's colour added."""
        from timm.layers import GroupNorm1, HybridEmbed
        from timm.models.vision_transformer_hybrid import ConvStem

        norm: Any = nn.BatchNorm2d if config.stem_norm == "batch" else GroupNorm1
        stem = ConvStem(in_chans=1 if config.colour_split else config.in_chans, depth=len(config.stem_channels),
                        channels=config.stem_channels, kernel_size=3, stride=config.stem_strides, norm_layer=norm)
        if not config.colour_split:
            return functools.partial(HybridEmbed, backbone=stem)

        class ColourSplitEmbed(HybridEmbed):
            def __init__(self, **kwargs: Any):
                super().__init__(backbone=nn.Sequential(_ValueStructure(config.patch_size), stem), **kwargs)
                self.colour = PatchColour(config.in_chans, config.stem_channels[0], kwargs["embed_dim"], config.patch_size)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return super().forward(x) + self.colour(x).flatten(2).transpose(1, 2)

        return ColourSplitEmbed

    def _load_weights(self, path: pathlib.Path) -> None:
        state = _read_state_dict(path)
        state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc.", "classifier."))}
        filter_fn = getattr(sys.modules[type(self.model).__module__], "checkpoint_filter_fn", None)
        try:
            if filter_fn is not None:  # e.g. resamples the position embedding to this img_size/patch_size
                state = filter_fn(state, self.model)
            missing, unexpected = self.model.load_state_dict(state, strict=False)
        except (RuntimeError, ValueError, KeyError) as exc:  # shape mismatches
            raise ConfigError(f"timm-vit: weights {str(path)!r} do not fit {self.config.model_name!r} as configured: "
                              f"{str(exc)[:400]}") from exc
        if missing or unexpected:
            raise ConfigError(
                f"timm-vit: weights {str(path)!r} do not fit {self.config.model_name!r}: missing {sorted(missing)[:6]}, "
                f"unexpected {sorted(unexpected)[:6]}"
            )

    @staticmethod
    def _tokens(features: torch.Tensor) -> torch.Tensor:
        return features.flatten(2).transpose(1, 2) if features.dim() == 4 else features  # CNN maps -> tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        c, s = self.config.in_chans, self.config.img_size
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (c, s, s):
            raise VisionInputError(
                f"timm-vit expects images [B, {c}, {s}, {s}] in [-1, 1], got {tuple(getattr(images, 'shape', ()))}"
            )
        x = images
        if self.config.imagenet_normalize:  # [-1, 1] -> [0, 1] -> the model's (mean, std) normalisation
            x = ((images + 1.0) * 0.5 - self.pixel_mean.to(x.dtype)) / self.pixel_std.to(x.dtype)
        features = self._tokens(self.model.forward_features(x))
        if not self.config.keep_prefix_tokens:
            features = features[:, self.num_prefix_tokens:]
        return features

    def example_inputs(self) -> tuple[torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        return (torch.rand(2, self.config.in_chans, self.config.img_size, self.config.img_size, generator=g) * 2 - 1,)
