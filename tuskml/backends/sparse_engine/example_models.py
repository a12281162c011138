"""Small torch models built only from ops the engine supports, for tests, benchmarks and ``deploy``.

``tiny_cnn()`` and ``tiny_mobilevit()`` are factories usable as ``package.module:factory`` on the
``tuskml tinyformer deploy`` command line. Weights are seeded random (no downloads); batch norm
statistics are made non-trivial so that folding is actually exercised.
"""

from __future__ import annotations

import torch
from torch import nn


def _randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU6) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class TinyCNN(nn.Module):
    """conv-bn-relu x2, max pool, depthwise + pointwise, avg pool, global pool, linear."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 8):
        super().__init__()
        self.stem = conv_bn_act(in_channels, width, 3, 1, act=nn.ReLU)
        self.conv2 = conv_bn_act(width, width * 2, 3, 2)
        self.pool = nn.MaxPool2d(2)
        self.dw = conv_bn_act(width * 2, width * 2, 3, 1, groups=width * 2)
        self.pw = conv_bn_act(width * 2, width * 4, 1, act=nn.ReLU)
        self.avg = nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv2(self.stem(x)))
        x = self.pw(self.dw(x))
        x = self.gap(self.avg(x))
        return self.fc(torch.flatten(x, 1))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project (+ residual when shapes match)."""

    def __init__(self, cin: int, cout: int, expand: int = 4, stride: int = 1, k: int = 3, act: type[nn.Module] = nn.SiLU):
        super().__init__()
        hidden = cin * expand
        self.expand = conv_bn_act(cin, hidden, 1, act=act)
        self.dw = conv_bn_act(hidden, hidden, k, stride, groups=hidden, act=act)
        self.project = conv_bn_act(hidden, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: LN -> multi-head self-attention -> add, LN -> MLP(GELU) -> add."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class MobileViTBlock(nn.Module):
    """Local conv, unfold into patches (reshape/transpose), transformer over patches, fold, fuse."""

    def __init__(self, channels: int, dim: int, heads: int, patch: int = 2, depth: int = 1):
        super().__init__()
        self.patch = patch
        self.local = conv_bn_act(channels, channels, 3, act=nn.SiLU)
        self.to_dim = nn.Conv2d(channels, dim, 1, bias=False)
        self.layers = nn.Sequential(*[TransformerLayer(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.from_dim = conv_bn_act(dim, channels, 1, act=nn.SiLU)
        self.fuse = conv_bn_act(2 * channels, channels, 3, act=nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.to_dim(self.local(x))
        d = y.shape[1]
        p = self.patch
        # [N, D, H, W] -> [N*p*p, (H/p)*(W/p), D]: pixels at the same offset within each patch form a sequence
        y = y.reshape(n, d, h // p, p, w // p, p).permute(0, 3, 5, 2, 4, 1).reshape(n * p * p, (h // p) * (w // p), d)
        y = self.norm(self.layers(y))
        y = y.reshape(n, p, p, h // p, w // p, d).permute(0, 5, 3, 1, 4, 2).reshape(n, d, h, w)
        y = self.from_dim(y)
        return self.fuse(torch.cat([x, y], dim=1))


class TinyMobileViT(nn.Module):
    """A MobileViT-like hybrid: conv stem, MBConv stages, one MobileViT block, global pool, classifier."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 8, dim: int = 16, heads: int = 2):
        super().__init__()
        self.stem = conv_bn_act(in_channels, width, 3, 2, act=nn.SiLU)
        self.stage1 = nn.Sequential(MBConv(width, width, 2), MBConv(width, width * 2, 2, stride=2))
        self.vit = MobileViTBlock(width * 2, dim, heads)
        self.head = conv_bn_act(width * 2, width * 4, 1, act=nn.SiLU)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.vit(self.stage1(self.stem(x)))
        x = self.gap(self.head(x))
        return self.fc(x.flatten(1))


def tiny_cnn(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    return _randomize_bn(TinyCNN(), seed)


def tiny_mobilevit(seed: int = 0) -> TinyMobileViT:
    torch.manual_seed(seed)
    return _randomize_bn(TinyMobileViT(), seed)
