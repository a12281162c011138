"""Standalone single-path models extracted from the supernet: plain torch layers only.

Everything here is an op SparseEngine's frontend imports (``frontend.py``): Conv2d (ungrouped or
depthwise) + BatchNorm2d (folded) + ReLU6 (fused), Linear, LayerNorm, GELU (lookup table), add,
concat, reshape/permute for the patch unfold/fold, matmul * scale (folded into ``batch_matmul``),
softmax, global average pooling. Attention uses separate q/k/v Linear layers rather than
``nn.MultiheadAttention`` so each projection is its own prunable layer with its own block size.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, depthwise: bool = False, act: bool = True,
                bn: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=cin if depthwise else 1, bias=False)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


def unfold_patches(y: torch.Tensor, p: int) -> torch.Tensor:
    """[N, D, H, W] -> [N*p*p, (H/p)*(W/p), D]: pixels at the same offset in each p x p patch form one
    sequence (MobileViT's unfold), written as reshape/permute so the engine imports it."""
    n, d, h, w = y.shape
    return y.reshape(n, d, h // p, p, w // p, p).permute(0, 3, 5, 2, 4, 1).reshape(n * p * p, (h // p) * (w // p), d)


def fold_patches(y: torch.Tensor, n: int, h: int, w: int, p: int) -> torch.Tensor:
    """Inverse of :func:`unfold_patches`."""
    d = y.shape[-1]
    return y.reshape(n, p, p, h // p, w // p, d).permute(0, 5, 3, 1, 4, 2).reshape(n, d, h, w)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project, residual when shapes match."""

    def __init__(self, cin: int, cout: int, hidden: int, k: int, stride: int):
        super().__init__()
        self.expand = conv_bn_act(cin, hidden, 1)
        self.dw = conv_bn_act(hidden, hidden, k, stride, depthwise=True)
        self.project = conv_bn_act(hidden, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, e = x.shape
        q = self.q(x).reshape(b, t, self.heads, self.head_dim).permute(0, 2, 1, 3)
        k = self.k(x).reshape(b, t, self.heads, self.head_dim).permute(0, 2, 1, 3)
        v = self.v(x).reshape(b, t, self.heads, self.head_dim).permute(0, 2, 1, 3)
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        out = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).reshape(b, t, e)
        return self.proj(out)


class TransformerLayer(nn.Module):
    """Pre-norm: x + attn(LN(x)), then x + fc2(GELU(fc1(LN(x))))."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class MobileViTBlock(nn.Module):
    """Local depthwise conv, 1x1 to the embedding, unfold, transformer layers, fold, 1x1 back, fuse
    (1x1 conv over the concatenation with the block input)."""

    def __init__(self, channels: int, dim: int, heads: int, hidden: int, depth: int, patch: int):
        super().__init__()
        self.patch = patch
        self.local = conv_bn_act(channels, channels, 3, depthwise=True)
        self.to_dim = nn.Conv2d(channels, dim, 1, bias=False)
        self.layers = nn.Sequential(*[TransformerLayer(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.from_dim = conv_bn_act(dim, channels, 1)
        self.fuse = conv_bn_act(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.to_dim(self.local(x))
        y = self.norm(self.layers(unfold_patches(y, self.patch)))
        y = self.from_dim(fold_patches(y, n, h, w, self.patch))
        return self.fuse(torch.cat([x, y], dim=1))


class HybridSubnet(nn.Module):
    """One single-path network of the ``tinyformer-hybrid`` space (built by ``supernet.extract``).

    ``arch`` (a :class:`~tuskml.plugins.tinyformer.arch.HybridArch`) and ``resolution`` say what it is;
    ``example_inputs()`` gives a batch-1 input of the right shape for tracing and deployment.
    """

    def __init__(self, stem: nn.Module, stages: nn.ModuleList, head: nn.Module, classifier: nn.Linear,
                 in_channels: int, resolution: int, arch: object = None):
        super().__init__()
        self.stem = stem
        self.stages = stages
        self.head = head
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier
        self.in_channels = in_channels
        self.resolution = resolution
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = self.pool(self.head(x))
        return self.classifier(x.flatten(1))

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.zeros(1, self.in_channels, self.resolution, self.resolution),)
