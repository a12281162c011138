"""The ``tinyformer-hybrid`` weight-sharing supernet and its elastic layers.

Every layer holds the weights of its largest setting; a subnet uses the leading slice (first ``c``
output/input channels, centre ``k x k`` of the kernel, first ``e`` embedding dims, first ``L``
blocks), as in OFA/BigNAS. Each elastic layer has ``forward(x, ...)`` for training the supernet and
``export(...)`` returning the plain torch layer with the same slice copied in; both slice in one
place (``_slices``), so an extracted subnet computes exactly what the supernet computed for that arch
(a test checks this).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

from tuskml.plugins.tinyformer import subnet as plain
from tuskml.plugins.tinyformer.arch import (
    CandidateSpace,
    HybridArch,
    candidate_spaces,
    check_arch,
    extreme_arch,
    make_divisible,
    sample_arch,
    validate_space,
)
from tuskml.plugins.tinyformer.configs import TinyformerHybridConfig


class ElasticConvBN(nn.Module):
    """Conv2d (ungrouped or depthwise) [+ BatchNorm2d] [+ ReLU6], elastic in channels and kernel size.

    ``in_index`` (optional) picks input channels that are not a leading slice (the MobileViT fuse
    conv reads ``[x, y]`` concatenated, each part a leading slice of its own maximum).
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, depthwise: bool = False, act: bool = True,
                 bn: bool = True):
        super().__init__()
        self.stride, self.depthwise, self.act, self.k_max = stride, depthwise, act, k
        self.weight = nn.Parameter(torch.empty(cout, 1 if depthwise else cin, k, k))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.bn = nn.BatchNorm2d(cout) if bn else None

    def _slices(self, cin: int | torch.Tensor, cout: int, k: int) -> torch.Tensor:
        off = (self.k_max - k) // 2
        w = self.weight[:, :, off:off + k, off:off + k]
        if self.depthwise:
            return w[:cout]
        if isinstance(cin, torch.Tensor):
            return w[:cout].index_select(1, cin)
        return w[:cout, :cin]

    def forward(self, x: torch.Tensor, cout: int, k: int | None = None, in_index: torch.Tensor | None = None) -> torch.Tensor:
        k = k or self.k_max
        cin = x.shape[1]
        if self.depthwise:
            cout = cin
        w = self._slices(in_index if in_index is not None else cin, cout, k)
        y = F.conv2d(x, w, None, self.stride, k // 2, groups=cin if self.depthwise else 1)
        if self.bn is not None:
            bn = self.bn
            y = F.batch_norm(y, bn.running_mean[:cout], bn.running_var[:cout], bn.weight[:cout], bn.bias[:cout],
                             self.training, bn.momentum if bn.momentum is not None else 0.1, bn.eps)
        return F.relu6(y) if self.act else y

    def export(self, cin: int, cout: int, k: int | None = None, in_index: torch.Tensor | None = None) -> nn.Sequential:
        k = k or self.k_max
        if self.depthwise:
            cout = cin
        m = plain.conv_bn_act(cin, cout, k, self.stride, depthwise=self.depthwise, act=self.act, bn=self.bn is not None)
        with torch.no_grad():
            m[0].weight.copy_(self._slices(in_index if in_index is not None else cin, cout, k))
            if self.bn is not None:
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(m[1], name).copy_(getattr(self.bn, name)[:cout])
        return m


class ElasticLinear(nn.Module):
    """Linear layer elastic in input and output features (leading slices)."""

    def __init__(self, fin: int, fout: int):
        super().__init__()
        ref = nn.Linear(fin, fout)
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone())

    def forward(self, x: torch.Tensor, fout: int) -> torch.Tensor:
        return F.linear(x, self.weight[:fout, :x.shape[-1]], self.bias[:fout])

    def export(self, fin: int, fout: int) -> nn.Linear:
        m = nn.Linear(fin, fout)
        with torch.no_grad():
            m.weight.copy_(self.weight[:fout, :fin])
            m.bias.copy_(self.bias[:fout])
        return m


class ElasticLayerNorm(nn.LayerNorm):
    """LayerNorm over the active leading ``d`` features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        return F.layer_norm(x, (d,), self.weight[:d], self.bias[:d], self.eps)

    def export(self, d: int) -> nn.LayerNorm:
        m = nn.LayerNorm(d, eps=self.eps)
        with torch.no_grad():
            m.weight.copy_(self.weight[:d])
            m.bias.copy_(self.bias[:d])
        return m


class ElasticMBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int):
        super().__init__()
        self.stride = stride
        hidden = cin * expand
        self.expand = ElasticConvBN(cin, hidden, 1)
        self.dw = ElasticConvBN(hidden, hidden, k, stride, depthwise=True)
        self.project = ElasticConvBN(hidden, cout, 1, act=False)

    def forward(self, x: torch.Tensor, cout: int, k: int, e: int) -> torch.Tensor:
        cin = x.shape[1]
        y = self.project(self.dw(self.expand(x, cin * e), 0, k), cout)
        return x + y if self.stride == 1 and cin == cout else y

    def export(self, cin: int, cout: int, k: int, e: int) -> plain.MBConvBlock:
        m = plain.MBConvBlock(cin, cout, cin * e, k, self.stride)
        m.expand = self.expand.export(cin, cin * e)
        m.dw = self.dw.export(cin * e, cin * e, k)
        m.project = self.project.export(cin * e, cout)
        return m


class ElasticTransformerLayer(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = ElasticLayerNorm(dim)
        self.q, self.k, self.v, self.proj = (ElasticLinear(dim, dim) for _ in range(4))
        self.norm2 = ElasticLayerNorm(dim)
        self.fc1 = ElasticLinear(dim, dim * mlp_ratio)
        self.fc2 = ElasticLinear(dim * mlp_ratio, dim)

    def forward(self, x: torch.Tensor, heads: int, mlp_ratio: int) -> torch.Tensor:
        b, t, e = x.shape
        hd = e // heads
        h = self.norm1(x)
        q, k, v = (lin(h, e).reshape(b, t, heads, hd).permute(0, 2, 1, 3) for lin in (self.q, self.k, self.v))
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / hd ** 0.5)
        att = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).reshape(b, t, e)
        x = x + self.proj(att, e)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x), e * mlp_ratio)), e)

    def export(self, dim: int, heads: int, mlp_ratio: int) -> plain.TransformerLayer:
        m = plain.TransformerLayer(dim, heads, dim * mlp_ratio)
        m.norm1, m.norm2 = self.norm1.export(dim), self.norm2.export(dim)
        for name in ("q", "k", "v", "proj"):
            setattr(m.attn, name, getattr(self, name).export(dim, dim))
        m.fc1 = self.fc1.export(dim, dim * mlp_ratio)
        m.fc2 = self.fc2.export(dim * mlp_ratio, dim)
        return m


class ElasticMobileViT(nn.Module):
    def __init__(self, channels: int, dim: int, mlp_ratio: int, depth: int, patch: int):
        super().__init__()
        self.patch, self.c_max = patch, channels
        self.local = ElasticConvBN(channels, channels, 3, depthwise=True)
        self.to_dim = ElasticConvBN(channels, dim, 1, act=False, bn=False)
        self.layers = nn.ModuleList(ElasticTransformerLayer(dim, mlp_ratio) for _ in range(depth))
        self.norm = ElasticLayerNorm(dim)
        self.from_dim = ElasticConvBN(dim, channels, 1)
        self.fuse = ElasticConvBN(2 * channels, channels, 1)

    def _fuse_index(self, c: int) -> torch.Tensor:
        return torch.cat([torch.arange(c), self.c_max + torch.arange(c)])

    def forward(self, x: torch.Tensor, dim: int, heads: int, mlp_ratio: int, depth: int) -> torch.Tensor:
        n, c, h, w = x.shape
        y = plain.unfold_patches(self.to_dim(self.local(x, c), dim), self.patch)
        for layer in self.layers[:depth]:
            y = layer(y, heads, mlp_ratio)
        y = self.from_dim(plain.fold_patches(self.norm(y), n, h, w, self.patch), c)
        return self.fuse(torch.cat([x, y], dim=1), c, in_index=self._fuse_index(c))

    def export(self, c: int, dim: int, heads: int, mlp_ratio: int, depth: int) -> plain.MobileViTBlock:
        m = plain.MobileViTBlock(c, dim, heads, dim * mlp_ratio, depth, self.patch)
        m.local = self.local.export(c, c, 3)
        m.to_dim = self.to_dim.export(c, dim)[0]
        m.layers = nn.Sequential(*[self.layers[i].export(dim, heads, mlp_ratio) for i in range(depth)])
        m.norm = self.norm.export(dim)
        m.from_dim = self.from_dim.export(dim, c)
        m.fuse = self.fuse.export(2 * c, c, in_index=self._fuse_index(c))
        return m


class ElasticStage(nn.Module):
    def __init__(self, blocks: nn.ModuleList, vit: ElasticMobileViT | None):
        super().__init__()
        self.blocks = blocks
        self.vit = vit


class TinyformerHybridSpace(nn.Module):
    """The registered ``tinyformer-hybrid`` search space: the supernet module plus the space's API.

    ``sample(rng)`` draws an arch, ``forward(x, arch)`` runs that single path through the shared
    weights, ``extract(arch)`` returns a standalone :class:`~.subnet.HybridSubnet` with inherited
    weights, ``flops(arch)`` / ``params(arch)`` count it, ``candidate_spaces()`` lists the coarse
    (width, resolution) spaces SuperNAS chooses among. ``forward(x)`` without an arch runs the
    largest subnet.
    """

    def __init__(self, config: TinyformerHybridConfig | None = None):
        super().__init__()
        cfg = config or TinyformerHybridConfig()
        validate_space(cfg)
        self.config = cfg
        n = len(cfg.stage_channels)
        wmax, dmax = max(cfg.width_mults), max(cfg.depth_choices)
        kmax, emax = max(cfg.kernel_choices), max(cfg.expand_choices)
        stem = make_divisible(cfg.stem_channels * wmax)
        self.stem = ElasticConvBN(cfg.in_channels, stem, 3, stride=2)
        stages = []
        cin = stem
        first_vit = min(cfg.transformer_starts)
        for s in range(n):
            cout = make_divisible(cfg.stage_channels[s] * wmax)
            blocks = nn.ModuleList(ElasticMBConv(cin if b == 0 else cout, cout, emax, kmax, cfg.stage_strides[s] if b == 0 else 1)
                                   for b in range(dmax))
            vit = (ElasticMobileViT(cout, max(cfg.embed_dims), max(cfg.mlp_ratios), max(cfg.transformer_depths),
                                    cfg.patch_size) if s >= first_vit else None)
            stages.append(ElasticStage(blocks, vit))
            cin = cout
        self.stages = nn.ModuleList(stages)
        head = make_divisible(cfg.head_channels * wmax)
        self.head = ElasticConvBN(cin, head, 1)
        self.classifier = ElasticLinear(head, cfg.num_classes)

    # --- the space's API ------------------------------------------------------------------------

    def sample(self, rng: random.Random, candidate: CandidateSpace | None = None) -> HybridArch:
        return sample_arch(self.config, rng, candidate)

    def largest(self) -> HybridArch:
        return extreme_arch(self.config, largest=True)

    def smallest(self) -> HybridArch:
        return extreme_arch(self.config, largest=False)

    def candidate_spaces(self) -> list[CandidateSpace]:
        return candidate_spaces(self.config)

    def channels(self, arch: HybridArch) -> tuple[int, list[int], int]:
        """(stem, per-stage, head) channel counts of ``arch``."""
        cfg = self.config
        return (make_divisible(cfg.stem_channels * arch.width_mult),
                [make_divisible(c * arch.width_mult) for c in cfg.stage_channels],
                make_divisible(cfg.head_channels * arch.width_mult))

    def forward(self, x: torch.Tensor, arch: HybridArch | None = None) -> torch.Tensor:
        arch = arch or self.largest()
        stem_c, stage_c, head_c = self.channels(arch)
        x = self.stem(x, stem_c)
        for s, stage in enumerate(self.stages):
            for b in range(arch.mbconv_depth(s)):
                x = stage.blocks[b](x, stage_c[s], arch.kernels[s][b], arch.expands[s][b])
            if arch.is_vit_stage(s):
                x = stage.vit(x, arch.embed_dims[s], arch.heads[s], arch.mlp_ratios[s], arch.vit_depths[s])
        x = self.head(x, head_c).mean(dim=(2, 3))
        return self.classifier(x, self.config.num_classes)

    def extract(self, arch: HybridArch) -> plain.HybridSubnet:
        """A standalone model of ``arch`` with the supernet's (inherited) weights, in eval mode."""
        check_arch(arch, self.config)
        stem_c, stage_c, head_c = self.channels(arch)
        stem = self.stem.export(self.config.in_channels, stem_c)
        stages = nn.ModuleList()
        cin = stem_c
        for s, stage in enumerate(self.stages):
            mods: list[nn.Module] = []
            for b in range(arch.mbconv_depth(s)):
                mods.append(stage.blocks[b].export(cin, stage_c[s], arch.kernels[s][b], arch.expands[s][b]))
                cin = stage_c[s]
            if arch.is_vit_stage(s):
                mods.append(stage.vit.export(cin, arch.embed_dims[s], arch.heads[s], arch.mlp_ratios[s],
                                             arch.vit_depths[s]))
            stages.append(nn.Sequential(*mods))
        net = plain.HybridSubnet(stem, stages, self.head.export(cin, head_c),
                                 self.classifier.export(head_c, self.config.num_classes),
                                 self.config.in_channels, arch.resolution, arch)
        return net.eval()

    def flops(self, arch: HybridArch) -> int:
        """Multiply-accumulates of one image through ``arch`` (convs, linears, attention matmuls)."""
        return count_macs(self.extract(arch))

    def params(self, arch: HybridArch) -> int:
        return sum(p.numel() for p in self.extract(arch).parameters())

    def example_inputs(self) -> tuple[torch.Tensor]:
        r = max(self.config.resolutions)
        g = torch.Generator().manual_seed(0)
        return (torch.randn(2, self.config.in_channels, r, r, generator=g),)


def count_macs(model: nn.Module, example: torch.Tensor | None = None) -> int:
    """Multiply-accumulates of one image (batch 1): convolutions, linear layers and the two attention
    matmuls (``q k^T`` and ``attn v``), counted with forward hooks on a standalone subnet."""
    if example is None:
        example = model.example_inputs()[0]
    total = 0

    def conv_hook(m: nn.Conv2d, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m: nn.Linear, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    def attention_hook(m: plain.Attention, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        b, t, e = inputs[0].shape
        total += 2 * b * t * t * e

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, plain.Attention):
            handles.append(m.register_forward_hook(attention_hook))
    try:
        with torch.no_grad():
            model.eval()(example[:1])
    finally:
        for h in handles:
            h.remove()
    return int(total)
