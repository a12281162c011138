"""``prepare``: torch model -> deployable integer graph with its memory plan and footprint.

prune (optional, on a copy) -> import (torch.fx) -> quantize (calibrated PTQ) -> choose sparse or
dense per layer (cost model) -> plan memory -> footprint. Deploy (E3) then generates C from
``Deployable.graph`` + ``Deployable.plan`` and compares against the reference backend.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from tuskml.backends.sparse_engine.cost_model import (
    DEFAULT_COST_MODEL,
    CostModel,
    LayerCost,
    choose_formats,
    graph_cost,
)
from tuskml.backends.sparse_engine.footprint import Footprint, compute_footprint
from tuskml.backends.sparse_engine.frontend import import_torch
from tuskml.backends.sparse_engine.ir import Graph
from tuskml.backends.sparse_engine.memory_plan import MemoryPlan, plan_memory
from tuskml.backends.sparse_engine.pruning import LayerPruning, block_prune
from tuskml.backends.sparse_engine.quantize import quantize_graph
from tuskml.backends.sparse_engine.reference import AccuracyReport, accuracy_report
from tuskml.core.errors import TuskmlError


class PrepareError(TuskmlError):
    """Bad arguments to :func:`prepare`."""


@attrs.frozen(kw_only=True)
class Deployable:
    """Everything a code generator needs, plus what a report shows."""

    graph: Graph  # integer graph, sparse_block chosen per layer
    plan: MemoryPlan
    footprint: Footprint
    float_graph: Graph
    model: nn.Module  # the (pruned copy of the) torch model the graph came from
    pruning: dict[str, LayerPruning]
    costs: dict[str, LayerCost]  # sparse-capable layers: dense vs sparse estimate
    estimated_instructions: dict[str, float]  # every node, chosen format
    accuracy: AccuracyReport | None

    def layer_table(self) -> list[dict[str, Any]]:
        """One row per node: name, op, module, format, block, weight bytes, output/arena bytes, est. instructions."""
        rows = []
        for node, lf in zip(self.graph.nodes, self.footprint.layers):
            rows.append({
                "node": node.name, "op": node.op, "module_path": node.module_path,
                "format": "sparse" if lf.sparse else "dense", "block": lf.block,
                "weight_bytes": lf.weight_bytes, "dense_weight_bytes": lf.dense_weight_bytes,
                "flash_bytes": lf.flash_bytes, "output_bytes": lf.output_bytes,
                "arena_offset": self.plan.offsets.get(node.outputs[0]),
                "estimated_instructions": int(self.estimated_instructions[node.name]),
            })
        return rows


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except Exception as exc:
            raise PrepareError(f"{what} must be a tensor/array [N, ...], got {type(x).__name__}") from exc
    if t.ndim == 0 or t.shape[0] == 0:
        raise PrepareError(f"{what} must be a non-empty batch [N, ...], got shape {list(t.shape)}")
    return t.float()


def prepare(model: nn.Module, calibration_inputs: Any, *, sparsity: float | dict[str, float] | None = None,
            block: int | dict[str, int] = 4, dsp: bool = True, alignment: int = 8,
            test_inputs: Any = None, cost_model: CostModel = DEFAULT_COST_MODEL,
            force_format: str | None = None) -> Deployable:
    """Prune (if ``sparsity``), import, quantize, choose formats, plan memory, compute the footprint.

    ``calibration_inputs``: float samples in torch layout ``[N, C, H, W]``. ``sparsity``/``block``:
    one value for all prunable layers or per module path (see :func:`pruning.block_prune`); the
    caller's model is never modified (a copy is pruned). ``test_inputs``: if given, the accuracy of
    the integer graph vs the float model is measured on them. ``force_format``: ``"dense"`` or
    ``"sparse"`` overrides the cost model (for benchmarks).
    """
    if not isinstance(model, nn.Module):
        raise PrepareError(f"prepare needs a torch.nn.Module, got {type(model).__name__}")
    if force_format not in (None, "dense", "sparse"):
        raise PrepareError(f"force_format must be None, 'dense' or 'sparse', got {force_format!r}")
    calib = _as_tensor(calibration_inputs, "calibration_inputs")
    model = copy.deepcopy(model).eval()
    pruning: dict[str, LayerPruning] = {}
    if sparsity is not None:
        pruning = block_prune(model, sparsity, block)
    float_graph = import_torch(model, calib[:1])
    graph = quantize_graph(float_graph, calib)

    default_block = block if isinstance(block, int) else 4
    blocks = {}
    for node in graph.nodes:
        path = node.module_path.split("+")[0]
        if path in pruning:
            blocks[node.name] = pruning[path].block
    costs = choose_formats(graph, blocks=blocks, default_block=default_block, dsp=dsp, model=cost_model)
    if force_format is not None:
        for name, c in costs.items():
            graph.node(name).attrs["sparse_block"] = c.block if force_format == "sparse" else 0
    plan = plan_memory(graph, alignment=alignment)
    footprint = compute_footprint(graph, plan)
    accuracy = None
    if test_inputs is not None:
        accuracy = accuracy_report(model, graph, _as_tensor(test_inputs, "test_inputs"))
    return Deployable(graph=graph, plan=plan, footprint=footprint, float_graph=float_graph, model=model,
                      pruning=pruning, costs=costs, estimated_instructions=graph_cost(graph, dsp=dsp, model=cost_model),
                      accuracy=accuracy)
