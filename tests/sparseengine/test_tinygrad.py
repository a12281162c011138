"""tinygrad executes the same integer graph bit-exactly like the reference (independent cross-check).

tinygrad compiles every kernel in Python (1-3 s each, on the PYTHON and CPU devices alike), so the
default tests use one graph that covers every op at tiny shapes; the whole MobileViT-like model is
marked slow (several minutes)."""

import numpy as np
import pytest
import torch
from torch import nn

from tuskml.backends.sparse_engine.example_models import TinyCNN, tiny_mobilevit
from tuskml.backends.sparse_engine.quantize import quantize_model
from tuskml.backends.sparse_engine.reference import ExecutionError, quantize_input, run_integer
from tuskml.backends.sparse_engine.tinygrad_backend import pick_device, run_tinygrad


class AllOps(nn.Module):
    """conv(+relu6 fused), depthwise(+bn), max/avg pool, 1x1 conv, SiLU LUT, add, mul, concat,
    tokens -> layer norm -> attention (linear, batch matmul, softmax) -> mean -> linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4), nn.BatchNorm2d(4))
        self.pool = nn.MaxPool2d(3, 1, padding=1)
        self.pw = nn.Conv2d(4, 4, 1)
        self.act = nn.SiLU()
        self.ln = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y = self.dw(self.conv(x))  # [N, 4, 3, 3]
        y = self.act(self.pw(y))
        z = torch.cat([y + self.pool(y), y * y], dim=1)  # [N, 8, 3, 3]
        z = nn.functional.avg_pool2d(z, 1)
        t = z.flatten(2).transpose(1, 2)  # [N, 9, 8]
        h = self.ln(t)
        t = t + self.attn(h, h, h, need_weights=False)[0]
        return self.head(t.mean(1))


def test_pick_device():
    assert pick_device("PYTHON") == "PYTHON"
    assert pick_device("auto") in ("PYTHON", "CPU")
    with pytest.raises(ExecutionError, match="device"):
        pick_device("CUDA")


def test_all_ops_graph_matches_reference_bit_exactly():
    torch.manual_seed(0)
    x = torch.randn(8, 2, 5, 5)
    graph = quantize_model(AllOps().eval(), x)
    ops = {n.op for n in graph.nodes}
    assert {"conv2d", "depthwise_conv2d", "max_pool2d", "lut", "add", "mul", "concat", "layer_norm",
            "fully_connected", "batch_matmul", "softmax", "mean", "transpose", "reshape", "avg_pool2d"} <= ops
    xq = quantize_input(graph, x[:2])
    ref = run_integer(graph, xq)[graph.outputs[0]]
    got = run_tinygrad(graph, xq, device="PYTHON")
    assert got.dtype == np.int8 and np.array_equal(got, ref)


@pytest.mark.slow
def test_whole_mobilevit_matches_reference():
    x = torch.randn(4, 3, 32, 32)
    graph = quantize_model(tiny_mobilevit(), x)
    xq = quantize_input(graph, x[:1])
    assert np.array_equal(run_tinygrad(graph, xq), run_integer(graph, xq)[graph.outputs[0]])


@pytest.mark.slow
def test_whole_cnn_matches_reference():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16)
    graph = quantize_model(TinyCNN(width=4).eval(), x)
    xq = quantize_input(graph, x[:2])
    assert np.array_equal(run_tinygrad(graph, xq), run_integer(graph, xq)[graph.outputs[0]])


def test_registered_tinygrad_backend_runs_a_graph():
    import tuskml
    from tuskml.backends.sparse_engine.backend_api import BackendRun

    torch.manual_seed(0)
    x = torch.randn(4, 3, 8) * 2
    graph = quantize_model(nn.GELU(), x)
    xq = quantize_input(graph, x)
    result = tuskml.create("engine_backend", "tinygrad", device="PYTHON").run(graph, xq)
    assert isinstance(result, BackendRun) and result.instructions is None
    assert np.array_equal(result.outputs, run_integer(graph, xq)[graph.outputs[0]])
    with pytest.raises(ExecutionError, match="unknown keyword"):
        tuskml.create("engine_backend", "tinygrad").run(graph, xq, plan=None)
