"""Integer arithmetic of the engine, in numpy: the *specification* the C kernels mirror line by line.

Everything an integer kernel computes is built from the functions here, using only ``+ - *``,
C-style integer division (truncating toward zero), arithmetic shifts, comparisons and table lookups,
so that a C implementation can match them bit for bit. Functions accept numpy integer arrays (or
Python ints) and compute in int64 internally; the *values* stay within int32 wherever the docstring
says int32, which is what a C kernel may rely on.

Float math appears only in the *build* helpers (``quantize_multiplier``, ``build_*_table``) that run
once at quantisation time in Python; their integer results are stored in the graph.

Rounding conventions (TFLite "double rounding", gemmlowp):
* :func:`saturating_rounding_doubling_high_mul` rounds half away from zero.
* :func:`rounding_divide_by_pot` rounds half away from zero.
* :func:`div_round` (positive divisor) rounds half away from zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tuskml.core.errors import TuskmlError

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


class FixedPointError(TuskmlError):
    """A value outside the range the integer specification allows (e.g. an int32 overflow)."""


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def saturate_int32(x) -> np.ndarray:
    return np.clip(_i64(x), INT32_MIN, INT32_MAX)


def trunc_div(a, b) -> np.ndarray:
    """C99 integer division ``a / b`` (rounds toward zero), ``b != 0``."""
    a, b = _i64(a), _i64(b)
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q)


def div_round(a, b) -> np.ndarray:
    """``a / b`` rounded half away from zero, for ``b > 0``.

    C: ``a >= 0 ? (a + b / 2) / b : -((-a + b / 2) / b)``.
    """
    a, b = _i64(a), _i64(b)
    half = b // 2
    return np.where(a >= 0, (a + half) // b, -((-a + half) // b))


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values: ``round(a * b / 2**31)``.

    C::

        if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
        int64_t ab = (int64_t)a * b;
        int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
        return (int32_t)((ab + nudge) / (1ll << 31));     /* C division truncates */
    """
    a, b = _i64(a), _i64(b)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    result = trunc_div(ab + nudge, 1 << 31)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, result)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded half away from zero, 0 <= exponent <= 31.

    C::

        int32_t mask = (int32_t)((1ll << exponent) - 1);
        int32_t remainder = x & mask;
        int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
        return (x >> exponent) + (remainder > threshold ? 1 : 0);   /* >> is arithmetic */
    """
    x, exponent = _i64(x), _i64(exponent)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier``: ``x * real`` with ``real = multiplier * 2**(shift-31)``.

    ``x`` is int32, ``multiplier`` int32 (normally in [2**30, 2**31) or its negative, or 0), ``shift``
    int in [-31, 30]. A positive shift multiplies ``x`` first (the product saturated to int32);
    a negative shift is a rounding right shift after the high multiply. C::

        int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
        int64_t xs = (int64_t)x << left;                    /* saturate to int32 */
        if (xs > INT32_MAX) xs = INT32_MAX; if (xs < INT32_MIN) xs = INT32_MIN;
        return rounding_divide_by_pot(srdhm((int32_t)xs, multiplier), right);
    """
    x = _i64(x)
    if x.size and (x.min() < INT32_MIN or x.max() > INT32_MAX):
        raise FixedPointError(f"accumulator outside int32: min {x.min()}, max {x.max()}")
    shift = _i64(shift)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = saturate_int32(x << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: ``real ~= multiplier * 2**(shift - 31)``, ``|multiplier|`` in [2**30, 2**31).

    Negative ``real`` gives a negative multiplier (used by layer norm for negative gamma). Values too
    small for the format become ``(0, 0)``; values >= 2**30 raise :class:`FixedPointError`.
    """
    if not math.isfinite(real):
        raise FixedPointError(f"cannot quantize non-finite multiplier {real}")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(abs(real))  # abs(real) = q * 2**shift, q in [0.5, 1)
    q_fixed = int(math.floor(q * (1 << 31) + 0.5))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise FixedPointError(f"multiplier {real} is too large for the int32 fixed-point format")
    return (q_fixed if real > 0 else -q_fixed), shift


def quantize_multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel :func:`quantize_multiplier` -> (int32 multipliers, int32 shifts)."""
    pairs = [quantize_multiplier(float(r)) for r in np.ravel(reals)]
    return (np.array([p[0] for p in pairs], dtype=np.int32), np.array([p[1] for p in pairs], dtype=np.int32))


def clamp_int8(x, lo: int = -128, hi: int = 127) -> np.ndarray:
    return np.clip(_i64(x), lo, hi).astype(np.int8)


def isqrt(n) -> np.ndarray:
    """``floor(sqrt(n))`` for integers ``0 <= n < 2**31``.

    Any exact algorithm gives the same value; :func:`isqrt_bitwise` is the shift-and-subtract one a
    C kernel can copy.
    """
    n = _i64(n)
    if n.size and (n.min() < 0 or n.max() > INT32_MAX):
        raise FixedPointError("isqrt argument outside [0, 2**31)")
    r = np.floor(np.sqrt(n.astype(np.float64))).astype(np.int64)
    r = np.where(r * r > n, r - 1, r)
    r = np.where((r + 1) * (r + 1) <= n, r + 1, r)
    return r


def isqrt_bitwise(n: int) -> int:
    """Scalar digit-by-digit integer square root (only shifts, adds, compares). C::

        uint32_t res = 0, bit = 1u << 30;
        while (bit > n) bit >>= 2;
        while (bit) { if (n >= res + bit) { n -= res + bit; res = (res >> 1) + bit; } else res >>= 1; bit >>= 2; }
        return res;
    """
    res, bit = 0, 1 << 30
    while bit > n:
        bit >>= 2
    while bit:
        if n >= res + bit:
            n -= res + bit
            res = (res >> 1) + bit
        else:
            res >>= 1
        bit >>= 2
    return res


# --- integer-only composite ops ---------------------------------------------------------------

#: Fractional bits of the normalised value ``z`` in :func:`layer_norm_int`.
LAYER_NORM_Z_BITS = 11
#: Largest supported layer-norm row length (keeps ``sum dev**2`` within int32).
LAYER_NORM_MAX_C = 8192
#: Fractional bits of the softmax exp table entries.
SOFTMAX_EXP_BITS = 16
#: Largest supported softmax row length (keeps the row sum within int32).
SOFTMAX_MAX_LEN = 16384
SOFTMAX_OUTPUT_SCALE = 1.0 / 256.0
SOFTMAX_OUTPUT_ZERO_POINT = -128


def layer_norm_int(x, x_zp: int, eps_q: int, multiplier, shift, beta_q, y_zp: int) -> np.ndarray:
    """Integer LayerNorm over the last axis (see the ``layer_norm`` op in ``ir.py``). Returns int8.

    Per row of length C (all values int32)::

        d[i]   = x[i] - x_zp                        # [-255, 255]
        mean   = div_round(sum(d), C)
        dev[i] = d[i] - mean                        # [-510, 510]
        var    = div_round(sum(dev*dev), C)         # sum <= 510**2 * 8192 < 2**31
        sd     = isqrt(min(var + eps_q, 131071) << 14)
        z[i]   = div_round(dev[i] << 18, max(sd, 1))
        y[i]   = clamp(MBQM(z[i], mult[i], shift[i]) + beta_q[i] + y_zp, -128, 127)
    """
    x = _i64(x)
    c = x.shape[-1]
    if c > LAYER_NORM_MAX_C:
        raise FixedPointError(f"layer_norm row length {c} > {LAYER_NORM_MAX_C}")
    d = x - x_zp
    mean = div_round(d.sum(axis=-1, keepdims=True), c)
    dev = d - mean
    var = div_round((dev * dev).sum(axis=-1, keepdims=True), c)
    sd = isqrt(np.minimum(var + eps_q, 131071) << 14)
    z = div_round(dev << 18, np.maximum(sd, 1))
    y = multiply_by_quantized_multiplier(z, multiplier, shift) + _i64(beta_q) + y_zp
    return clamp_int8(y)


def build_exp_table(x_scale: float) -> np.ndarray:
    """``table[j] = round(exp(-j * x_scale) * 2**16)``, j = 0..255, int32 (used by :func:`softmax_int`)."""
    j = np.arange(256, dtype=np.float64)
    return np.floor(np.exp(-j * float(x_scale)) * (1 << SOFTMAX_EXP_BITS) + 0.5).astype(np.int32)


def softmax_int(x, exp_table) -> np.ndarray:
    """Integer softmax over the last axis; output scale 1/256, zero point -128. Returns int8.

    Per row::

        m    = max(x)
        e[i] = exp_table[m - x[i]]          # m - x[i] in [0, 255]
        s    = sum(e)                       # >= 65536 (the max entry), <= 2**30
        y[i] = clamp(div_round(e[i] << 8, s) - 128, -128, 127)
    """
    x = _i64(x)
    if x.shape[-1] > SOFTMAX_MAX_LEN:
        raise FixedPointError(f"softmax row length {x.shape[-1]} > {SOFTMAX_MAX_LEN}")
    table = _i64(exp_table)
    m = x.max(axis=-1, keepdims=True)
    e = table[m - x]
    s = e.sum(axis=-1, keepdims=True)
    return clamp_int8(div_round(e << 8, s) - 128)


def build_lut(fn: Callable[[np.ndarray], np.ndarray], in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """The 256-entry int8->int8 table of a unary function: ``table[q + 128] = quant(fn(dequant(q)))``."""
    q = np.arange(-128, 128, dtype=np.float64)
    y = fn((q - in_zp) * in_scale)
    return clamp_int8(np.floor(y / out_scale + 0.5) + out_zp)


def apply_lut(x, table) -> np.ndarray:
    """``y = table[x + 128]``."""
    return np.asarray(table, dtype=np.int8)[_i64(x) + 128]
