"""Estimated Cortex-M instructions per layer, dense vs block-sparse, to choose a format per layer.

This is an *estimate* (a linear model of loop bodies), not a measurement: the exact counts come from
the emulator (``tuskml.mcu_targets.emulators.run_unicorn``, per generated layer function). The
DSP-path constants are a least-squares fit to those exact counts
(``benchmarks/tinyformer/calibrate_cost_model.py``, results in
``benchmarks/results/tinyformer_cost_model_calibration.{json,md}``): whole-model estimates of
held-out search-space models land within a few percent of the measured count. Another
:class:`CostModel` can be passed to refit.

Dense matrix kernel (``O x K`` weights, ``R`` rows of input):
    ``matrix_call + R * (O * (row_overhead + requant) + K * widen + O * K * mac)``
Block-sparse kernel (BRL, block ``B``, ``nnzb`` stored blocks):
    ``O * sparse_channel + R * (O * sparse_output + nnzb * (block_overhead + B * mac_b))``
where ``mac`` is the per-MAC cost of the dense path and ``mac_b`` the per-MAC cost inside a block
(DSP only when ``B`` is a multiple of 4, as the SMLAD inner loop needs 4-byte groups).
Depthwise conv (4 channels per step, taps clipped to the image once per output pixel):
``C * (taps * dw_tap + kernel_rows * dw_kernel_row + OH*OW * dw_output + H*W * dw_input)``, counting
only the taps and kernel rows that fall inside the image (the kernel skips the others).
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

    DSP-path defaults (``mac_dsp``, ``row_overhead + requant``, ``widen``, ``sparse_output``,
    ``block_overhead*``, ``mac_block``, ``dw_*``, ``conv_gather_tap`` and the per-element ops) are a
    fit to exact emulator counts of the C backend on the Cortex-M7 (gcc -O2, SXTB16/SMLAD path)
    over search-space models of ``tinyformer-hybrid`` (see the module docstring). The portable
    (non-DSP) matrix cost ``mac_portable`` and the pools are hand estimates, not yet calibrated.
    ``conv_gather_tap`` comes from single-channel stems only (the rest of that conv is the matrix cost).
    """

    mac_portable: float = 5.5  # portable dense kernel (older fit on bench_kernels, not recalibrated)
    mac_dsp: float = 1.061  # SXTB16/SMLAD dense kernel, per MAC
    row_overhead: float = 32.28  # per output value: bias, pointers, loop, store
    requant: float = 19.0  # MultiplyByQuantizedMultiplier + zp + clamp (row_overhead + requant = 51.28 fitted)
    widen: float = 5.44  # per input element per row: widening the input to int16 pairs (dense path)
    sparse_output: float = 15.80  # per output value of the BRL kernel (row header, requant)
    block_overhead: float = 2.441  # per stored block and input row (run load, pointer bump, loop)
    block_overhead_paired: float = 2.441  # kept for callers that set it; the fit found no separate term
    mac_block: float = 2.083  # per MAC inside a block whose size is a multiple of 4 (SMLAD loop)
    # one input row (a classifier head, a linear on one token) runs other code paths: two output
    # channels per pass (dense) and the one-row BRL walk; fitted on bench_kernels' linear 256x256
    one_row_output: float = 49.0  # dense, per output value
    one_row_mac: float = 1.81  # dense, per MAC
    one_row_sparse_output: float = 57.0  # BRL, per output value
    one_row_block_overhead: float = 6.0  # BRL, per stored block
    one_row_mac_block: float = 1.72  # BRL, per MAC inside a block (multiple of 4)
    matrix_call: float = 280.3  # per dense matrix-kernel call (setup, scratch pointers)
    sparse_channel: float = 109.1  # per output channel and BRL kernel call (row header, channel-major walk)
    dw_tap: float = 6.19  # depthwise, per in-bounds tap and channel (4 channels per SXTB16/SMLAxy step)
    dw_kernel_row: float = 10.09  # depthwise, per in-bounds kernel row, output pixel and channel
    dw_output: float = 41.62  # depthwise, per output value (tap clipping, requant)
    dw_input: float = 1.05  # depthwise, per input value (the in-place variant's channel copy, averaged)
    conv_gather_tap: float = 90.7  # general (k x k) conv: per output pixel and kernel tap, gathering the patch
    add: float = 110.6  # per element of a quantized add (two input rescales + output requant)
    elementwise: float = 110.6  # per element of mul/requantize (assumed like add; not measured)
    lut: float = 5.53  # per element of a table lookup
    copy: float = 11.36  # per element of a transpose
    concat: float = 37.62  # per element of a concat (per-input requant)
    softmax: float = 35.03  # per element (table lookup, sum, division)
    layer_norm: float = 78.39  # per element (two passes, division, requant)
    mean: float = 50.1  # per input element of a mean over axes
    bmm_mac: float = 3.779  # batch_matmul (activation x activation), per MAC
    bmm_output: float = 75.06  # batch_matmul, per output value


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
    has_zero_blocks: bool = False  # some 1 x block block of the weights is all zero

    @property
    def best(self) -> str:
        """BRL only for layers with pruned (all-zero) blocks and when it is cheaper: an unpruned layer
        gains no flash from BRL (its run lengths cost bytes) and would pull the ~14 KB BRL kernel into
        flash for a few instructions saved (measured: a 1x1 conv with K = 8 runs ~25% faster as BRL)."""
        return "sparse" if self.sparse is not None and self.has_zero_blocks and self.sparse < self.dense else "dense"


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
    if rows == 1 and dsp:
        if nnzb is None:
            return o * model.one_row_output + o * k * model.one_row_mac
        mac_b = model.one_row_mac_block if block % 4 == 0 else model.mac_portable
        return o * model.one_row_sparse_output + nnzb * (model.one_row_block_overhead + block * mac_b)
    if nnzb is None:
        mac = model.mac_dsp if dsp else model.mac_portable
        return model.matrix_call + rows * (o * (model.row_overhead + model.requant) + k * model.widen + o * k * mac)
    mac_b = model.mac_block if (dsp and block % 4 == 0) else model.mac_portable
    overhead = model.block_overhead_paired if rows >= 2 else model.block_overhead
    return o * model.sparse_channel + rows * (o * model.sparse_output + nnzb * (overhead + block * mac_b))


def _in_bounds_taps(size: int, out: int, stride: int, pad: int, k: int, dilation: int) -> int:
    """Over all ``out`` output positions of one axis, the kernel taps that land inside ``[0, size)``."""
    return sum(1 for o in range(out) for t in range(k) if 0 <= o * stride - pad + t * dilation < size)


def depthwise_cost(graph: Graph, node: Node, model: CostModel = DEFAULT_COST_MODEL) -> float:
    """The depthwise kernel skips out-of-image taps, so the cost follows the in-bounds taps, not MACs."""
    n, h, w, _ = graph.tensors[node.inputs[0]].shape
    kh, kw, c = graph.tensors[node.inputs[1]].shape
    _, oh, ow, _ = graph.tensors[node.outputs[0]].shape
    stride = tuple(node.attrs.get("stride", (1, 1)))
    pad = tuple(node.attrs.get("padding", (0, 0, 0, 0)))
    dil = tuple(node.attrs.get("dilation", (1, 1)))
    rows_h = _in_bounds_taps(h, oh, stride[0], pad[0], kh, dil[0])
    cols_w = _in_bounds_taps(w, ow, stride[1], pad[1], kw, dil[1])  # padding is (top, left, bottom, right)
    return n * c * (rows_h * cols_w * model.dw_tap + rows_h * ow * model.dw_kernel_row + oh * ow * model.dw_output
                    + h * w * model.dw_input)


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
            full = -(-k // b) * o
            nnzb = full
            if w.data is not None and w.dtype == "int8":
                nnzb = BlockRunLengthMatrix.encode(weight_matrix(graph, node), b).nnzb
                sparse = matrix_cost(rows, o, k, nnzb=nnzb, block=b, dsp=dsp, model=model)
            elif w.data is not None:  # float graph: count zero blocks of the float weights
                wm = np.asarray(w.data).reshape(o, -1)
                kp = -(-k // b) * b
                padded = np.zeros((o, kp))
                padded[:, :k] = wm
                nnzb = int(np.any(padded.reshape(o, kp // b, b) != 0, axis=2).sum())
                sparse = matrix_cost(rows, o, k, nnzb=nnzb, block=b, dsp=dsp, model=model)
            return LayerCost(node=node.name, op=op, macs=macs, dense=dense, sparse=sparse, block=b,
                             has_zero_blocks=nnzb < full)
        if op == "depthwise_conv2d":
            return LayerCost(node=node.name, op=op, macs=macs, dense=depthwise_cost(graph, node, model), sparse=None)
        if dsp:  # im2col one pixel at a time (a memcpy/memset per tap), then a one-row matrix product
            o, kh, kw = w.shape[0], w.shape[1], w.shape[2]
            pixels = n_out // o
            dense = pixels * (kh * kw * model.conv_gather_tap + matrix_cost(1, o, k, dsp=True, model=model))
            return LayerCost(node=node.name, op=op, macs=macs, dense=dense, sparse=None)
        return LayerCost(node=node.name, op=op, macs=macs, dense=macs * model.mac_portable + n_out * model.requant,
                         sparse=None)
    if op == "batch_matmul":
        k = graph.tensors[node.inputs[0]].shape[-1]
        macs = n_out * k
        mac = model.bmm_mac if dsp else model.mac_portable
        return LayerCost(node=node.name, op=op, macs=macs, dense=macs * mac + n_out * model.bmm_output, sparse=None)
    per_element = {"add": model.add, "mul": model.elementwise, "requantize": model.elementwise,
                   "lut": model.lut, "softmax": model.softmax, "layer_norm": model.layer_norm,
                   "transpose": model.copy, "concat": model.concat, "reshape": 0.0}.get(op)
    if per_element is not None:
        return LayerCost(node=node.name, op=op, macs=0, dense=n_out * per_element, sparse=None)
    if op == "mean":
        return LayerCost(node=node.name, op=op, macs=0, dense=graph.tensors[node.inputs[0]].size * model.mean, sparse=None)
    if op in ("avg_pool2d", "max_pool2d"):
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
