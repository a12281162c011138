"""Bad input to the C backend gets a TuskmlError naming what is wrong."""

from __future__ import annotations

import numpy as np
import pytest
from test_ops_graph import build_all_ops_graph

import tuskml
from tuskml.backends.c.codegen import CodegenError, generate_c_project
from tuskml.backends.c.host import CRunError
from tuskml.backends.sparse_engine.ir import Graph, Node, Tensor
from tuskml.backends.sparse_engine.memory_plan import plan_memory
from tuskml.core.errors import TuskmlError


def _lut_graph() -> Graph:
    g = Graph(quantized=True, name="lut")
    g.add_tensor(Tensor(name="x", shape=(1, 8), dtype="int8", scale=0.1, zero_point=0))
    g.add_tensor(Tensor(name="y", shape=(1, 8), dtype="int8", scale=0.1, zero_point=0))
    g.add_node(Node(name="act", op="lut", inputs=["x"], outputs=["y"], attrs={"table": np.arange(-128, 128)},
                    module_path="m.act"))
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def test_float_graph_is_rejected(tmp_path):
    g = _lut_graph()
    g.quantized = False
    with pytest.raises(CodegenError, match="float graph"):
        generate_c_project(g, None, tmp_path, use_dsp=False)


def test_overlapping_plan_is_rejected(tmp_path):
    graph, _ = build_all_ops_graph(3)
    plan = plan_memory(graph)
    conv = next(n for n in graph.nodes if n.op == "conv2d")
    offsets = dict(plan.offsets)
    offsets[conv.outputs[0]] = offsets[conv.inputs[0]]  # a conv cannot write over its own input
    bad = type("Plan", (), {"offsets": offsets, "arena_bytes": plan.arena_bytes, "scratch": {}})()
    with pytest.raises(CodegenError, match=conv.name):
        generate_c_project(graph, bad, tmp_path, use_dsp=True)


def test_plan_missing_a_tensor(tmp_path):
    bad = type("Plan", (), {"offsets": {"x": 0}, "arena_bytes": 64, "scratch": {}})()
    with pytest.raises(CodegenError, match="'y'"):
        generate_c_project(_lut_graph(), bad, tmp_path, use_dsp=False)


def test_bad_lut_table_and_test_data(tmp_path):
    g = _lut_graph()
    with pytest.raises(CodegenError, match="test_inputs"):
        generate_c_project(g, None, tmp_path, use_dsp=False, test_inputs=np.zeros(5, np.int8))
    with pytest.raises(CodegenError, match="expected_outputs"):
        generate_c_project(g, None, tmp_path, use_dsp=False, test_inputs=np.zeros(8, np.int8),
                           expected_outputs=np.zeros(3, np.int8))
    g.nodes[0].attrs["table"] = np.zeros(10, np.int64)
    with pytest.raises(CodegenError, match="256"):
        generate_c_project(g, None, tmp_path, use_dsp=False)


def test_backend_rejects_wrong_inputs():
    backend = tuskml.create("engine_backend", "c")
    g = _lut_graph()
    with pytest.raises(CRunError, match="int8"):
        backend.run(g, np.zeros((1, 8), np.float32))
    with pytest.raises(CRunError, match=r"\[k\*1, 8\]"):
        backend.run(g, np.zeros((1, 9), np.int8))
    with pytest.raises(TuskmlError, match="unknown keyword"):
        backend.run(g, np.zeros((1, 8), np.int8), target="x")
    np.testing.assert_array_equal(backend.run(g, np.arange(-4, 4, dtype=np.int8)[None]).outputs,
                                  np.arange(-4, 4, dtype=np.int8)[None])
