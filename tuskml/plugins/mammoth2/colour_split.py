"""Splitting an image into *colour* and *structure*, so a model can learn each on its own.

HSV and JPEG split an image's chroma from its luma; here each patch of an image in ``[-1, 1]`` gives

* :func:`value_structure`: the value channel ``max(r, g, b)`` (in [0, 1]) divided by its patch
  maximum. A flat-coloured shape becomes the same 0/1 mask whatever its colour;
* :class:`PatchColour`: a per-pixel MLP (no spatial mixing) max-pooled over the patch and a black
  pixel. It tells which colours occur in a patch, not where, nor on how many pixels.

A colour seen on one shape and a shape seen in another colour then reach the model as two parts it
has both learned. Used by the ``vq`` tokenizer (``groups = "colour-structure"``) and the ``timm-vit``
encoder (``colour_split = true``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def value_structure(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``[B, 1, H, W]``: each pixel's value over the maximum value of its ``patch x patch`` patch."""
    value = (images.max(dim=1, keepdim=True).values + 1.0) / 2.0
    peak = F.interpolate(F.max_pool2d(value, patch), scale_factor=patch, mode="nearest")
    return value / peak.clamp_min(0.1)


class PatchColour(nn.Module):
    """``[B, C, H, W] -> [B, out_channels, H / patch, W / patch]``: each patch's colours."""

    def __init__(self, in_channels: int, width: int, out_channels: int, patch: int):
        super().__init__()
        self.patch = patch
        self.pixel = nn.Sequential(nn.Conv2d(in_channels, width, 1), nn.SiLU(), nn.Conv2d(width, width, 1), nn.SiLU())
        self.out = nn.Conv2d(width, out_channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # pooled together with a black pixel, so an all-red patch and a partly red (partly black
        # background) patch get the same vector
        black = self.pixel(torch.full_like(images[:1, :, :1, :1], -1.0))
        return self.out(torch.maximum(F.max_pool2d(self.pixel(images), self.patch), black))
