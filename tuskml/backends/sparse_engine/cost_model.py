"""Estimated Cortex-M instructions per layer, dense vs block-sparse, to choose a format per layer.

This is an *estimate* (a linear model of loop bodies), not a measurement: the exact counts come from
the emulator (E3's ``run_unicorn``) and ``benchmarks/sparseengine/bench_kernels.py``. The constants
are instructions per unit of work for the kernels described in ``backends/c`` (portable C and the
SXTB16/SMLAD DSP path) and can be refitted from those benchmarks by passing another
:class:`CostModel`.

Dense matrix kernel (``O x K`` weights, ``R`` rows of input):
    ``R * (O * (row_overhead + requant) + O * K * mac)``
Block-sparse kernel (BRL, block ``B``, ``nnzb`` stored blocks):
    ``R * (O * (row_overhead + requant + sparse_row_overhead) + nnzb * (block_overhead + B * mac_b))``
where ``mac`` is the per-MAC cost of the dense path and ``mac_b`` the per-MAC cost inside a block
(DSP only when ``B`` is a multiple of 4, as the SMLAD inner loop needs 4-byte groups); with two or
more rows the C kernel walks the BRL stream once per pair of rows (``block_overhead_paired``).
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from tuskml.backends.sparse_engine.ir import Graph, Node
from tuskml.backends.sparse_engine.sparse_format import BlockRunLengthMatrix


@attrs.frozen(kw_only=True)
class CostModel:
    """Instructions per unit of work.

    Matrix-kernel defaults are a least-squares fit to the exact counts of the C kernels on the
    emulated Cortex-M7 in ``benchmarks/results/bench_kernels.md`` (linear 256x256 and conv 1x1
    16x16x64->64, block sizes 4/8/16, sparsity 0-90%); they reproduce those counts within ~10%.
    The other per-element constants are hand estimates.
    """

    mac_portable: float = 5.5  # fitted: portable dense kernel
    mac_dsp: float = 1.81  # fitted: SXTB16/SMLAD dense kernel
    row_overhead: float = 30.0  # per output value: bias, pointers, loop, store (fitted with requant)
    requant: float = 19.0  # MultiplyByQuantizedMultiplier + zp + clamp
    sparse_row_overhead: float = 8.0  # per output value, extra walking the BRL row header
    block_overhead: float = 6.0  # per stored block, one input row (run load, pointer bump, loop)
    block_overhead_paired: float = 2.5  # per stored block and row when two rows share the walk
    mac_block: float = 1.72  # per MAC inside a block whose size is a multiple of 4 (SMLAD loop)
    elementwise: float = 12.0  # per element of add/mul/requantize (two requants amortised)
    lut: float = 4.0  # per element of a table lookup
    copy: float = 1.0  # per byte of transpose/reshape/concat data movement
    softmax: float = 30.0  # per element (table lookup, sum, division)
    layer_norm: float = 40.0  # per element (two passes, division, requant)


DEFAULT_COST_MODEL = CostModel()


@attrs.frozen(kw_only=True)
class LayerCost:
    """Estimated instructions of one node; ``sparse`` is None when the op has no sparse kernel."""

    node: str
    op: str
    macs: int
    dense: float
    sparse: float | None
    block: int = 0

    @property
    def best(self) -> str:
        return "sparse" if self.sparse is not None and self.sparse < self.dense else "dense"


def is_sparse_capable(graph: Graph, node: Node) -> bool:
    """``fully_connected``, or ``conv2d`` 1x1 with stride 1 and no padding (a matrix product)."""
    if node.op == "fully_connected":
        return True
    if node.op != "conv2d":
        return False
    w = graph.tensors[node.inputs[1]]
    return (w.shape[1:3] == (1, 1) and tuple(node.attrs.get("stride", (1, 1))) == (1, 1)
            and not any(node.attrs.get("padding", (0, 0, 0, 0))))


def weight_matrix(graph: Graph, node: Node) -> np.ndarray:
    """The ``[O, K]`` view of a sparse-capable node's weights."""
    w = graph.tensors[node.inputs[1]].data
    return w.reshape(w.shape[0], -1)


def _rows(graph: Graph, node: Node) -> int:
    out = graph.tensors[node.outputs[0]].shape
    return int(math.prod(out[:-1]))


def matrix_cost(rows: int, o: int, k: int, *, nnzb: int | None = None, block: int = 0, dsp: bool = True,
                model: CostModel = DEFAULT_COST_MODEL) -> float:
    """Dense cost (``nnzb is None``) or block-sparse cost of ``rows`` products with an ``[o, k]`` matrix."""
    per_row = o * (model.row_overhead + model.requant)
    if nnzb is None:
        mac = model.mac_dsp if dsp else model.mac_portable
        return rows * (per_row + o * k * mac)
    mac_b = model.mac_block if (dsp and block % 4 == 0) else model.mac_portable
    overhead = model.block_overhead_paired if rows >= 2 else model.block_overhead
    return rows * (per_row + o * model.sparse_row_overhead + nnzb * (overhead + block * mac_b))


def layer_cost(graph: Graph, node: Node, *, block: int | None = None, dsp: bool = True,
               model: CostModel = DEFAULT_COST_MODEL) -> LayerCost:
    """Estimated instructions of ``node`` dense and, for sparse-capable nodes, BRL with ``block``
    (default: the node's ``sparse_block`` attribute, or 4)."""
    out = graph.tensors[node.outputs[0]]
    n_out = out.size
    op = node.op
    if op in ("conv2d", "depthwise_conv2d", "fully_connected"):
        w = graph.tensors[node.inputs[1]]
        k = w.size // (w.shape[0] if op != "depthwise_conv2d" else w.shape[-1])
        macs = n_out * k
        if is_sparse_capable(graph, node):
            o = w.shape[0]
            rows = _rows(graph, node)
            dense = matrix_cost(rows, o, k, dsp=dsp, model=model)
            b = block or node.attrs.get("sparse_block") or 4
            sparse = None
            if w.data is not None and w.dtype == "int8":
                brl = BlockRunLengthMatrix.encode(weight_matrix(graph, node), b)
                sparse = matrix_cost(rows, o, k, nnzb=brl.nnzb, block=b, dsp=dsp, model=model)
            elif w.data is not None:  # float graph: count zero blocks of the float weights
                wm = np.asarray(w.data).reshape(o, -1)
                kp = -(-k // b) * b
                padded = np.zeros((o, kp))
                padded[:, :k] = wm
                nnzb = int(np.any(padded.reshape(o, kp // b, b) != 0, axis=2).sum())
                sparse = matrix_cost(rows, o, k, nnzb=nnzb, block=b, dsp=dsp, model=model)
            return LayerCost(node=node.name, op=op, macs=macs, dense=dense, sparse=sparse, block=b)
        mac = model.mac_dsp if (dsp and op == "conv2d") else model.mac_portable
        dense = macs * mac + n_out * model.requant
        return LayerCost(node=node.name, op=op, macs=macs, dense=dense, sparse=None)
    if op == "batch_matmul":
        k = graph.tensors[node.inputs[0]].shape[-1]
        macs = n_out * k
        return LayerCost(node=node.name, op=op, macs=macs,
                         dense=macs * (model.mac_dsp if dsp else model.mac_portable) + n_out * model.requant, sparse=None)
    per_element = {"add": model.elementwise, "mul": model.elementwise, "requantize": model.elementwise,
                   "lut": model.lut, "softmax": model.softmax, "layer_norm": model.layer_norm,
                   "transpose": model.copy, "concat": model.copy, "reshape": 0.0}.get(op)
    if per_element is not None:
        return LayerCost(node=node.name, op=op, macs=0, dense=n_out * per_element, sparse=None)
    if op in ("avg_pool2d", "max_pool2d", "mean"):
        x = graph.tensors[node.inputs[0]]
        return LayerCost(node=node.name, op=op, macs=0, dense=x.size * 3.0 + n_out * model.requant, sparse=None)
    return LayerCost(node=node.name, op=op, macs=0, dense=float(n_out), sparse=None)


def graph_cost(graph: Graph, *, dsp: bool = True, model: CostModel = DEFAULT_COST_MODEL) -> dict[str, float]:
    """Estimated instructions per node with each node's chosen format (``sparse_block``)."""
    costs = {}
    for node in graph.nodes:
        c = layer_cost(graph, node, dsp=dsp, model=model)
        use_sparse = node.attrs.get("sparse_block", 0) and c.sparse is not None
        costs[node.name] = c.sparse if use_sparse else c.dense
    return costs


def choose_formats(graph: Graph, *, blocks: dict[str, int] | None = None, default_block: int = 4, dsp: bool = True,
                   model: CostModel = DEFAULT_COST_MODEL) -> dict[str, LayerCost]:
    """Set ``sparse_block`` on every sparse-capable node of the integer ``graph`` to the cheaper format.

    ``blocks`` maps node name -> block size to try (else ``default_block``). Returns the costs.
    """
    chosen = {}
    for node in graph.nodes:
        if not is_sparse_capable(graph, node):
            continue
        b = (blocks or {}).get(node.name, default_block)
        c = layer_cost(graph, node, block=b, dsp=dsp, model=model)
        node.attrs["sparse_block"] = b if c.best == "sparse" else 0
        chosen[node.name] = c
    return chosen
