"""Shape plumbing shared by the numpy executors (float and integer): windows, pooling, broadcasting.

Kept separate from ``reference.py`` so that the integer semantics there read like the IR docstring,
while the index gymnastics (padding, strided windows) live here once.
"""

from __future__ import annotations

import math

import numpy as np


def conv_output_size(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int) -> int:
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int, int, int],
            dilation: tuple[int, int], pad_value: float | int = 0) -> np.ndarray:
    """Sliding windows of an NHWC array -> ``[N, OH, OW, KH, KW, C]`` (a view where possible)."""
    kh, kw = kernel
    sh, sw = stride
    top, left, bottom, right = padding
    dh, dw = dilation
    if any(padding):
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=pad_value)
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    win = np.lib.stride_tricks.sliding_window_view(x, (eh, ew), axis=(1, 2))  # [N, H', W', C, eh, ew]
    win = win[:, ::sh, ::sw, :, ::dh, ::dw]
    return win.transpose(0, 1, 2, 4, 5, 3)


def matmul_exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer ``a @ b`` computed exactly: float64 BLAS is exact while partial sums stay below 2**53."""
    bound = float(np.abs(a).max(initial=0)) * float(np.abs(b).max(initial=0)) * a.shape[-1]
    if bound < 2.0 ** 52:
        return np.rint(np.matmul(a.astype(np.float64), b.astype(np.float64))).astype(np.int64)
    return np.matmul(a.astype(np.int64), b.astype(np.int64))


def max_pool_windows(x: np.ndarray, kernel, stride, padding, dilation) -> np.ndarray:
    """Max over windows; padded positions never win (padded with the dtype's minimum)."""
    low = np.finfo(x.dtype).min if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    return windows(x, kernel, stride, padding, dilation, pad_value=low).max(axis=(3, 4))


def broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(np.broadcast_shapes(a, b))


def erf(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf as _erf
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn here
        return np.vectorize(math.erf)(x)
    return _erf(x)


def float_activation(name: str, x: np.ndarray) -> np.ndarray:
    """The float unary activations the frontend emits (also used to build int8 lookup tables)."""
    x = np.asarray(x, dtype=np.float64)
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "relu6":
        return np.clip(x, 0.0, 6.0)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    if name == "gelu":
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "tanh":
        return np.tanh(x)
    if name == "hardswish":
        return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0
    if name == "hardsigmoid":
        return np.clip(x / 6.0 + 0.5, 0.0, 1.0)
    raise ValueError(f"unknown activation {name!r}")
