"""Channel equalisation before calibration (quantize.equalize_depthwise_inputs).

The MBConv pattern ``1x1 expand -> BN -> ReLU6 -> depthwise -> BN`` with a near-dead expand channel:
BN folding leaves that channel a few quantisation steps wide in the int8 tensor while its depthwise
weights are ~50x larger than the others'. Without equalisation the int8 model loses the channel;
with it the int8 reference tracks float, the float function is unchanged and the C backend still
matches the reference bit for bit (checked on the host build).
"""

import numpy as np
import pytest
import torch
from torch import nn

from tuskml.backends.sparse_engine import reference
from tuskml.backends.sparse_engine.frontend import import_torch
from tuskml.backends.sparse_engine.quantize import (
    MAX_EQUALIZATION_SCALE,
    equalization_pairs,
    equalize_depthwise_inputs,
    quantize_graph,
)


def mbconv_with_weak_channels(seed: int = 0) -> nn.Module:
    """BN statistics re-estimated on data (as the search does): the depthwise BN after the weak
    expand channels (gamma 0.01) sees a tiny variance and its fold multiplies them ~100x."""
    torch.manual_seed(seed)
    c, hidden = 4, 12
    net = nn.Sequential(
        nn.Conv2d(c, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
        nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
        nn.Conv2d(hidden, c, 1),
    )
    with torch.no_grad():
        net[1].weight[:3] = 0.01
        net[4].bias.fill_(0.5)
        for bn in (net[1], net[4]):
            bn.momentum = None
        net.train()(torch.randn(256, c, 8, 8, generator=torch.Generator().manual_seed(seed + 100)))
    return net.eval()


@pytest.fixture(scope="module")
def case():
    net = mbconv_with_weak_channels()
    x = torch.randn(64, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    graph = import_torch(net, x[:1])
    with torch.no_grad():
        ref = net(x).numpy().astype(np.float64)
    return net, x, graph, ref


def _int8_error(graph, x, ref, equalize: bool) -> float:
    q = quantize_graph(graph, x[:32], equalize=equalize)
    got = reference.run(q, reference.quantize_input(q, x[32:])).float_outputs[0]
    return float(np.abs(got - ref[32:]).mean() / np.abs(ref[32:]).mean())


def test_pairs_found_and_float_function_unchanged(case):
    _, x, graph, ref = case
    pairs = equalization_pairs(graph)
    assert [(p.op, d.op) for p, d in pairs] == [("conv2d", "depthwise_conv2d")]
    eq, scales = equalize_depthwise_inputs(graph, x[:32])
    (s,) = scales.values()
    assert np.all(s >= 1.0) and np.all(s <= MAX_EQUALIZATION_SCALE)
    assert s[:3].min() > 10 * s[3:].max()  # the weak channels are the ones scaled up
    before = reference.run_float(graph, reference.to_graph_layout(graph, x))[graph.outputs[0]]
    after = reference.run_float(eq, reference.to_graph_layout(eq, x))[eq.outputs[0]]
    assert np.abs(after - before).max() < 1e-4 * np.abs(before).max()
    # the input graph is left alone
    w = graph.tensors[pairs[0][0].inputs[1]].data
    assert np.array_equal(w, import_torch(case[0], x[:1]).tensors[pairs[0][0].inputs[1]].data)


def test_int8_tracks_float_only_with_equalisation(case):
    _, x, graph, ref = case
    plain = _int8_error(graph, x, ref, equalize=False)
    equalised = _int8_error(graph, x, ref, equalize=True)
    assert equalised < 0.03, equalised
    assert plain > 3 * equalised, (plain, equalised)


def test_no_pair_means_no_change():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(4, 3, 6, 6)
    graph = import_torch(net, x[:1])
    eq, scales = equalize_depthwise_inputs(graph, x)
    assert eq is graph and scales == {}


@pytest.mark.parametrize("use_dsp", [False, True], ids=["portable", "dsp"])
def test_c_host_build_is_bit_exact_with_equalised_graph(case, tmp_path, use_dsp):
    from tuskml.backends.c.codegen import generate_c_project
    from tuskml.backends.c.host import build_project, run_project
    from tuskml.backends.sparse_engine.memory_plan import plan_memory

    _, x, graph, _ = case
    q = quantize_graph(graph, x[:32])
    xq = reference.quantize_input(q, x[32:40])
    ref = reference.run(q, xq).outputs[0]
    project = generate_c_project(q, plan_memory(q), tmp_path, use_dsp=use_dsp, test_inputs=xq[:1],
                                 expected_outputs=ref[:1])
    got = run_project(build_project(project.directory), xq, input_bytes=project.input_bytes,
                      output_bytes=project.output_bytes)
    np.testing.assert_array_equal(got.reshape(ref.shape), ref)
