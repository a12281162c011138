"""Shared helpers of the SparseEngine (E1) tests: quantise a torch module and compare with float."""

from __future__ import annotations

import numpy as np
import torch

from tuskml.backends.sparse_engine import reference
from tuskml.backends.sparse_engine.frontend import import_torch
from tuskml.backends.sparse_engine.quantize import quantize_graph


def quantize_and_compare(module: torch.nn.Module, x: torch.Tensor):
    """Quantise ``module`` calibrated on ``x``; return (graph, float output, dequantised int output, out scale)."""
    module = module.eval()
    graph = import_torch(module, x[:1])
    qgraph = quantize_graph(graph, x)
    with torch.no_grad():
        ref = module(x).numpy().astype(np.float64)
    result = reference.run(qgraph, reference.quantize_input(qgraph, x))
    out_scale = qgraph.tensors[qgraph.outputs[0]].scale
    return qgraph, ref, result.float_outputs[0], out_scale


def float_graph_matches_torch(module: torch.nn.Module, x: torch.Tensor, atol: float = 1e-4) -> float:
    """Max abs difference of the float IR graph vs torch (asserted below ``atol``)."""
    module = module.eval()
    graph = import_torch(module, x[:1])
    out = reference.run_float(graph, reference.to_graph_layout(graph, x))[graph.outputs[0]]
    with torch.no_grad():
        ref = module(x).numpy()
    err = float(np.abs(out - ref).max())
    assert err < atol, f"float graph differs from torch by {err}"
    return err
