"""fixedpoint.py is the integer specification: check it against exact rational arithmetic."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuskml.backends.sparse_engine import fixedpoint as fp

I32 = st.integers(-(2**31), 2**31 - 1)


def round_half_away(fr: Fraction) -> int:
    n = math.floor(abs(fr) + Fraction(1, 2))
    return n if fr >= 0 else -n


@given(I32, I32)
def test_srdhm_is_rounded_doubling_high_product(a, b):
    got = int(fp.saturating_rounding_doubling_high_mul(a, b))
    if a == b == -(2**31):
        assert got == 2**31 - 1
    else:
        assert got == round_half_away(Fraction(a * b, 2**31))


@given(I32, st.integers(0, 31))
def test_rounding_divide_by_pot_rounds_half_away_from_zero(x, e):
    assert int(fp.rounding_divide_by_pot(x, e)) == round_half_away(Fraction(x, 2**e))


@given(st.floats(1e-6, 1e3, allow_nan=False), st.integers(-(2**20), 2**20))
def test_quantize_multiplier_then_mbqm_is_close_to_real_product(real, x):
    m, s = fp.quantize_multiplier(real)
    assert 2**30 <= m < 2**31 and -31 <= s <= 30
    assert abs(m * 2.0 ** (s - 31) - real) <= real * 2**-30
    expect = x * real
    if abs(expect) < 2**30 and abs(x * 2.0 ** max(s, 0)) < 2**31:
        assert abs(int(fp.multiply_by_quantized_multiplier(x, m, s)) - expect) <= 1.0 + abs(expect) * 2**-29


def test_quantize_multiplier_edge_cases():
    assert fp.quantize_multiplier(0.0) == (0, 0)
    assert fp.quantize_multiplier(1e-20) == (0, 0)  # below the format: exactly zero
    m, s = fp.quantize_multiplier(-0.3)
    assert m < 0 and abs(m * 2.0 ** (s - 31) + 0.3) < 1e-9
    m, s = fp.quantize_multiplier(0.5)
    assert (m, s) == (2**30, 0)
    # values that round up to 2**31 renormalise
    m, s = fp.quantize_multiplier(1.0 - 2.0**-40)
    assert (m, s) == (2**30, 1)
    with pytest.raises(fp.FixedPointError, match="too large"):
        fp.quantize_multiplier(2.0**40)
    with pytest.raises(fp.FixedPointError, match="non-finite"):
        fp.quantize_multiplier(float("nan"))


def test_mbqm_identity_and_saturation():
    x = np.array([-128, -1, 0, 1, 127, 2**20])
    assert np.array_equal(fp.multiply_by_quantized_multiplier(x, 2**30, 1), x)  # the documented identity
    # a left shift that overflows int32 saturates instead of wrapping
    big = int(fp.multiply_by_quantized_multiplier(2**30, 2**31 - 1, 3))  # 2**33 saturates to 2**31 - 1
    assert big == round_half_away(Fraction((2**31 - 1) * (2**31 - 1), 2**31))
    assert int(fp.multiply_by_quantized_multiplier(-(2**30), 2**31 - 1, 3)) == round_half_away(
        Fraction(-(2**31) * (2**31 - 1), 2**31))
    with pytest.raises(fp.FixedPointError, match="outside int32"):
        fp.multiply_by_quantized_multiplier(np.array([2**31]), 2**30, 0)


@given(st.integers(-(2**40), 2**40), st.integers(1, 2**20))
def test_div_round(a, b):
    assert int(fp.div_round(a, b)) == round_half_away(Fraction(a, b))


@given(st.integers(0, 2**31 - 1))
def test_isqrt_both_algorithms_are_floor_sqrt(n):
    assert int(fp.isqrt(n)) == math.isqrt(n) == fp.isqrt_bitwise(n)


def test_isqrt_rejects_out_of_range():
    with pytest.raises(fp.FixedPointError):
        fp.isqrt(np.array([-1]))


@settings(max_examples=30)
@given(st.lists(st.integers(-128, 127), min_size=1, max_size=64), st.floats(0.01, 0.5))
def test_softmax_int_close_to_float_softmax(row, scale):
    x = np.array(row)
    table = fp.build_exp_table(scale)
    y = fp.softmax_int(x[None], table)[0]
    f = np.exp((x - x.max()) * scale)
    f /= f.sum()
    got = (y.astype(np.float64) + 128) / 256
    assert np.abs(got - f).max() <= 1.5 / 256 + 2**-15 * len(row)


def test_softmax_row_length_limit():
    with pytest.raises(fp.FixedPointError, match="row length"):
        fp.softmax_int(np.zeros((1, fp.SOFTMAX_MAX_LEN + 1), np.int64), fp.build_exp_table(0.1))


@settings(max_examples=30)
@given(st.integers(2, 96), st.integers(0, 2**31 - 1), st.floats(0.02, 0.2))
def test_layer_norm_int_close_to_float(c, seed, x_scale):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(3, c))
    x_zp = int(rng.integers(-20, 20))
    gamma = rng.uniform(-1.5, 1.5, c)
    beta = rng.uniform(-0.5, 0.5, c)
    y_scale, y_zp = 6.0 / 255, -3
    mult, shift = fp.quantize_multipliers(gamma / (y_scale * 2**fp.LAYER_NORM_Z_BITS))
    beta_q = np.floor(beta / y_scale + 0.5).astype(np.int32)
    y = fp.layer_norm_int(x, x_zp, 0, mult, shift, beta_q, y_zp)
    xf = (x - x_zp) * x_scale
    mu = xf.mean(-1, keepdims=True)
    sd = np.sqrt(((xf - mu) ** 2).mean(-1, keepdims=True))
    ok = sd[:, 0] > 2 * x_scale  # near-constant rows are dominated by input rounding
    ref = np.clip((xf - mu) / np.where(sd > 0, sd, 1) * gamma + beta, (-128 - y_zp) * y_scale, (127 - y_zp) * y_scale)
    got = (y.astype(np.float64) - y_zp) * y_scale
    err = np.abs(got - ref)[ok]
    # input rounding (0.5 LSB of x, relative to sd) + 2 output LSB
    bound = (0.5 * x_scale / sd[ok] + 0.02) * np.abs(gamma).max() * (np.abs((xf - mu) / np.where(sd > 0, sd, 1))[ok] + 1) + 2 * y_scale
    assert np.all(err <= bound)


def test_lut_table():
    table = fp.build_lut(lambda v: np.maximum(v, 0), 0.1, -10, 0.1, -128)
    assert table.dtype == np.int8 and table.shape == (256,)
    q = np.arange(-128, 128)
    assert np.array_equal(fp.apply_lut(q, table), np.clip(np.maximum(q + 10, 0) - 128, -128, 127))
