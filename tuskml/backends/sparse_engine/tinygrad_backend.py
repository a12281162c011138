"""The integer graph executed with tinygrad tensors: an independent cross-check of ``reference.py``.

Independent on purpose: convolutions use tinygrad's ``conv2d`` on NCHW int64 tensors (reference uses
numpy im2col on NHWC), the TFLite rounding steps are written with floor division instead of bit
masks, and the integer square root is the digit-by-digit loop instead of a corrected float sqrt.
Only table lookups (LUT activations, the softmax exp table) gather with numpy on the realised
index tensor, because a one-hot gather on tinygrad's PYTHON device costs 256 ops per element.

Device: ``"PYTHON"`` (pure Python, no compiler) or ``"CPU"`` (tinygrad's compiled CPU backend, needs
clang); ``"auto"`` picks CPU when ``clang`` is on PATH. Expect the PYTHON device to be slow
(~microseconds per element op): use tiny models.
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np

from tuskml.backends.sparse_engine.ir import Graph, Node
from tuskml.backends.sparse_engine.reference import ExecutionError, _as_inputs, _batched

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "CPU" if shutil.which("clang") else "PYTHON"
    if device not in ("PYTHON", "CPU"):
        raise ExecutionError(f"tinygrad device must be 'auto', 'PYTHON' or 'CPU', got {device!r}")
    return device


class _Ops:
    """Integer primitives on tinygrad tensors (int64), mirroring fixedpoint.py by other means."""

    def __init__(self, device: str):
        from tinygrad import Tensor, dtypes

        self.T = Tensor
        self.dtypes = dtypes
        self.device = device

    def const(self, a: Any):
        return self.T(np.ascontiguousarray(np.asarray(a, dtype=np.int64)), device=self.device)

    def trunc_div_pot(self, x, exponent: int):
        d = 1 << exponent
        return (x >= 0).where(x // d, -((-x) // d))

    def mbqm(self, x, multiplier, shift):
        m = np.asarray(multiplier, dtype=np.int64)
        s = np.asarray(shift, dtype=np.int64)
        left = self.const(np.left_shift(1, np.maximum(s, 0)))
        right = np.maximum(-s, 0)
        xs = (x * left).clip(INT32_MIN, INT32_MAX)
        ab = xs * self.const(m)
        num = ab + (ab >= 0).where(1 << 30, 1 - (1 << 30))
        high = self.trunc_div_pot(num, 31)
        if np.any(m == INT32_MIN):
            high = ((xs == INT32_MIN) & self.const(m == INT32_MIN).cast(self.dtypes.bool)).where(INT32_MAX, high)
        pot = self.const(np.left_shift(1, right))
        floor_q = high // pot
        remainder = high - floor_q * pot
        threshold = self.const((np.left_shift(1, right) - 1) >> 1) + (high < 0).cast(self.dtypes.int64)
        return floor_q + (remainder > threshold).cast(self.dtypes.int64)

    def div_round(self, a, b):
        half = b // 2
        return (a >= 0).where((a + half) // b, -(((-a) + half) // b))

    def isqrt(self, n):
        res = n * 0
        bit = 1 << 30
        for _ in range(16):  # digit by digit: two bits per step
            trial = res + bit
            take = n >= trial
            n = take.where(n - trial, n)
            res = take.where((res // 2) + bit, res // 2)
            bit >>= 2
        return res

    def clamp8(self, x, lo: int = -128, hi: int = 127) -> np.ndarray:
        return x.clip(lo, hi).numpy().astype(np.int8)


def _node(ops: _Ops, graph: Graph, node: Node, args: list[np.ndarray]) -> np.ndarray:
    a = node.attrs
    tin = [graph.tensors[n] for n in node.inputs]
    y_zp = graph.tensors[node.outputs[0]].zero_point
    op = node.op
    x = ops.const(args[0]) if args else None
    if op in ("conv2d", "depthwise_conv2d", "fully_connected"):
        w = tin[1].data.astype(np.int64)
        bias = ops.const(tin[2].data)
        xs = x - tin[0].zero_point
        if op == "fully_connected":
            acc = xs.matmul(ops.const(w.reshape(w.shape[0], -1).T)) + bias
        else:
            nchw = xs.permute(0, 3, 1, 2)
            top, left, bottom, right = a["padding"]
            nchw = nchw.pad(((0, 0), (0, 0), (top, bottom), (left, right)))
            if op == "conv2d":
                weight, groups = w.transpose(0, 3, 1, 2), 1  # OHWI -> OIHW
            else:
                weight, groups = w.transpose(2, 0, 1)[:, None], w.shape[2]  # HWC -> C1HW
            acc = nchw.conv2d(ops.const(weight), stride=tuple(a["stride"]), dilation=tuple(a["dilation"]),
                              groups=groups).permute(0, 2, 3, 1) + bias
        acc = acc.realize()  # two small kernels compile much faster than one fused one
        y = ops.mbqm(acc, a["requant_multiplier"], a["requant_shift"]) + y_zp
        return ops.clamp8(y, a["act_min"], a["act_max"])
    if op == "add":
        b = ops.const(args[1])
        sa = ops.mbqm((x - tin[0].zero_point) * (1 << a["left_shift"]), a["input1_multiplier"], a["input1_shift"])
        sb = ops.mbqm((b - tin[1].zero_point) * (1 << a["left_shift"]), a["input2_multiplier"], a["input2_shift"])
        return ops.clamp8(ops.mbqm(sa + sb, a["output_multiplier"], a["output_shift"]) + y_zp, a["act_min"], a["act_max"])
    if op == "mul":
        prod = (x - tin[0].zero_point) * (ops.const(args[1]) - tin[1].zero_point)
        return ops.clamp8(ops.mbqm(prod, a["multiplier"], a["shift"]) + y_zp, a["act_min"], a["act_max"])
    if op == "requantize":
        return ops.clamp8(ops.mbqm(x - tin[0].zero_point, a["multiplier"], a["shift"]) + y_zp)
    if op == "lut":
        return np.asarray(a["table"], np.int8)[(x + 128).numpy()]
    if op in ("avg_pool2d", "mean"):
        xs = x - tin[0].zero_point
        if op == "avg_pool2d":
            c = xs.shape[-1]
            ones = ops.const(np.ones((c, 1, *a["kernel"]), np.int64))
            acc = xs.permute(0, 3, 1, 2).conv2d(ones, stride=tuple(a["stride"]), groups=c).permute(0, 2, 3, 1)
        else:
            acc = xs.sum(axis=tuple(a["axes"]), keepdim=a["keepdims"])
        return ops.clamp8(ops.mbqm(acc, a["multiplier"], a["shift"]) + y_zp)
    if op == "max_pool2d":
        top, left, bottom, right = a["padding"]
        nchw = x.permute(0, 3, 1, 2).pad(((0, 0), (0, 0), (top, bottom), (left, right)), value=-128)
        pooled = nchw.max_pool2d(kernel_size=tuple(a["kernel"]), stride=tuple(a["stride"]), dilation=tuple(a["dilation"]))
        return pooled.permute(0, 2, 3, 1).numpy().astype(np.int8)
    if op == "layer_norm":
        c = x.shape[-1]
        d = x - tin[0].zero_point
        mean = ops.div_round(d.sum(axis=-1, keepdim=True), ops.const(c))
        dev = d - mean
        var = ops.div_round((dev * dev).sum(axis=-1, keepdim=True), ops.const(c))
        sd = ops.isqrt((var + a["eps_q"]).clip(None, 131071) * (1 << 14))
        z = ops.div_round(dev * (1 << 18), sd.clip(1, None))
        y = ops.mbqm(z, a["requant_multiplier"], a["requant_shift"]) + ops.const(a["beta_q"]) + y_zp
        return ops.clamp8(y)
    if op == "softmax":
        idx = (x.max(axis=-1, keepdim=True) - x).numpy()
        e = ops.const(np.asarray(a["exp_table"], np.int64)[idx])
        s = e.sum(axis=-1, keepdim=True)
        return ops.clamp8(ops.div_round(e * 256, s) - 128)
    if op == "batch_matmul":
        acc = (x - tin[0].zero_point).matmul(ops.const(args[1]) - tin[1].zero_point)
        return ops.clamp8(ops.mbqm(acc, a["multiplier"], a["shift"]) + y_zp)
    if op == "concat":
        parts = [ops.mbqm(ops.const(v) - t.zero_point, m, s) + y_zp
                 for v, t, m, s in zip(args, tin, a["multipliers"], a["shifts"])]
        return ops.clamp8(parts[0].cat(*parts[1:], dim=a["axis"]))
    if op == "transpose":
        return x.permute(*a["perm"]).numpy().astype(np.int8)
    if op == "reshape":
        return x.reshape(*a["shape"]).numpy().astype(np.int8)
    raise ExecutionError(f"tinygrad backend: node {node.name!r} has unsupported op {op!r}")


def run_tinygrad(graph: Graph, inputs: Any, *, device: str = "auto") -> np.ndarray:
    """Execute the integer ``graph`` on tinygrad; returns the first output (int8)."""
    if not graph.quantized:
        raise ExecutionError(f"graph {graph.name!r} is a float graph; quantize it first")
    dev = pick_device(device)
    ops = _Ops(dev)
    feeds = _as_inputs(graph, inputs)

    from tinygrad.helpers import Context

    def once(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = dict(f)
        with Context(DEV=dev):  # helper tensors tinygrad creates internally go to the same device
            for node in graph.nodes:
                args = [values[n] for n in node.inputs if not graph.tensors[n].is_constant]
                values[node.outputs[0]] = _node(ops, graph, node, args)
        return {k: values[k] for k in graph.outputs}

    return _batched(graph, feeds, once)[graph.outputs[0]]
