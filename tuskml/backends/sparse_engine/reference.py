"""The golden executors in numpy: integer (bit-exact by definition) and float (calibration, checks).

:func:`run` executes an integer graph exactly as ``ir.py`` specifies, using only ``fixedpoint.py``
for arithmetic. Every other backend (tinygrad, C) is correct when it equals this, bit for bit.
:func:`run_float` executes the float graph (used by the quantiser to calibrate ranges and by tests to
check the frontend against torch). :func:`accuracy_report` compares the integer graph with the
float torch model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from tuskml.backends.sparse_engine import fixedpoint as fp
from tuskml.backends.sparse_engine.ir import Graph, GraphError, Node
from tuskml.backends.sparse_engine.kernels_numpy import (
    float_activation,
    matmul_exact,
    max_pool_windows,
    windows,
)
from tuskml.core.errors import TuskmlError


class ExecutionError(TuskmlError):
    """An input that does not match the graph, or an op a backend cannot execute."""


# --- input/output conversion ------------------------------------------------------------------


def _as_inputs(graph: Graph, inputs: Any) -> dict[str, np.ndarray]:
    if isinstance(inputs, dict):
        missing = set(graph.inputs) - set(inputs)
        if missing:
            raise ExecutionError(f"missing graph inputs {sorted(missing)}")
        return {k: np.asarray(inputs[k]) for k in graph.inputs}
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != len(graph.inputs):
            raise ExecutionError(f"graph has {len(graph.inputs)} inputs, got {len(inputs)}")
        return {k: np.asarray(v) for k, v in zip(graph.inputs, inputs)}
    if len(graph.inputs) != 1:
        raise ExecutionError(f"graph has {len(graph.inputs)} inputs; pass a dict or list")
    return {graph.inputs[0]: np.asarray(inputs)}


def quantize_input(graph: Graph, x_torch_layout: Any, index: int = 0) -> np.ndarray:
    """Float input in torch layout (e.g. NCHW) -> int8 in graph layout (e.g. NHWC)."""
    if not graph.quantized:
        raise ExecutionError("quantize_input needs the integer graph")
    name = graph.inputs[index]
    t = graph.tensors[name]
    x = np.asarray(x_torch_layout.detach().cpu().numpy() if hasattr(x_torch_layout, "detach") else x_torch_layout,
                   dtype=np.float64)
    perm = graph.input_permutations.get(name, tuple(range(x.ndim)))
    x = x.transpose(perm)
    return fp.clamp_int8(np.floor(x / t.scale + 0.5) + t.zero_point)


def to_graph_layout(graph: Graph, x_torch_layout: Any, index: int = 0) -> np.ndarray:
    """Float input in torch layout -> float32 in graph layout (for :func:`run_float`)."""
    name = graph.inputs[index]
    x = np.asarray(x_torch_layout.detach().cpu().numpy() if hasattr(x_torch_layout, "detach") else x_torch_layout,
                   dtype=np.float32)
    return x.transpose(graph.input_permutations.get(name, tuple(range(x.ndim))))


def dequantize(graph: Graph, tensor_name: str, q: np.ndarray) -> np.ndarray:
    t = graph.tensors[tensor_name]
    return (np.asarray(q, dtype=np.float64) - t.zero_point) * t.scale


# --- integer ops --------------------------------------------------------------------------------


def _mbqm(acc, node: Node, key_m: str = "multiplier", key_s: str = "shift"):
    return fp.multiply_by_quantized_multiplier(acc, node.attrs[key_m], node.attrs[key_s])


def _int_conv_like(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    xt = graph.tensors[node.inputs[0]]
    w = graph.tensors[node.inputs[1]].data
    bias = graph.tensors[node.inputs[2]].data.astype(np.int64)
    xs = x.astype(np.int64) - xt.zero_point
    if node.op == "fully_connected":
        k = xs.shape[-1]
        acc = matmul_exact(xs.reshape(-1, k), w.reshape(w.shape[0], -1).T) + bias
        acc = acc.reshape(*xs.shape[:-1], w.shape[0])
    else:
        a = node.attrs
        kernel = w.shape[1:3] if node.op == "conv2d" else w.shape[0:2]
        win = windows(xs, kernel, a["stride"], a["padding"], a["dilation"], pad_value=0)
        n, oh, ow = win.shape[:3]
        if node.op == "conv2d":
            cols = win.reshape(n * oh * ow, -1)
            acc = matmul_exact(cols, w.reshape(w.shape[0], -1).T).reshape(n, oh, ow, -1) + bias
        else:
            acc = np.einsum("nhwijc,ijc->nhwc", win, w.astype(np.int64)) + bias
    y = fp.multiply_by_quantized_multiplier(acc, node.attrs["requant_multiplier"], node.attrs["requant_shift"])
    yt = graph.tensors[node.outputs[0]]
    return fp.clamp_int8(y + yt.zero_point, node.attrs["act_min"], node.attrs["act_max"])


def _int_node(graph: Graph, node: Node, args: list[np.ndarray]) -> np.ndarray:
    a = node.attrs
    op = node.op
    tin = [graph.tensors[n] for n in node.inputs]
    yt = graph.tensors[node.outputs[0]]
    y_zp = yt.zero_point
    if op in ("conv2d", "depthwise_conv2d", "fully_connected"):
        return _int_conv_like(graph, node, args[0])
    if op == "add":
        ls = a["left_shift"]
        sa = fp.multiply_by_quantized_multiplier((args[0].astype(np.int64) - tin[0].zero_point) << ls,
                                                 a["input1_multiplier"], a["input1_shift"])
        sb = fp.multiply_by_quantized_multiplier((args[1].astype(np.int64) - tin[1].zero_point) << ls,
                                                 a["input2_multiplier"], a["input2_shift"])
        out = fp.multiply_by_quantized_multiplier(sa + sb, a["output_multiplier"], a["output_shift"])
        return fp.clamp_int8(out + y_zp, a["act_min"], a["act_max"])
    if op == "mul":
        prod = (args[0].astype(np.int64) - tin[0].zero_point) * (args[1].astype(np.int64) - tin[1].zero_point)
        return fp.clamp_int8(_mbqm(prod, node) + y_zp, a["act_min"], a["act_max"])
    if op == "requantize":
        return fp.clamp_int8(_mbqm(args[0].astype(np.int64) - tin[0].zero_point, node) + y_zp)
    if op == "lut":
        return fp.apply_lut(args[0], a["table"])
    if op == "avg_pool2d":
        xs = args[0].astype(np.int64) - tin[0].zero_point
        acc = windows(xs, a["kernel"], a["stride"], (0, 0, 0, 0), (1, 1)).sum(axis=(3, 4))
        return fp.clamp_int8(_mbqm(acc, node) + y_zp)
    if op == "max_pool2d":
        return max_pool_windows(args[0], a["kernel"], a["stride"], a["padding"], a["dilation"]).astype(np.int8)
    if op == "mean":
        acc = (args[0].astype(np.int64) - tin[0].zero_point).sum(axis=tuple(a["axes"]), keepdims=a["keepdims"])
        return fp.clamp_int8(_mbqm(acc, node) + y_zp)
    if op == "layer_norm":
        return fp.layer_norm_int(args[0], tin[0].zero_point, a["eps_q"], a["requant_multiplier"],
                                 a["requant_shift"], a["beta_q"], y_zp)
    if op == "softmax":
        return fp.softmax_int(args[0], a["exp_table"])
    if op == "batch_matmul":
        acc = matmul_exact(args[0].astype(np.int64) - tin[0].zero_point, args[1].astype(np.int64) - tin[1].zero_point)
        return fp.clamp_int8(_mbqm(acc, node) + y_zp)
    if op == "concat":
        parts = [fp.clamp_int8(fp.multiply_by_quantized_multiplier(x.astype(np.int64) - t.zero_point, m, s) + y_zp)
                 for x, t, m, s in zip(args, tin, a["multipliers"], a["shifts"])]
        return np.concatenate(parts, axis=a["axis"])
    if op == "transpose":
        return np.ascontiguousarray(args[0].transpose(a["perm"]))
    if op == "reshape":
        return args[0].reshape(a["shape"])
    raise ExecutionError(f"reference backend: node {node.name!r} has op {op!r} that is not an integer op")


# --- float ops ------------------------------------------------------------------------------------


def _activate(x: np.ndarray, activation: str) -> np.ndarray:
    if activation == "relu":
        return np.maximum(x, 0)
    if activation == "relu6":
        return np.clip(x, 0, 6)
    return x


def _float_node(graph: Graph, node: Node, args: list[np.ndarray]) -> np.ndarray:
    a = node.attrs
    op = node.op
    if op in ("conv2d", "depthwise_conv2d", "fully_connected"):
        x = args[0].astype(np.float64)
        w = graph.tensors[node.inputs[1]].data.astype(np.float64)
        b = graph.tensors[node.inputs[2]].data.astype(np.float64)
        if op == "fully_connected":
            y = x @ w.T + b
        else:
            kernel = w.shape[1:3] if op == "conv2d" else w.shape[0:2]
            win = windows(x, kernel, a["stride"], a["padding"], a["dilation"])
            if op == "conv2d":
                n, oh, ow = win.shape[:3]
                y = (win.reshape(n * oh * ow, -1) @ w.reshape(w.shape[0], -1).T).reshape(n, oh, ow, -1) + b
            else:
                y = np.einsum("nhwijc,ijc->nhwc", win, w) + b
        return _activate(y, a.get("activation", "none"))
    if op == "add":
        return _activate(args[0] + args[1], a.get("activation", "none"))
    if op == "mul":
        return args[0] * a["scalar"] if len(args) == 1 else args[0] * args[1]
    if op == "activation":
        return float_activation(a["function"], args[0])
    if op == "avg_pool2d":
        return windows(args[0], a["kernel"], a["stride"], (0, 0, 0, 0), (1, 1)).mean(axis=(3, 4))
    if op == "max_pool2d":
        return max_pool_windows(args[0].astype(np.float64), a["kernel"], a["stride"], a["padding"], a["dilation"])
    if op == "mean":
        return args[0].mean(axis=tuple(a["axes"]), keepdims=a["keepdims"])
    if op == "layer_norm":
        x = args[0].astype(np.float64)
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        return (x - mu) / np.sqrt(var + a["eps"]) * a["gamma"] + a["beta"]
    if op == "softmax":
        x = args[0] - args[0].max(axis=-1, keepdims=True)
        e = np.exp(x)
        return e / e.sum(axis=-1, keepdims=True)
    if op == "batch_matmul":
        return np.matmul(args[0], args[1]) * a.get("alpha", 1.0)
    if op == "concat":
        return np.concatenate(args, axis=a["axis"])
    if op == "transpose":
        return np.ascontiguousarray(args[0].transpose(a["perm"]))
    if op == "reshape":
        return args[0].reshape(a["shape"])
    raise ExecutionError(f"float executor: node {node.name!r} has unknown op {op!r}")


# --- drivers ---------------------------------------------------------------------------------------


def _execute(graph: Graph, inputs: dict[str, np.ndarray], node_fn: Callable, keep: bool,
             observe: Callable[[str, np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
    values: dict[str, np.ndarray] = dict(inputs)
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            last_use[name] = i
    for i, node in enumerate(graph.nodes):
        args = [values[n] for n in node.inputs if not graph.tensors[n].is_constant]
        try:
            out = node_fn(graph, node, args)
        except (fp.FixedPointError, ValueError) as exc:
            raise ExecutionError(f"node {node.name!r} ({node.op}, module {node.module_path!r}) failed: {exc}") from exc
        expected = graph.tensors[node.outputs[0]].shape
        if tuple(out.shape[1:]) != tuple(expected[1:]):
            raise ExecutionError(f"node {node.name!r} ({node.op}) produced shape {list(out.shape)}, "
                                 f"graph says {list(expected)}")
        values[node.outputs[0]] = out
        if observe is not None:
            observe(node.outputs[0], out)
        if not keep:
            for name in node.inputs:
                if last_use.get(name) == i and name not in graph.outputs and name in values and name not in graph.inputs:
                    del values[name]
    return values if keep else {k: values[k] for k in graph.outputs}


def _batched(graph: Graph, inputs: dict[str, np.ndarray], fn: Callable[[dict], dict]) -> dict[str, np.ndarray]:
    """Run in chunks of the graph's batch size (reshape attributes fix the batch dim)."""
    batch = graph.tensors[graph.inputs[0]].shape[0]
    n = next(iter(inputs.values())).shape[0]
    for name, x in inputs.items():
        want = graph.tensors[name].shape
        if tuple(x.shape[1:]) != tuple(want[1:]):
            raise ExecutionError(f"input {name!r} has shape {list(x.shape)}, graph expects [N, {', '.join(map(str, want[1:]))}] "
                                 f"(graph layout; image inputs are NHWC)")
    if n == batch:
        return fn(inputs)
    if n % batch:
        raise ExecutionError(f"batch {n} is not a multiple of the graph batch {batch}")
    chunks = [fn({k: v[i:i + batch] for k, v in inputs.items()}) for i in range(0, n, batch)]
    return {k: np.concatenate([c[k] for c in chunks], axis=0) for k in chunks[0]}


@attrs.frozen(kw_only=True)
class ReferenceRun:
    """Result of :func:`run`: int8 outputs (graph order), their dequantised floats, and optionally all tensors."""

    outputs: list[np.ndarray]
    float_outputs: list[np.ndarray]
    tensors: dict[str, np.ndarray] | None = None

    @property
    def output(self) -> np.ndarray:
        return self.outputs[0]


def run_integer(graph: Graph, inputs: Any, *, keep_intermediates: bool = False) -> dict[str, np.ndarray]:
    """Execute the integer graph; returns ``{tensor name: int8 array}`` (outputs, or every tensor)."""
    if not graph.quantized:
        raise ExecutionError(f"graph {graph.name!r} is a float graph; quantize it first (or use run_float)")
    feeds = _as_inputs(graph, inputs)
    for name, x in feeds.items():
        if x.dtype != np.int8:
            raise ExecutionError(f"input {name!r} must be int8, got {x.dtype}")
    return _batched(graph, feeds, lambda f: _execute(graph, f, _int_node, keep_intermediates))


def run(graph: Graph, x_int8: Any, *, keep_intermediates: bool = False) -> ReferenceRun:
    """Golden integer execution: int8 outputs, dequantised outputs and (optionally) every tensor."""
    values = run_integer(graph, x_int8, keep_intermediates=keep_intermediates)
    outs = [values[n] for n in graph.outputs]
    return ReferenceRun(outputs=outs, float_outputs=[dequantize(graph, n, q) for n, q in zip(graph.outputs, outs)],
                        tensors=values if keep_intermediates else None)


def run_float(graph: Graph, inputs: Any, *, keep_intermediates: bool = False,
              observe: Callable[[str, np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
    """Execute the float graph (inputs in graph layout); ``observe(name, value)`` sees every tensor."""
    if graph.quantized:
        raise GraphError(f"graph {graph.name!r} is quantized; use run()")
    feeds = {k: v.astype(np.float64) for k, v in _as_inputs(graph, inputs).items()}
    if observe is not None:
        for k, v in feeds.items():
            observe(k, v)
    return _batched(graph, feeds, lambda f: _execute(graph, f, _float_node, keep_intermediates, observe))


@attrs.frozen(kw_only=True)
class AccuracyReport:
    """Integer graph vs the float torch model on the same inputs (first output)."""

    max_abs_error: float
    mean_abs_error: float
    output_range: float  # max |float output|
    relative_error: float  # mean_abs_error / mean |float output|
    top1_agreement: float | None  # for classifier-like [N, classes] outputs

    def as_dict(self) -> dict[str, float | None]:
        return attrs.asdict(self)


def compare_outputs(float_out: np.ndarray, int_dequant: np.ndarray) -> AccuracyReport:
    f = np.asarray(float_out, np.float64)
    q = np.asarray(int_dequant, np.float64)
    err = np.abs(f - q)
    top1 = float(np.mean(f.argmax(-1) == q.argmax(-1))) if f.ndim == 2 and f.shape[1] > 1 else None
    return AccuracyReport(max_abs_error=float(err.max()), mean_abs_error=float(err.mean()),
                          output_range=float(np.abs(f).max()),
                          relative_error=float(err.mean() / max(np.abs(f).mean(), 1e-12)), top1_agreement=top1)


def accuracy_report(model: Any, graph: Graph, inputs_torch_layout: Any) -> AccuracyReport:
    """Run ``model`` (torch, float) and the integer ``graph`` on the same inputs and compare."""
    import torch

    x = inputs_torch_layout if isinstance(inputs_torch_layout, torch.Tensor) else torch.as_tensor(inputs_torch_layout)
    with torch.no_grad():
        ref = model.eval()(x.float())
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    result = run(graph, quantize_input(graph, x))
    return compare_outputs(ref.numpy(), result.float_outputs[0])
