"""Fully-connected kernels (portable, DSP, block-sparse BRL) bit-exact vs the integer formula."""

from __future__ import annotations

import numpy as np
import pytest
from _numpy_twins import fully_connected
from hypothesis import given, settings
from hypothesis import strategies as st

from tuskml.backends.sparse_engine.fixedpoint import quantize_multipliers
from tuskml.backends.sparse_engine.sparse_format import BlockRunLengthMatrix


def random_fc_case(seed: int, rows: int, k: int, o: int, block: int = 0, density: float = 1.0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(rows, k), dtype=np.int8)
    w = rng.integers(-127, 128, size=(o, k), dtype=np.int8)
    if block:
        kp = -(-k // block) * block
        keep = rng.random((o, kp // block)) < density
        mask = np.repeat(keep, block, axis=1)[:, :k]
        w = np.where(mask, w, 0).astype(np.int8)
    bias = rng.integers(-5000, 5000, size=o, dtype=np.int32)
    mult, shift = quantize_multipliers(rng.uniform(1e-4, 0.02, size=o) * (rng.random(o) < 0.95))
    in_zp = int(rng.integers(-128, 128))
    out_zp = int(rng.integers(-20, 20))
    return x, w, bias, mult, shift, in_zp, out_zp


SHAPES = dict(rows=st.integers(1, 4), k=st.integers(1, 70), o=st.integers(1, 17), seed=st.integers(0, 2**31))


@settings(max_examples=60, deadline=None)
@given(**SHAPES, act=st.sampled_from([(-128, 127), (-5, 127), (-5, 60)]))
def test_dense_portable_and_dsp_match_formula(kernels, rows, k, o, seed, act):
    x, w, bias, mult, shift, in_zp, out_zp = random_fc_case(seed, rows, k, o)
    expected = fully_connected(x, w, bias, mult, shift, in_zp, out_zp, *act)
    portable = kernels.fc(x, w, bias, mult, shift, in_zp, out_zp, *act, variant="portable")
    dsp = kernels.fc(x, w, bias, mult, shift, in_zp, out_zp, *act, variant="dsp")
    np.testing.assert_array_equal(portable, expected)
    np.testing.assert_array_equal(dsp, expected)


@settings(max_examples=60, deadline=None)
@given(**SHAPES, block=st.sampled_from([1, 2, 3, 4, 8, 16]), density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
       use_dsp=st.booleans())
def test_block_sparse_matches_dense_formula(kernels, rows, k, o, seed, block, density, use_dsp):
    x, w, bias, mult, shift, in_zp, out_zp = random_fc_case(seed, rows, k, o, block, density)
    brl = BlockRunLengthMatrix.encode(w, block)
    expected = fully_connected(x, w, bias, mult, shift, in_zp, out_zp)
    got = kernels.fc(x, None, bias, mult, shift, in_zp, out_zp, brl=brl, use_dsp=use_dsp)
    np.testing.assert_array_equal(got, expected)


def test_extreme_accumulators_and_no_bias(kernels):
    """All inputs at -128 with zero point 127 and weights at +-127: the largest |x - zp| products."""
    k, o = 64, 8
    x = np.full((2, k), -128, np.int8)
    w = np.where(np.arange(o)[:, None] % 2 == 0, 127, -127) * np.ones((o, k), np.int8)
    w = w.astype(np.int8)
    mult, shift = quantize_multipliers(np.full(o, 1e-5))
    for variant in ("portable", "dsp"):
        got = kernels.fc(x, w, None, mult, shift, 127, 3, variant=variant)
        np.testing.assert_array_equal(got, fully_connected(x, w, None, mult, shift, 127, 3))


@pytest.mark.parametrize("block", [4, 8])
def test_sparse_kernel_never_reads_past_k(kernels, block):
    """K not a multiple of the block: the padded tail block must not pull in bytes after x[K-1]."""
    k, o = 10, 3
    rng = np.random.default_rng(1)
    w = rng.integers(-127, 128, size=(o, k), dtype=np.int8)
    mult, shift = quantize_multipliers(np.full(o, 0.01))
    buf = np.full((1, 16), 100, np.int8)  # bytes after K are poison (100)
    x = buf[:, :k].copy()
    brl = BlockRunLengthMatrix.encode(w, block)
    expected = fully_connected(x, w, None, mult, shift, -3, 0)
    for use_dsp in (True, False):
        got = kernels.fc(x, None, None, mult, shift, -3, 0, brl=brl, use_dsp=use_dsp)
        np.testing.assert_array_equal(got, expected)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), use_brl=st.booleans())
def test_requant_row_slow_paths(kernels, seed, use_brl):
    """Positive shifts (left shift with int32 saturation) and an INT32_MIN multiplier go through the
    general requant path of the DSP / BRL kernels; results still match the spec."""
    rng = np.random.default_rng(seed)
    k, o = 24, 8
    x = rng.integers(-128, 128, size=(2, k), dtype=np.int8)
    w = rng.integers(-127, 128, size=(o, k), dtype=np.int8)
    bias = rng.integers(-(2**20), 2**20, size=o, dtype=np.int32)
    mult = rng.integers(2**30, 2**31 - 1, size=o).astype(np.int32)
    mult[0] = np.iinfo(np.int32).min
    mult[1] = -(2**30)
    shift = rng.integers(-3, 12, size=o).astype(np.int32)
    expected = fully_connected(x, w, bias, mult, shift, 5, -7)
    if use_brl:
        got = kernels.fc(x, None, bias, mult, shift, 5, -7, brl=BlockRunLengthMatrix.encode(w, 8), use_dsp=True)
    else:
        got = kernels.fc(x, w, bias, mult, shift, 5, -7, variant="dsp")
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(kernels.fc(x, w, bias, mult, shift, 5, -7, variant="portable"), expected)
