"""Every op, imported from torch, quantised and run by the reference backend, is within quantisation
error of torch's float result (hypothesis over shapes and attributes)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _engine_helpers import float_graph_matches_torch, quantize_and_compare
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(module, x, lsb: float = 3.0, rel: float = 0.03):
    """dequantised int8 output vs float: max error <= lsb output steps + rel * output range."""
    float_graph_matches_torch(module, x)
    graph, ref, got, scale = quantize_and_compare(module, x)
    err = np.abs(ref - got).max()
    bound = lsb * scale + rel * np.abs(ref).max()
    assert err <= bound, f"max error {err:.4g} > {bound:.4g} (scale {scale:.4g})"
    return graph


def seeded(seed):
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@SETTINGS
@given(cin=st.integers(1, 6), cout=st.integers(1, 8), k=st.sampled_from([1, 2, 3, 5]), stride=st.integers(1, 2),
       pad=st.integers(0, 2), dil=st.integers(1, 2), hw=st.integers(6, 10), seed=st.integers(0, 99),
       act=st.sampled_from(["none", "relu", "relu6"]))
def test_conv2d(cin, cout, k, stride, pad, dil, hw, seed, act):
    assume(dil * (k - 1) + 1 <= hw + 2 * pad)
    seeded(seed)
    layers = [nn.Conv2d(cin, cout, k, stride, pad, dilation=dil)]
    layers += {"none": [], "relu": [nn.ReLU()], "relu6": [nn.ReLU6()]}[act]
    graph = check(nn.Sequential(*layers), torch.randn(4, cin, hw, hw))
    compute = [n.op for n in graph.nodes if n.op not in ("transpose", "reshape")]
    assert compute == ["conv2d"]  # activation fused


@SETTINGS
@given(c=st.integers(2, 8), k=st.sampled_from([3, 5]), stride=st.integers(1, 2), seed=st.integers(0, 99))
def test_depthwise_conv_with_batchnorm(c, k, stride, seed):
    seeded(seed)
    bn = nn.BatchNorm2d(c)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    graph = check(nn.Sequential(nn.Conv2d(c, c, k, stride, k // 2, groups=c, bias=False), bn), torch.randn(4, c, 9, 9))
    compute = [n.op for n in graph.nodes if n.op not in ("transpose", "reshape")]  # NHWC -> NCHW output
    assert compute == ["depthwise_conv2d"]  # batch norm folded


@SETTINGS
@given(k=st.integers(1, 40), o=st.integers(1, 24), lead=st.sampled_from([(), (3,)]), seed=st.integers(0, 99))
def test_linear(k, o, lead, seed):
    seeded(seed)
    check(nn.Linear(k, o), torch.randn(4, *lead, k))


@SETTINGS
@given(fn=st.sampled_from(["gelu", "silu", "sigmoid", "tanh", "hardswish", "relu", "relu6"]), seed=st.integers(0, 99))
def test_lut_activations(fn, seed):
    seeded(seed)
    module = {"gelu": nn.GELU(), "silu": nn.SiLU(), "sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(),
              "hardswish": nn.Hardswish(), "relu": nn.ReLU(), "relu6": nn.ReLU6()}[fn]
    graph = check(module, torch.randn(8, 5, 7) * 3)
    assert [n.op for n in graph.nodes] == ["lut"]


@SETTINGS
@given(shape=st.sampled_from([(3, 5, 6, 6), (2, 7, 4)]), seed=st.integers(0, 99), bcast=st.booleans())
def test_add_and_mul(shape, seed, bcast):
    seeded(seed)
    a = torch.randn(4, *shape[1:])
    for op in (torch.add, torch.mul):
        graph = check(TwoBranch(op, shape[1], bcast), a)
        assert graph.nodes[-1].op in ("add", "mul") or graph.nodes[-2].op in ("add", "mul")


class TwoBranch(nn.Module):
    """y = op(f(x), g(x)) with two different 1x1 / linear maps so both inputs are activations."""

    def __init__(self, op, c, bcast):
        super().__init__()
        self.op, self.bcast = op, bcast
        self.f = nn.Linear(c, c)
        self.g = nn.Linear(c, c)

    def forward(self, x):
        x = x.transpose(1, -1)
        a, b = self.f(x), self.g(x)
        if self.bcast:
            b = b.mean(1, keepdim=True)
        return self.op(a, b)


@SETTINGS
@given(k=st.integers(2, 3), stride=st.integers(1, 3), pad=st.integers(0, 1), seed=st.integers(0, 99))
def test_pools(k, stride, pad, seed):
    seeded(seed)
    x = torch.randn(4, 3, 9, 9)
    check(nn.MaxPool2d(k, stride, padding=min(pad, k // 2)), x)
    check(nn.AvgPool2d(k, stride), x)
    check(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), x)
    check(Lambda(lambda t: t.mean((2, 3))), x)


@SETTINGS
@given(c=st.integers(8, 64), seed=st.integers(0, 99))
def test_layer_norm(c, seed):
    # (tiny rows such as C=2 are ill-conditioned: z is +-1 or 0 depending on input rounding alone)
    seeded(seed)
    ln = nn.LayerNorm(c)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.3, 0.3)
    check(ln, torch.randn(4, 6, c) * 2 + 0.5, lsb=3.0, rel=0.04)


@SETTINGS
@given(n=st.integers(2, 40), seed=st.integers(0, 99), scale=st.floats(0.5, 4.0))
def test_softmax(n, seed, scale):
    seeded(seed)
    check(nn.Softmax(dim=-1), torch.randn(4, 3, n) * scale, lsb=2.0, rel=0.03)  # rel: input rounding


@SETTINGS
@given(t=st.integers(2, 9), e=st.sampled_from([4, 8, 12]), heads=st.sampled_from([1, 2, 4]), seed=st.integers(0, 99))
def test_multihead_self_attention(t, e, heads, seed):
    seeded(seed)
    mha = nn.MultiheadAttention(e, heads, batch_first=True)
    module = Lambda(lambda x: mha(x, x, x, need_weights=False)[0])
    module.mha = mha
    graph = check(module, torch.randn(4, t, e), lsb=4.0, rel=0.05)
    assert sum(n.op == "batch_matmul" for n in graph.nodes) == 2 and any(n.op == "softmax" for n in graph.nodes)


def test_scaled_dot_product_attention_and_matmul():
    seeded(0)
    q = nn.Linear(8, 8)
    k = nn.Linear(8, 8)
    v = nn.Linear(8, 8)

    class SDPA(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = q, k, v

        def forward(self, x):
            b, t, _ = x.shape
            split = lambda y: y.reshape(b, t, 2, 4).transpose(1, 2)
            out = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
            return out.transpose(1, 2).reshape(b, t, 8)

    check(SDPA(), torch.randn(4, 5, 8), lsb=4.0, rel=0.05)


def test_concat_transpose_reshape_and_patches():
    seeded(1)

    class Patches(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(3, 2, 1)
            self.unfold = nn.Unfold(2, stride=2)
            self.fold = nn.Fold((6, 6), 2, stride=2)
            self.lin = nn.Linear(6 * 4, 6 * 4)

        def forward(self, x):
            y = torch.cat([self.a(x), self.b(x)], dim=1)  # [N, 6, 6, 6]
            p = self.unfold(y)  # [N, 24, 9]
            p = self.lin(p.transpose(1, 2)).transpose(1, 2)
            return self.fold(p).permute(0, 2, 3, 1).flatten(1)

    graph = check(Patches(), torch.randn(4, 3, 6, 6), lsb=3.0, rel=0.04)
    assert {"concat", "transpose", "reshape"} <= {n.op for n in graph.nodes}


@pytest.mark.parametrize("scalar", [0.5, -2.0])
def test_scalar_multiply_is_requantize(scalar):
    seeded(2)
    lin = nn.Linear(4, 4)
    module = Lambda(lambda x: torch.sigmoid(lin(x)) * scalar)
    module.lin = lin
    graph = check(module, torch.randn(4, 3, 4))
    assert graph.nodes[-1].op == "requantize"
