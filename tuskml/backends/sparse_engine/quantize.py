"""Post-training int8 quantisation (TFLite spec), calibrated on sample data: float Graph -> integer Graph.

* Activations: asymmetric per tensor, range = [min(0, observed min), max(0, observed max)] over the
  calibration data, ``scale = range / 255``, zero point so that 0.0 is exactly representable.
  ``max_pool2d``/``transpose``/``reshape`` outputs share their input's parameters (pure data
  movement); softmax outputs are fixed at scale 1/256, zero point -128 (as in TFLite).
* Weights: symmetric per output channel, int8 in [-127, 127]; bias int32 at ``s_x * s_w[o]``.
* Every op's real-valued rescale factor is turned into an int32 (multiplier, shift) pair by
  :func:`fixedpoint.quantize_multiplier`; the float-free integer semantics are in ``ir.py``.
* GELU/SiLU/sigmoid/... become 256-entry lookup tables; LayerNorm and softmax get the integer
  parameters of ``fixedpoint.layer_norm_int`` / ``softmax_int``.
* Before calibration, :func:`equalize_depthwise_inputs` rescales the channels of every tensor that
  a conv/linear writes and only a depthwise conv reads (the MBConv ``expand -> dw`` pair), so that
  each channel uses the whole int8 range of the tensor. BN folding after a near-dead expand channel
  otherwise leaves a channel whose values are a few quantisation steps wide feeding depthwise
  weights 30x larger than its neighbours', and the per-tensor int8 activation loses it (measured on
  the digits search model: relative error 0.03 -> 0.26 in one depthwise layer, test accuracy
  99.3 % float -> 96.9 % int8). The float function is unchanged; the integer graph keeps the TFLite
  form (per-tensor activations, per-channel weights), only the requant multipliers differ.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from tuskml.backends.sparse_engine import fixedpoint as fp
from tuskml.backends.sparse_engine.ir import Graph, Node, Tensor
from tuskml.backends.sparse_engine.kernels_numpy import float_activation
from tuskml.backends.sparse_engine.reference import run_float, to_graph_layout
from tuskml.core.errors import TuskmlError


class QuantizationError(TuskmlError):
    """The graph or the calibration data cannot be quantised (names the tensor or layer)."""


ADD_LEFT_SHIFT = 20
_PASS_THROUGH_QPARAMS = ("max_pool2d", "transpose", "reshape")


def activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """TFLite asymmetric int8 parameters for the real range [lo, hi] (widened to include 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8 * 255  # a constant-zero tensor: any scale works, keep it tiny but non-zero
    scale = (hi - lo) / 255.0
    zp = int(np.clip(np.floor(-128 - lo / scale + 0.5), -128, 127))
    return scale, zp


def quantize_weights_per_channel(w: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 weights -> (int8 array, float64 scales [channels])."""
    moved = np.moveaxis(np.asarray(w, np.float64), axis, 0)
    absmax = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0)
    q = np.clip(np.floor(moved / scale.reshape(-1, *[1] * (moved.ndim - 1)) + 0.5), -127, 127).astype(np.int8)
    return np.moveaxis(q, 0, axis), scale


#: Largest factor a channel is scaled up by in :func:`equalize_depthwise_inputs`.
MAX_EQUALIZATION_SCALE = 1024.0
_EQUALIZABLE_ACTIVATIONS = ("none", "relu", "relu6")


def _graph_layout_inputs(graph: Graph, calibration_inputs: Any) -> np.ndarray:
    x = np.asarray(calibration_inputs.detach().cpu().numpy() if hasattr(calibration_inputs, "detach") else calibration_inputs)
    if x.ndim == 0 or x.shape[0] == 0:
        raise QuantizationError("calibration_inputs is empty: pass at least one sample [N, ...]")
    return to_graph_layout(graph, x)


def _run_calibration(graph: Graph, x: np.ndarray, batch_size: int, observe: Any) -> None:
    graph_batch = graph.tensors[graph.inputs[0]].shape[0]
    step = max(graph_batch, (batch_size // graph_batch) * graph_batch)
    usable = (x.shape[0] // graph_batch) * graph_batch
    if usable == 0:
        raise QuantizationError(f"need at least {graph_batch} calibration samples (the graph batch size)")
    for i in range(0, usable, step):
        run_float(graph, x[i:i + step], observe=observe)


def equalization_pairs(graph: Graph) -> list[tuple[Node, Node]]:
    """(producer, depthwise consumer) pairs whose shared tensor's channels can be rescaled exactly.

    The producer is a ``conv2d``/``fully_connected`` (per-output-channel weights and bias) with no
    activation, ReLU or ReLU6 fused, and its output is read only by one ``depthwise_conv2d``
    (per-channel weights), so scaling producer row ``c`` by ``s`` and depthwise channel ``c`` by
    ``1/s`` leaves the float function unchanged while the observed range stays below the clip.
    """
    pairs = []
    for node in graph.nodes:
        if node.op not in ("conv2d", "fully_connected") or len(node.inputs) < 3:
            continue
        if node.attrs.get("activation", "none") not in _EQUALIZABLE_ACTIVATIONS:
            continue
        out = node.outputs[0]
        users = graph.consumers(out)
        if out in graph.outputs or len(users) != 1 or users[0].op != "depthwise_conv2d" or users[0].inputs[0] != out:
            continue
        dw_w = graph.tensors[users[0].inputs[1]]
        if dw_w.data is None or dw_w.data.ndim != 3 or dw_w.shape[2] != graph.tensors[node.inputs[1]].shape[0]:
            continue
        pairs.append((node, users[0]))
    return pairs


def equalize_depthwise_inputs(graph: Graph, calibration_inputs: Any, batch_size: int = 16) -> tuple[Graph, dict[str, np.ndarray]]:
    """A copy of the float ``graph`` where every :func:`equalization_pairs` tensor has each channel
    scaled so that its observed range fills the tensor's observed range; returns (graph, scales).

    Channel ``c`` of the tensor ``t`` between producer ``P`` and depthwise ``D`` gets
    ``s[c] = clip(hi / max_c, 1, MAX_EQUALIZATION_SCALE)`` for non-negative (ReLU/ReLU6) tensors, or
    ``min(hi / max_c, lo / min_c)`` for signed ones, where ``[lo, hi]`` is the whole tensor's
    observed range: ``P``'s weight row and bias are multiplied by ``s[c]``, ``D``'s weights of
    channel ``c`` divided by it. A ReLU6 clip is never reached by a scaled channel on the
    calibration data (its scaled maximum is ``hi <= 6``), so the function is the same there; beyond
    it the int8 tensor clips at ``hi`` anyway. Dead channels (all zero) keep ``s = 1``.
    """
    if graph.quantized:
        raise QuantizationError("equalize_depthwise_inputs needs the float graph")
    pairs = equalization_pairs(graph)
    if not pairs:
        return graph, {}
    x = _graph_layout_inputs(graph, calibration_inputs)
    watched = {p.outputs[0] for p, _ in pairs}
    ch_lo: dict[str, np.ndarray] = {}
    ch_hi: dict[str, np.ndarray] = {}

    def observe(name: str, value: np.ndarray) -> None:
        if name not in watched:
            return
        v = value.reshape(-1, value.shape[-1])
        lo, hi = v.min(axis=0), v.max(axis=0)
        ch_lo[name] = lo if name not in ch_lo else np.minimum(ch_lo[name], lo)
        ch_hi[name] = hi if name not in ch_hi else np.maximum(ch_hi[name], hi)

    _run_calibration(graph, x, batch_size, observe)
    tensors = dict(graph.tensors)
    scales: dict[str, np.ndarray] = {}
    for prod, dw in pairs:
        name = prod.outputs[0]
        lo_c, hi_c = ch_lo[name].astype(np.float64), ch_hi[name].astype(np.float64)
        lo, hi = min(float(lo_c.min()), 0.0), max(float(hi_c.max()), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            up = np.where(hi_c > 0, hi / hi_c, np.inf)
            down = np.where(lo_c < 0, lo / lo_c, np.inf)
        s = np.minimum(up, down)
        s = np.where(np.isfinite(s), np.clip(s, 1.0, MAX_EQUALIZATION_SCALE), 1.0)
        if np.all(s == 1.0):
            continue
        scales[name] = s
        w, b, dw_w = (graph.tensors[n] for n in (prod.inputs[1], prod.inputs[2], dw.inputs[1]))
        bshape = (-1,) + (1,) * (w.data.ndim - 1)
        tensors[w.name] = attrs.evolve(w, data=(w.data.astype(np.float64) * s.reshape(bshape)).astype(w.data.dtype))
        tensors[b.name] = attrs.evolve(b, data=(b.data.astype(np.float64) * s).astype(b.data.dtype))
        tensors[dw_w.name] = attrs.evolve(dw_w, data=(dw_w.data.astype(np.float64) / s).astype(dw_w.data.dtype))
    if not scales:
        return graph, {}
    return attrs.evolve(graph, tensors=tensors, nodes=list(graph.nodes)), scales


def calibrate(graph: Graph, calibration_inputs: Any, batch_size: int = 16) -> dict[str, tuple[float, float]]:
    """Observed (min, max) of every activation of the float graph; inputs are in torch layout."""
    if graph.quantized:
        raise QuantizationError("calibrate needs the float graph")
    x = _graph_layout_inputs(graph, calibration_inputs)
    ranges: dict[str, tuple[float, float]] = {}

    def observe(name: str, value: np.ndarray) -> None:
        lo, hi = float(value.min()), float(value.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise QuantizationError(f"tensor {name!r} has non-finite values during calibration")
        old = ranges.get(name)
        ranges[name] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))

    _run_calibration(graph, x, batch_size, observe)
    return ranges


class _Quantizer:
    def __init__(self, fgraph: Graph, ranges: dict[str, tuple[float, float]]):
        self.f = fgraph
        self.ranges = ranges
        self.q = Graph(name=fgraph.name, quantized=True, inputs=list(fgraph.inputs), outputs=list(fgraph.outputs),
                       input_permutations=dict(fgraph.input_permutations))

    def act(self, name: str, scale: float, zp: int) -> Tensor:
        t = self.q.tensors.get(name)
        if t is None:
            t = self.q.add_tensor(Tensor(name=name, shape=self.f.tensors[name].shape, dtype="int8",
                                         scale=float(scale), zero_point=int(zp)))
        return t

    def act_from_range(self, name: str) -> Tensor:
        if name not in self.ranges:
            raise QuantizationError(f"tensor {name!r} was not seen during calibration")
        return self.act(name, *activation_qparams(*self.ranges[name]))

    def clamp_range(self, activation: str, y: Tensor) -> tuple[int, int]:
        if activation == "relu":
            return max(-128, y.zero_point), 127
        if activation == "relu6":
            return max(-128, y.zero_point), min(127, y.zero_point + int(np.floor(6.0 / y.scale + 0.5)))
        return -128, 127

    def run(self) -> Graph:
        for name in self.f.inputs:
            self.act_from_range(name)
        for node in self.f.nodes:
            try:
                self.node(node)
            except fp.FixedPointError as exc:
                raise QuantizationError(f"layer {node.module_path!r} (node {node.name!r}, {node.op}): {exc}") from exc
        self.q.validate()
        return self.q

    def emit(self, node: Node, op: str, inputs: list[str], attrs: dict) -> None:
        self.q.add_node(Node(name=node.name, op=op, inputs=inputs, outputs=list(node.outputs), attrs=attrs,
                             module_path=node.module_path))

    def check_accumulator(self, node: Node, k: int, input_range: int = 255, weight_range: int = 127,
                          bias: int = 0) -> None:
        if k * input_range * weight_range + bias >= 2 ** 31:
            raise QuantizationError(f"layer {node.module_path!r}: reduction length {k} could overflow the int32 accumulator")

    def node(self, node: Node) -> None:
        op = node.op
        ins = [self.q.tensors[n] for n in node.inputs if not self.f.tensors[n].is_constant]
        out_name = node.outputs[0]
        if op in _PASS_THROUGH_QPARAMS:
            x = ins[0]
            self.act(out_name, x.scale, x.zero_point)
            self.emit(node, op, [x.name], dict(node.attrs))
            return
        if op == "softmax":
            x = ins[0]
            if self.f.tensors[x.name].shape[-1] > fp.SOFTMAX_MAX_LEN:
                raise QuantizationError(f"layer {node.module_path!r}: softmax row longer than {fp.SOFTMAX_MAX_LEN}")
            self.act(out_name, fp.SOFTMAX_OUTPUT_SCALE, fp.SOFTMAX_OUTPUT_ZERO_POINT)
            self.emit(node, "softmax", [x.name], {"exp_table": fp.build_exp_table(x.scale)})
            return
        y = self.act_from_range(out_name)
        a = node.attrs
        if op in ("conv2d", "depthwise_conv2d", "fully_connected"):
            x = ins[0]
            wf = self.f.tensors[node.inputs[1]]
            bf = self.f.tensors[node.inputs[2]]
            axis = 0 if op != "depthwise_conv2d" else 2
            wq, ws = quantize_weights_per_channel(wf.data, axis)
            # An all-zero output channel (pruned away entirely) outputs its bias only; its weight
            # scale is free, so pick one whose requant multiplier is 2**-8: the kernels' fast exact
            # requant path, instead of the 1.0 placeholder that can push the shift out of its range.
            dead = ~np.any(np.moveaxis(wq, axis, 0).reshape(wq.shape[axis], -1) != 0, axis=1)
            if dead.any():
                ws = np.where(dead, y.scale / (x.scale * 256.0), ws)
            k = int(np.prod(wf.shape)) // wf.shape[axis]
            bias_scale = x.scale * ws
            bq = np.floor(bf.data.astype(np.float64) / bias_scale + 0.5)
            if np.abs(bq).max(initial=0) >= 2 ** 30:
                raise QuantizationError(f"layer {node.module_path!r}: bias too large for int32 at scale {x.scale}*w_scale")
            self.check_accumulator(node, k, bias=int(np.abs(bq).max(initial=0)))
            w_t = self.q.add_tensor(Tensor(name=wf.name, shape=wf.shape, dtype="int8", scale=ws, zero_point=0, data=wq))
            b_t = self.q.add_tensor(Tensor(name=bf.name, shape=bf.shape, dtype="int32", scale=bias_scale, zero_point=0,
                                           data=bq.astype(np.int32)))
            mult, shift = fp.quantize_multipliers(x.scale * ws / y.scale)
            lo, hi = self.clamp_range(a.get("activation", "none"), y)
            attrs = {"requant_multiplier": mult, "requant_shift": shift, "act_min": lo, "act_max": hi,
                     "sparse_block": int(a.get("sparse_block", 0))}
            if op != "fully_connected":
                attrs.update(stride=tuple(a["stride"]), padding=tuple(a["padding"]), dilation=tuple(a["dilation"]))
            self.emit(node, op, [x.name, w_t.name, b_t.name], attrs)
        elif op == "add":
            xa, xb = ins
            twice_max = 2.0 * max(xa.scale, xb.scale)
            m1, s1 = fp.quantize_multiplier(xa.scale / twice_max)
            m2, s2 = fp.quantize_multiplier(xb.scale / twice_max)
            mo, so = fp.quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * y.scale))
            lo, hi = self.clamp_range(a.get("activation", "none"), y)
            self.emit(node, "add", [xa.name, xb.name], {
                "left_shift": ADD_LEFT_SHIFT, "input1_multiplier": m1, "input1_shift": s1,
                "input2_multiplier": m2, "input2_shift": s2, "output_multiplier": mo, "output_shift": so,
                "act_min": lo, "act_max": hi})
        elif op == "mul" and len(ins) == 1:
            m, s = fp.quantize_multiplier(a["scalar"] * ins[0].scale / y.scale)
            self.emit(node, "requantize", [ins[0].name], {"multiplier": m, "shift": s})
        elif op == "mul":
            xa, xb = ins
            m, s = fp.quantize_multiplier(xa.scale * xb.scale / y.scale)
            self.emit(node, "mul", [xa.name, xb.name], {"multiplier": m, "shift": s, "act_min": -128, "act_max": 127})
        elif op == "activation":
            x = ins[0]
            fn = a["function"]
            table = fp.build_lut(lambda v: float_activation(fn, v), x.scale, x.zero_point, y.scale, y.zero_point)
            self.emit(node, "lut", [x.name], {"table": table, "function": fn})
        elif op == "avg_pool2d":
            kh, kw = a["kernel"]
            self.check_accumulator(node, kh * kw, 255, 1)
            m, s = fp.quantize_multiplier(ins[0].scale / (y.scale * kh * kw))
            self.emit(node, "avg_pool2d", [ins[0].name], {"kernel": tuple(a["kernel"]), "stride": tuple(a["stride"]),
                                                          "multiplier": m, "shift": s})
        elif op == "mean":
            shape = self.f.tensors[ins[0].name].shape
            count = int(np.prod([shape[i] for i in a["axes"]]))
            self.check_accumulator(node, count, 255, 1)
            m, s = fp.quantize_multiplier(ins[0].scale / (y.scale * count))
            self.emit(node, "mean", [ins[0].name], {"axes": tuple(a["axes"]), "keepdims": bool(a["keepdims"]),
                                                    "multiplier": m, "shift": s})
        elif op == "layer_norm":
            x = ins[0]
            c = self.f.tensors[x.name].shape[-1]
            if c > fp.LAYER_NORM_MAX_C:
                raise QuantizationError(f"layer {node.module_path!r}: layer norm over {c} > {fp.LAYER_NORM_MAX_C} channels")
            gamma = np.asarray(a["gamma"], np.float64)
            beta = np.asarray(a["beta"], np.float64)
            mult, shift = fp.quantize_multipliers(gamma / (y.scale * (1 << fp.LAYER_NORM_Z_BITS)))
            beta_q = np.floor(beta / y.scale + 0.5)
            self.emit(node, "layer_norm", [x.name], {
                "eps_q": int(min(np.floor(a["eps"] / x.scale ** 2 + 0.5), 131071)), "requant_multiplier": mult,
                "requant_shift": shift, "beta_q": np.clip(beta_q, -(2 ** 20), 2 ** 20).astype(np.int32)})
        elif op == "batch_matmul":
            xa, xb = ins
            self.check_accumulator(node, self.f.tensors[xa.name].shape[-1], 255, 255)
            m, s = fp.quantize_multiplier(a.get("alpha", 1.0) * xa.scale * xb.scale / y.scale)
            self.emit(node, "batch_matmul", [xa.name, xb.name], {"multiplier": m, "shift": s})
        elif op == "concat":
            pairs = [fp.quantize_multiplier(x.scale / y.scale) for x in ins]
            self.emit(node, "concat", [x.name for x in ins], {
                "axis": int(a["axis"]), "multipliers": tuple(p[0] for p in pairs), "shifts": tuple(p[1] for p in pairs)})
        else:
            raise QuantizationError(f"layer {node.module_path!r}: no quantisation rule for op {op!r}")


def quantize_graph(graph: Graph, calibration_inputs: Any, *, batch_size: int = 16, equalize: bool = True) -> Graph:
    """Calibrate the float ``graph`` on ``calibration_inputs`` (torch layout, e.g. NCHW) -> integer graph.

    ``equalize``: first rescale the channels feeding depthwise convs (:func:`equalize_depthwise_inputs`;
    the float function is unchanged, ``graph`` itself is never modified).
    """
    if graph.quantized:
        raise QuantizationError(f"graph {graph.name!r} is already quantized")
    if len(graph.inputs) != 1:
        raise QuantizationError(f"quantize_graph supports single-input graphs, {graph.name!r} has {len(graph.inputs)}")
    if equalize:
        graph, _ = equalize_depthwise_inputs(graph, calibration_inputs, batch_size)
    ranges = calibrate(graph, calibration_inputs, batch_size)
    return _Quantizer(graph, ranges).run()


def quantize_model(model: Any, calibration_inputs: Any, *, example_input: Any = None) -> Graph:
    """Convenience: :func:`frontend.import_torch` then :func:`quantize_graph` (batch-1 graph)."""
    import torch

    from tuskml.backends.sparse_engine.frontend import import_torch

    calib = calibration_inputs if isinstance(calibration_inputs, torch.Tensor) else torch.as_tensor(np.asarray(calibration_inputs))
    example = calib[:1] if example_input is None else example_input
    return quantize_graph(import_torch(model, example), calib)
