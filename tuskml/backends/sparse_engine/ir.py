"""The SparseEngine graph IR: :class:`Graph` of :class:`Node` over named :class:`Tensor` s.

One IR serves two stages:

* the **float graph** made by :func:`tuskml.backends.sparse_engine.frontend.import_torch`
  (``graph.quantized is False``): float32 constants, no quantisation parameters;
* the **integer graph** made by :func:`tuskml.backends.sparse_engine.quantize.quantize_graph`
  (``graph.quantized is True``): the contract that every backend (reference, tinygrad, C) executes
  bit-exactly. This module's docstrings are that contract.

Layout and types (integer graph)
--------------------------------
* Activations are int8, **NHWC** for 4-D image tensors, per-tensor affine:
  ``real = (q - zero_point) * scale``, ``q`` in [-128, 127].
  Tensors that came from non-image torch values (tokens ``[N, T, C]``, matrices ...) keep the torch
  layout. Graph inputs that feed image ops are NHWC; ``graph.input_permutations[name]`` gives the
  permutation applied to the torch input (``(0, 2, 3, 1)`` for NCHW -> NHWC). Graph outputs are in
  torch layout (the frontend inserts the transposes).
* Weights are int8, **per-output-channel symmetric** (zero point 0, values in [-127, 127]),
  ``Tensor.scale`` is then a float64 array ``[O]``. Bias is int32 ``[O]`` with
  ``scale = input_scale * weight_scale[o]`` and zero point 0.
* Requantisation is a per-channel pair (``requant_multiplier`` int32 ``[O]``,
  ``requant_shift`` int32 ``[O]``) applied with
  :func:`tuskml.backends.sparse_engine.fixedpoint.multiply_by_quantized_multiplier` (TFLite double
  rounding). ``shift > 0`` is a left shift, ``shift <= 0`` a rounding right shift by ``-shift``.
  Per-tensor ops carry one pair (``multiplier``, ``shift``) as plain ints.
* ``act_min`` / ``act_max`` (ints in [-128, 127]) are the fused activation clamp (ReLU/ReLU6 fused
  into the producing op, or the full int8 range).

Every integer op ends with ``clamp(v, act_min, act_max)`` or ``clamp(v, -128, 127)`` and writes
int8. All intermediate arithmetic is in int32 unless stated otherwise; the quantiser guarantees no
int32 overflow for the shapes it accepts (it raises otherwise). ``MBQM(acc, m, s)`` below is
``multiply_by_quantized_multiplier``; ``div_round`` and ``isqrt`` are defined in ``fixedpoint.py``.

Ops (attributes and integer semantics)
--------------------------------------
``conv2d``  inputs ``[x, weight, bias]`` -> ``[y]``
    x ``[N,H,W,C]``, weight ``[O,KH,KW,C]`` (OHWI), bias int32 ``[O]``, y ``[N,OH,OW,O]``.
    Attributes: ``stride=(sh, sw)``, ``padding=(top, left, bottom, right)``,
    ``dilation=(dh, dw)``, ``requant_multiplier``/``requant_shift`` (int32 ``[O]``), ``act_min``,
    ``act_max``, ``sparse_block`` (int, see *sparse* below), float-graph only: ``activation``.
    ``OH = (H + top + bottom - dh*(KH-1) - 1) // sh + 1`` (same for W).
    ``acc[n,oh,ow,o] = bias[o] + sum_{kh,kw,c} (x[n, oh*sh - top + kh*dh, ow*sw - left + kw*dw, c]
    - x_zp) * w[o,kh,kw,c]`` where out-of-image positions contribute 0 (padding by ``x_zp``).
    ``y = clamp(MBQM(acc, mult[o], shift[o]) + y_zp, act_min, act_max)``.
    A 1x1 conv with stride 1, no padding is computed exactly like ``fully_connected`` over
    ``N*H*W`` rows (weight reshaped to ``[O, C]``) and may be block-sparse.
``depthwise_conv2d`` inputs ``[x, weight, bias]`` -> ``[y]``
    x ``[N,H,W,C]``, weight ``[KH,KW,C]``, bias ``[C]``, y ``[N,OH,OW,C]`` (depth multiplier 1).
    Same attributes and formula as ``conv2d`` except the sum is over ``kh, kw`` only and uses input
    channel ``c == o``.
``fully_connected`` inputs ``[x, weight, bias]`` -> ``[y]``
    x ``[..., K]``, weight ``[O, K]``, bias ``[O]``, y ``[..., O]`` (leading dims flattened into
    rows). ``acc[r,o] = bias[o] + sum_k (x[r,k] - x_zp) * w[o,k]``;
    ``y = clamp(MBQM(acc, mult[o], shift[o]) + y_zp, act_min, act_max)``.
    Attributes: ``requant_multiplier``, ``requant_shift``, ``act_min``, ``act_max``,
    ``sparse_block``.
*sparse* (``conv2d`` 1x1 and ``fully_connected``)
    ``sparse_block == 0``: dense weights. ``sparse_block == B > 0``: the backend should use the
    block run-length encoding ``BlockRunLengthMatrix.encode(weight as [O, K], B)``
    (``sparse_format.py``); the integer result is identical to the dense formula (padded weight
    columns are zero; a kernel must not read ``x`` beyond column ``K-1``).
``add`` inputs ``[a, b]`` -> ``[y]`` (TFLite int8 add)
    Same rank; each dim equal or 1 (numpy broadcasting). Attributes: ``left_shift`` (20),
    ``input1_multiplier``, ``input1_shift``, ``input2_multiplier``, ``input2_shift``,
    ``output_multiplier``, ``output_shift``, ``act_min``, ``act_max``.
    ``sa = MBQM((a - a_zp) << left_shift, m1, s1)``; ``sb = MBQM((b - b_zp) << left_shift, m2, s2)``;
    ``y = clamp(MBQM(sa + sb, mo, so) + y_zp, act_min, act_max)``.
``mul`` inputs ``[a, b]`` -> ``[y]``
    Broadcasting as ``add``. Attributes: ``multiplier``, ``shift``, ``act_min``, ``act_max``.
    ``y = clamp(MBQM((a - a_zp) * (b - b_zp), multiplier, shift) + y_zp, act_min, act_max)``.
``requantize`` inputs ``[x]`` -> ``[y]`` (multiplication by a float constant, change of scale)
    Attributes: ``multiplier``, ``shift``. ``y = clamp(MBQM(x - x_zp, multiplier, shift) + y_zp)``.
``lut`` inputs ``[x]`` -> ``[y]`` (GELU, SiLU, sigmoid, tanh, hardswish, unfused ReLU/ReLU6)
    Attributes: ``table`` int8 ``[256]``, ``function`` (str, informative).
    ``y = table[x + 128]``.
``avg_pool2d`` inputs ``[x]`` -> ``[y]`` (no padding, floor mode)
    Attributes: ``kernel=(kh, kw)``, ``stride=(sh, sw)``, ``multiplier``, ``shift``.
    ``acc = sum over the kh*kw window of (x - x_zp)``;
    ``y = clamp(MBQM(acc, multiplier, shift) + y_zp)`` (the multiplier includes ``1/(kh*kw)``).
``max_pool2d`` inputs ``[x]`` -> ``[y]``
    Attributes: ``kernel``, ``stride``, ``padding=(top, left, bottom, right)``, ``dilation``.
    ``y = max over in-image window positions of x``; y has the same scale and zero point as x.
``mean`` inputs ``[x]`` -> ``[y]`` (global average pool is ``mean`` over axes (1, 2) of NHWC)
    Attributes: ``axes`` (tuple of ints, non-negative), ``keepdims`` (bool), ``multiplier``,
    ``shift``. ``acc = sum over the reduced axes of (x - x_zp)``;
    ``y = clamp(MBQM(acc, multiplier, shift) + y_zp)`` (multiplier includes ``1/count``).
``layer_norm`` inputs ``[x]`` -> ``[y]`` over the last axis of length ``C`` (integer-only)
    Attributes: ``eps_q`` (int in [0, 131071], epsilon in units of ``x_scale**2``), ``requant_multiplier``,
    ``requant_shift`` (int32 ``[C]``, real value ``gamma[c] / (y_scale * 2**11)``), ``beta_q``
    (int32 ``[C]``, ``round(beta[c] / y_scale)`` clipped to +-2**20). For each row::

        d[i]  = x[i] - x_zp
        mean  = div_round(sum_i d[i], C)
        dev[i]= d[i] - mean
        var   = div_round(sum_i dev[i]*dev[i], C)
        sd    = isqrt(min(var + eps_q, 131071) << 14)        # = sqrt(var) * 2**7
        z[i]  = div_round(dev[i] << 18, max(sd, 1))            # = dev/sqrt(var) * 2**11
        y[i]  = clamp(MBQM(z[i], mult[i], shift[i]) + beta_q[i] + y_zp)

    This is :func:`fixedpoint.layer_norm_int` line by line.
``softmax`` inputs ``[x]`` -> ``[y]`` over the last axis (integer-only)
    Attributes: ``exp_table`` int32 ``[256]`` with ``exp_table[j] = round(exp(-j * x_scale) * 2**16)``.
    Output scale is always ``1/256`` and zero point ``-128``. For each row::

        m    = max_i x[i]
        e[i] = exp_table[m - x[i]]
        s    = sum_i e[i]
        y[i] = clamp(div_round(e[i] << 8, s) - 128)

    This is :func:`fixedpoint.softmax_int`. Rows are at most 16384 long.
``batch_matmul`` inputs ``[a, b]`` -> ``[y]`` (attention ``q @ k^T`` and ``attn @ v``)
    a ``[..., M, K]``, b ``[..., K, N]``, equal leading dims, y ``[..., M, N]``.
    Attributes: ``multiplier``, ``shift``, float-graph only: ``alpha`` (constant scale folded in).
    ``acc = sum_k (a[..,m,k] - a_zp) * (b[..,k,n] - b_zp)``; ``y = clamp(MBQM(acc, mult, shift) + y_zp)``.
``concat`` inputs ``[x0, x1, ...]`` -> ``[y]``
    Attributes: ``axis`` (non-negative), ``multipliers``/``shifts`` (tuple of ints, one per input).
    Each input slice is ``clamp(MBQM(x_i - zp_i, multipliers[i], shifts[i]) + y_zp)``
    (``(2**30, 1)`` is the exact identity).
``transpose`` inputs ``[x]`` -> ``[y]``: attribute ``perm`` (tuple); ``y = x.transpose(perm)``,
    same quantisation parameters. Rank up to 6 (patch unfold/fold of MobileViT blocks uses 6-D).
``reshape`` inputs ``[x]`` -> ``[y]``: attribute ``shape`` (tuple, no -1); a row-major reinterpretation
    (no data change), same quantisation parameters.

Float graph only: ``conv2d``/``fully_connected``/``add`` carry ``activation`` in
``{"none", "relu", "relu6"}``; ``activation`` nodes (attribute ``function``) become ``lut``;
``mul`` may have a float ``scalar`` attribute and a single input (becomes ``requantize``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import numpy as np

from tuskml.core.errors import TuskmlError


class GraphError(TuskmlError):
    """A malformed graph: a missing tensor, a cycle, a shape that does not fit an op."""


#: Op names of the integer graph, as documented in the module docstring.
INTEGER_OPS = frozenset({
    "conv2d", "depthwise_conv2d", "fully_connected", "add", "mul", "requantize", "lut",
    "avg_pool2d", "max_pool2d", "mean", "layer_norm", "softmax", "batch_matmul", "concat",
    "transpose", "reshape",
})
#: Op names that appear only in the float graph (they are lowered by the quantiser).
FLOAT_ONLY_OPS = frozenset({"activation"})
#: Ops whose weights may be stored block-sparse (``sparse_block > 0``).
SPARSE_CAPABLE_OPS = frozenset({"conv2d", "fully_connected"})


@attrs.define(kw_only=True, eq=False)
class Tensor:
    """A named value: an activation (``data is None``) or a constant (weights, bias).

    ``shape`` is the full shape including the batch dimension for activations (the batch size of
    the graph is ``graph.batch``; backends may run any batch N by replacing dim 0).
    ``dtype`` is ``"float32"``, ``"int8"`` or ``"int32"``. ``scale`` is ``None`` (float tensor),
    a float (per-tensor) or a float64 array (per output channel, axis 0 for weights).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    scale: float | np.ndarray | None = None
    zero_point: int = 0
    data: np.ndarray | None = None

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    @property
    def itemsize(self) -> int:
        return {"float32": 4, "int8": 1, "int32": 4}[self.dtype]

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    def __repr__(self) -> str:
        kind = "const" if self.is_constant else "act"
        q = f", scale={self.scale if not isinstance(self.scale, np.ndarray) else 'per-channel'}, zp={self.zero_point}" if self.scale is not None else ""
        return f"Tensor({self.name!r}, {kind}, {self.dtype}{list(self.shape)}{q})"


@attrs.define(kw_only=True, eq=False)
class Node:
    """One op: ``outputs = op(inputs, **attrs)``.

    ``module_path`` is the dotted path of the torch module the node came from (``"stages.1.conv"``,
    or the fx node name for functional calls), so errors, per-layer tables and C function comments
    can name the layer.
    """

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = attrs.field(factory=dict)
    module_path: str = ""

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.op}, {self.inputs} -> {self.outputs}, module={self.module_path!r})"


@attrs.define(kw_only=True, eq=False)
class Graph:
    """Nodes in topological order over a table of tensors.

    ``inputs``/``outputs`` are tensor names. ``input_permutations`` maps an input name to the
    permutation applied to the torch-layout input to get the graph layout (identity if absent).
    """

    tensors: dict[str, Tensor] = attrs.field(factory=dict)
    nodes: list[Node] = attrs.field(factory=list)
    inputs: list[str] = attrs.field(factory=list)
    outputs: list[str] = attrs.field(factory=list)
    quantized: bool = False
    input_permutations: dict[str, tuple[int, ...]] = attrs.field(factory=dict)
    name: str = "model"

    # --- construction -------------------------------------------------------------------------

    def add_tensor(self, tensor: Tensor) -> Tensor:
        if tensor.name in self.tensors:
            raise GraphError(f"tensor {tensor.name!r} is defined twice")
        self.tensors[tensor.name] = tensor
        return tensor

    def add_node(self, node: Node) -> Node:
        for name in [*node.inputs, *node.outputs]:
            if name not in self.tensors:
                raise GraphError(f"node {node.name!r} ({node.op}) refers to unknown tensor {name!r}")
        self.nodes.append(node)
        return node

    def unique_name(self, base: str) -> str:
        """``base`` if free, else ``base_1``, ``base_2`` ... (tensor and node names share a space)."""
        taken = set(self.tensors) | {n.name for n in self.nodes}
        if base not in taken:
            return base
        i = 1
        while f"{base}_{i}" in taken:
            i += 1
        return f"{base}_{i}"

    # --- queries ------------------------------------------------------------------------------

    def tensor(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise GraphError(f"graph {self.name!r} has no tensor {name!r}") from None

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise GraphError(f"graph {self.name!r} has no node {name!r}")

    def producer(self, tensor_name: str) -> Node | None:
        """The node writing ``tensor_name``; None for graph inputs and constants."""
        for node in self.nodes:
            if tensor_name in node.outputs:
                return node
        return None

    def consumers(self, tensor_name: str) -> list[Node]:
        return [node for node in self.nodes if tensor_name in node.inputs]

    def activations(self) -> list[Tensor]:
        """Every non-constant tensor (graph inputs, intermediates, outputs)."""
        return [t for t in self.tensors.values() if not t.is_constant]

    def constants(self) -> list[Tensor]:
        return [t for t in self.tensors.values() if t.is_constant]

    def weight_of(self, node: Node) -> Tensor | None:
        """The weight tensor of a conv / depthwise / fully-connected node, else None."""
        if node.op in ("conv2d", "depthwise_conv2d", "fully_connected") and len(node.inputs) >= 2:
            return self.tensors[node.inputs[1]]
        return None

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def validate(self) -> None:
        """Every tensor is produced before it is read, once; ops are known. Raises GraphError."""
        known = INTEGER_OPS if self.quantized else INTEGER_OPS | FLOAT_ONLY_OPS
        ready = set(self.inputs) | {t.name for t in self.constants()}
        for name in self.inputs:
            if name not in self.tensors:
                raise GraphError(f"graph input {name!r} is not a tensor of the graph")
        for node in self.nodes:
            if node.op not in known:
                raise GraphError(f"node {node.name!r} (module {node.module_path!r}) has unknown op {node.op!r}")
            for name in node.inputs:
                if name not in ready:
                    raise GraphError(f"node {node.name!r} reads {name!r} before it is written")
            for name in node.outputs:
                if name in ready:
                    raise GraphError(f"tensor {name!r} is written twice (second time by {node.name!r})")
                ready.add(name)
        for name in self.outputs:
            if name not in ready:
                raise GraphError(f"graph output {name!r} is never written")

    def summary(self) -> str:
        lines = [f"Graph {self.name!r} ({'int8' if self.quantized else 'float'}), inputs {self.inputs}, outputs {self.outputs}"]
        for node in self.nodes:
            shapes = [list(self.tensors[o].shape) for o in node.outputs]
            lines.append(f"  {node.name:<28} {node.op:<17} {shapes} <- {node.module_path}")
        return "\n".join(lines)


def topological_order(nodes: Iterable[Node], available: Iterable[str]) -> list[Node]:
    """Order ``nodes`` so each runs after the producers of its inputs (stable otherwise)."""
    pending = list(nodes)
    ready = set(available)
    ordered: list[Node] = []
    while pending:
        for i, node in enumerate(pending):
            if all(name in ready for name in node.inputs):
                ordered.append(node)
                ready.update(node.outputs)
                del pending[i]
                break
        else:
            names = ", ".join(n.name for n in pending[:5])
            raise GraphError(f"graph has a cycle or a missing input around nodes {names}")
    return ordered
