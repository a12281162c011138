"""The memory planner never lets two live tensors share bytes, checked two independent ways:
by interval geometry, and by executing the graph inside one simulated arena."""

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuskml.backends.sparse_engine import fixedpoint as fp
from tuskml.backends.sparse_engine.example_models import tiny_cnn, tiny_mobilevit
from tuskml.backends.sparse_engine.ir import Graph, Node, Tensor
from tuskml.backends.sparse_engine.memory_plan import plan_memory
from tuskml.backends.sparse_engine.quantize import quantize_model
from tuskml.backends.sparse_engine.reference import _int_node, quantize_input, run_integer


def run_in_arena(graph: Graph, plan, x: np.ndarray) -> dict[str, np.ndarray]:
    """Execute with every activation stored at its planned offset in one bytearray.

    A node reads its inputs from the arena and writes its output back; if the plan let a live tensor
    be overwritten, the result differs from the reference."""
    arena = np.zeros(plan.arena_bytes, np.int8)

    def store(name, value):
        o = plan.offsets[name]
        arena[o:o + value.size] = value.reshape(-1)

    def load(name):
        o = plan.offsets[name]
        t = graph.tensors[name]
        return arena[o:o + t.size].reshape(t.shape).copy()

    store(graph.inputs[0], x)
    for node in graph.nodes:
        args = [load(n) for n in node.inputs if not graph.tensors[n].is_constant]
        if node.name in plan.scratch:  # clobber the scratch area like a kernel might
            off, nbytes = plan.scratch[node.name]
            arena[off:off + nbytes] = 99
        store(node.outputs[0], _int_node(graph, node, args))
    return {name: load(name) for name in graph.outputs}


@st.composite
def random_graphs(draw):
    """Random DAGs of element-wise ops, reshapes, depthwise convs and concats over [1, H, W, C] int8."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    g = Graph(quantized=True)
    c = draw(st.integers(1, 4))
    shape = (1, draw(st.integers(1, 5)), draw(st.integers(1, 5)), c)
    g.add_tensor(Tensor(name="x", shape=shape, dtype="int8", scale=0.1, zero_point=0))
    g.inputs.append("x")
    avail = ["x"]
    m, s = fp.quantize_multiplier(0.5)
    for i in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["add", "lut", "requantize", "dw", "concat", "reshape"]))
        a = avail[draw(st.integers(0, len(avail) - 1))]
        b = avail[draw(st.integers(0, len(avail) - 1))]
        out = f"t{i}"
        ta = g.tensors[a]
        if kind == "add" and g.tensors[b].shape == ta.shape:
            g.add_tensor(Tensor(name=out, shape=ta.shape, dtype="int8", scale=0.1, zero_point=0))
            g.add_node(Node(name=f"n{i}", op="add", inputs=[a, b], outputs=[out], attrs={
                "left_shift": 20, "input1_multiplier": m, "input1_shift": s, "input2_multiplier": m,
                "input2_shift": s, "output_multiplier": 2**30, "output_shift": -19, "act_min": -128, "act_max": 127}))
        elif kind == "lut":
            g.add_tensor(Tensor(name=out, shape=ta.shape, dtype="int8", scale=0.1, zero_point=0))
            g.add_node(Node(name=f"n{i}", op="lut", inputs=[a], outputs=[out],
                            attrs={"table": rng.integers(-128, 128, 256).astype(np.int8)}))
        elif kind == "dw" and len(ta.shape) == 4:
            cc = ta.shape[3]
            w = f"w{i}"
            g.add_tensor(Tensor(name=w, shape=(3, 3, cc), dtype="int8", data=rng.integers(-5, 6, (3, 3, cc)).astype(np.int8)))
            g.add_tensor(Tensor(name=f"b{i}", shape=(cc,), dtype="int32", data=np.zeros(cc, np.int32)))
            g.add_tensor(Tensor(name=out, shape=ta.shape, dtype="int8", scale=0.1, zero_point=0))
            g.add_node(Node(name=f"n{i}", op="depthwise_conv2d", inputs=[a, w, f"b{i}"], outputs=[out], attrs={
                "stride": (1, 1), "padding": (1, 1, 1, 1), "dilation": (1, 1),
                "requant_multiplier": np.full(cc, m, np.int32), "requant_shift": np.full(cc, s - 2, np.int32),
                "act_min": -128, "act_max": 127, "sparse_block": 0}))
        elif kind == "concat" and len(ta.shape) == len(g.tensors[b].shape) and ta.shape[:-1] == g.tensors[b].shape[:-1]:
            shp = (*ta.shape[:-1], ta.shape[-1] + g.tensors[b].shape[-1])
            g.add_tensor(Tensor(name=out, shape=shp, dtype="int8", scale=0.1, zero_point=0))
            g.add_node(Node(name=f"n{i}", op="concat", inputs=[a, b], outputs=[out],
                            attrs={"axis": len(shp) - 1, "multipliers": (2**30, 2**30), "shifts": (1, 1)}))
        else:
            g.add_tensor(Tensor(name=out, shape=(1, ta.size), dtype="int8", scale=0.1, zero_point=0))
            g.add_node(Node(name=f"n{i}", op="reshape", inputs=[a], outputs=[out], attrs={"shape": (1, ta.size)}))
        avail.append(out)
    g.outputs = [avail[-1]] + ([avail[len(avail) // 2]] if len(avail) > 3 and avail[len(avail) // 2] != "x" else [])
    g.validate()
    return g


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=random_graphs(), alignment=st.sampled_from([1, 4, 8]), inplace=st.booleans())
def test_planner_never_overlaps_live_tensors(graph, alignment, inplace):
    plan = plan_memory(graph, alignment=alignment, inplace_elementwise=inplace, inplace_depthwise=inplace)
    assert plan.overlapping_live_pairs() == []
    assert all(o % alignment == 0 for o in plan.offsets.values())
    assert all(plan.offsets[t] + plan.sizes[t] <= plan.arena_bytes for t in plan.offsets)
    assert plan.arena_bytes <= plan.naive_bytes + sum(n for _, n in plan.scratch.values()) + alignment * len(plan.offsets)
    assert plan.peak_live_bytes <= plan.arena_bytes
    x = np.random.default_rng(0).integers(-128, 128, graph.tensors["x"].shape).astype(np.int8)
    expected = run_integer(graph, x)
    got = run_in_arena(graph, plan, x)
    for name in graph.outputs:
        assert np.array_equal(got[name], expected[name]), f"output {name} clobbered"


def test_real_models_plan_and_peak_report():
    x = torch.randn(4, 3, 32, 32)
    for factory in (tiny_cnn, tiny_mobilevit):
        graph = quantize_model(factory(), x)
        plan = plan_memory(graph)
        assert plan.overlapping_live_pairs() == []
        assert plan.peak_live and plan.peak_live_bytes <= plan.arena_bytes  # the peak is a lower bound
        assert plan.arena_bytes <= 1.25 * plan.peak_live_bytes  # first fit stays close to it here
        assert plan.arena_bytes < 0.7 * plan.naive_bytes  # reuse actually happens
        assert plan.inplace, "element-wise/depthwise/reshape sharing expected"
        xq = quantize_input(graph, x[:1])
        got = run_in_arena(graph, plan, xq)
        assert np.array_equal(got[graph.outputs[0]], run_integer(graph, xq)[graph.outputs[0]])


def test_peak_names_the_biggest_live_tensors():
    g = Graph(quantized=True)
    for name, shape in (("x", (1, 100)), ("a", (1, 1000)), ("b", (1, 10)), ("c", (1, 10))):
        g.add_tensor(Tensor(name=name, shape=shape, dtype="int8", scale=1.0))
    g.inputs = ["x"]
    table = np.arange(-128, 128).astype(np.int8)
    g.add_node(Node(name="n0", op="reshape", inputs=["x"], outputs=["b"], attrs={"shape": (1, 10)}))
    g.nodes[-1].inputs = ["x"]
    g.tensors["b"].shape = (1, 100)
    g.add_node(Node(name="n1", op="lut", inputs=["b"], outputs=["c"], attrs={"table": table}))
    g.tensors["c"].shape = (1, 100)
    g.outputs = ["c"]
    plan = plan_memory(g, alignment=1)
    assert plan.arena_bytes == 100  # reshape aliases, lut works in place
    assert plan.inplace == {"b": "x", "c": "b"}
