"""The C requantisation helpers equal fixedpoint.py exactly, edge values included."""

from __future__ import annotations

import ctypes as C

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tuskml.backends.sparse_engine import fixedpoint as fp

INT32 = st.integers(-(2**31), 2**31 - 1)
EDGES = st.sampled_from([-(2**31), -(2**31) + 1, -1, 0, 1, 2**30, 2**31 - 1, -(2**30)])


def _fn(kernels, name):
    f = getattr(kernels.lib, name)
    f.restype = C.c_int32
    return lambda *a: int(f(*(C.c_int32(int(v)) for v in a)))


@settings(max_examples=300, deadline=None)
@given(a=st.one_of(INT32, EDGES), b=st.one_of(INT32, EDGES))
def test_srdhm(kernels, a, b):
    assert _fn(kernels, "tk_export_srdhm")(a, b) == int(fp.saturating_rounding_doubling_high_mul(a, b))


@settings(max_examples=300, deadline=None)
@given(x=st.one_of(INT32, EDGES), e=st.integers(0, 31))
def test_rdbpot(kernels, x, e):
    assert _fn(kernels, "tk_export_rdbpot")(x, e) == int(fp.rounding_divide_by_pot(x, e))


@settings(max_examples=400, deadline=None)
@given(x=st.one_of(INT32, EDGES, st.integers(-70000, 70000)), m=st.one_of(st.integers(2**30, 2**31 - 1),
       st.integers(-(2**31) + 1, -(2**30)), EDGES), s=st.integers(-31, 30))
def test_multiply_by_quantized_multiplier(kernels, x, m, s):
    assert _fn(kernels, "tk_export_mbqm")(x, m, s) == int(fp.multiply_by_quantized_multiplier(x, m, s))


@settings(max_examples=200, deadline=None)
@given(a=st.integers(-(2**30), 2**30), b=st.integers(1, 2**20))
def test_div_round(kernels, a, b):
    assert _fn(kernels, "tk_export_div_round")(a, b) == int(fp.div_round(a, b))


def test_quantized_real_multipliers_round_trip(kernels):
    rng = np.random.default_rng(0)
    mbqm = _fn(kernels, "tk_export_mbqm")
    for real in rng.uniform(1e-6, 100.0, size=200):
        m, s = fp.quantize_multiplier(float(real))
        for x in rng.integers(-(2**20), 2**20, size=5):
            assert mbqm(x, m, s) == int(fp.multiply_by_quantized_multiplier(int(x), m, s))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), n=st.integers(1, 40))
def test_requant_row_matches_spec(kernels, data, n):
    """tk_requant_row_s8 (one folded 64-bit rounding on the usual path) equals MBQM + zp + clamp."""
    accs = np.array(data.draw(st.lists(st.one_of(INT32, EDGES, st.integers(-(2**16), 2**16)), min_size=n,
                                       max_size=n)), dtype=np.int32)
    mults = np.array(data.draw(st.lists(st.one_of(st.integers(2**30, 2**31 - 1), st.integers(-(2**31) + 1, -(2**30)),
                                                  EDGES), min_size=n, max_size=n)), dtype=np.int32)
    shifts = np.array(data.draw(st.lists(st.integers(-31, 30), min_size=n, max_size=n)), dtype=np.int32)
    zp = data.draw(st.integers(-128, 127))
    lo = data.draw(st.one_of(st.just(-128), st.integers(-128, 0)))  # -128: the SSAT full-int8 loop
    out = np.zeros(n, np.int8)
    P = C.POINTER
    kernels.lib.tk_requant_row_s8(accs.ctypes.data_as(P(C.c_int32)), C.c_int32(n), mults.ctypes.data_as(P(C.c_int32)),
                                  shifts.ctypes.data_as(P(C.c_int32)), C.c_int32(zp), C.c_int32(lo), C.c_int32(127),
                                  out.ctypes.data_as(P(C.c_int8)))
    expected = np.clip(fp.multiply_by_quantized_multiplier(accs, mults, shifts) + zp, lo, 127).astype(np.int8)
    np.testing.assert_array_equal(out, expected)


@settings(max_examples=400, deadline=None)
@given(acc=st.one_of(INT32, EDGES, st.integers(-70000, 70000)), m=st.one_of(st.integers(2**30, 2**31 - 1),
       st.integers(-(2**31) + 1, -(2**30)), EDGES.filter(lambda v: v != -(2**31))), s=st.integers(-22, -1),
       zp=st.integers(-128, 127), lo=st.integers(-128, 0))
def test_fast_requant_path_equals_spec_after_int8_clamp(kernels, acc, m, s, zp, lo):
    """tk_requant_fast_q (QADD-based RDBPOT) + zp + clamp equals MBQM + zp + clamp for every int8 range;
    the unclamped value may differ by one only where both clamp to act_max."""
    q = _fn(kernels, "tk_export_requant_fast_q")(acc, m, s)
    spec = int(fp.multiply_by_quantized_multiplier(acc, m, s))
    assert min(max(q + zp, lo), 127) == min(max(spec + zp, lo), 127)
    assert q == spec or (q == spec - 1 and spec == 2 ** (31 + s))
