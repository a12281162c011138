"""Each op's integer formula from sparse_engine/ir.py, written with E1's fixedpoint.py primitives.

These are the expected results of the single-kernel ctypes tests (the whole-graph tests compare
with reference.py instead)."""

from __future__ import annotations

import numpy as np

from tuskml.backends.sparse_engine.fixedpoint import multiply_by_quantized_multiplier as mbqm


def requant(acc, mult, shift, out_zp, lo=-128, hi=127) -> np.ndarray:
    return np.clip(mbqm(acc, mult, shift) + out_zp, lo, hi).astype(np.int8)


def fully_connected(x, w, bias, mult, shift, in_zp, out_zp, lo=-128, hi=127):
    acc = (x.astype(np.int64) - in_zp) @ w.astype(np.int64).T
    if bias is not None:
        acc = acc + bias
    return requant(acc, mult, shift, out_zp, lo, hi)


def conv2d(x, w, bias, mult, shift, *, stride, padding, dilation, in_zp, out_zp, lo=-128, hi=127, depthwise=False):
    n, h, wd, c = x.shape
    top, left, bottom, right = padding
    xp = np.full((n, h + top + bottom, wd + left + right, c), in_zp, dtype=np.int64)
    xp[:, top:top + h, left:left + wd] = x
    xp -= in_zp
    if depthwise:
        kh, kw, _ = w.shape
    else:
        _, kh, kw, _ = w.shape
    oh = (h + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    oc = c if depthwise else w.shape[0]
    acc = np.zeros((n, oh, ow, oc), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * dilation[0]: i * dilation[0] + (oh - 1) * stride[0] + 1: stride[0],
                       j * dilation[1]: j * dilation[1] + (ow - 1) * stride[1] + 1: stride[1], :]
            if depthwise:
                acc += patch * w[i, j].astype(np.int64)
            else:
                acc += patch @ w[:, i, j, :].astype(np.int64).T
    if bias is not None:
        acc += bias
    return requant(acc, mult, shift, out_zp, lo, hi)
