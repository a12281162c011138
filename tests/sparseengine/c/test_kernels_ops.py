"""Every non-FC kernel bit-exact vs the integer semantics of ir.py (built from fixedpoint.py)."""

from __future__ import annotations

import numpy as np
from _numpy_twins import conv2d, requant
from hypothesis import given, settings
from hypothesis import strategies as st

from tuskml.backends.sparse_engine import fixedpoint as fp
from tuskml.backends.sparse_engine.fixedpoint import multiply_by_quantized_multiplier as mbqm
from tuskml.backends.sparse_engine.fixedpoint import quantize_multiplier, quantize_multipliers
from tuskml.backends.sparse_engine.sparse_format import BlockRunLengthMatrix

seeds = st.integers(0, 2**31)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, h=st.integers(1, 7), w=st.integers(1, 7), c=st.integers(1, 9), oc=st.integers(1, 6),
       k=st.sampled_from([(1, 1), (3, 3), (2, 3), (5, 5)]), stride=st.sampled_from([(1, 1), (2, 2), (1, 2)]),
       pad=st.sampled_from([(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 2)]), dil=st.sampled_from([(1, 1), (2, 1)]))
def test_conv2d_portable_dsp_and_depthwise(kernels, seed, h, w, c, oc, k, stride, pad, dil):
    kh, kw = k
    if h + pad[0] + pad[2] < dil[0] * (kh - 1) + 1 or w + pad[1] + pad[3] < dil[1] * (kw - 1) + 1:
        return  # no output position
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(2, h, w, c), dtype=np.int8)
    in_zp, out_zp = int(rng.integers(-128, 128)), int(rng.integers(-10, 10))
    weight = rng.integers(-127, 128, size=(oc, kh, kw, c), dtype=np.int8)
    bias = rng.integers(-3000, 3000, size=oc, dtype=np.int32)
    mult, shift = quantize_multipliers(rng.uniform(1e-4, 1e-2, size=oc))
    q = dict(stride=stride, padding=pad, dilation=dil, in_zp=in_zp, out_zp=out_zp)
    expected = conv2d(x, weight, bias, mult, shift, **q)
    np.testing.assert_array_equal(kernels.conv(x, weight, bias, mult, shift, **q, variant="portable"), expected)
    np.testing.assert_array_equal(kernels.conv(x, weight, bias, mult, shift, **q, variant="dsp"), expected)
    dw = rng.integers(-127, 128, size=(kh, kw, c), dtype=np.int8)
    dbias = rng.integers(-3000, 3000, size=c, dtype=np.int32)
    dmult, dshift = quantize_multipliers(rng.uniform(1e-3, 5e-2, size=c))
    expected_dw = conv2d(x, dw, dbias, dmult, dshift, **q, lo=0, hi=100, depthwise=True)
    got_dw = kernels.conv(x, dw, dbias, dmult, dshift, **q, act_min=0, act_max=100, depthwise=True)
    np.testing.assert_array_equal(got_dw, expected_dw)
    if expected_dw.shape[1] * expected_dw.shape[2] <= h * w:  # in place is legal when the output is not larger
        got_inplace = kernels.conv(x, dw, dbias, dmult, dshift, **q, act_min=0, act_max=100, depthwise=True,
                                   in_place=True)
        np.testing.assert_array_equal(got_inplace, expected_dw)
    # block-sparse conv (patch embedding style): same result as the dense formula
    block = int(rng.choice([1, 3, 4, 8]))
    sparse_w = weight.reshape(oc, -1).copy()
    kp = -(-sparse_w.shape[1] // block) * block
    keep = np.repeat(rng.random((oc, kp // block)) < 0.4, block, axis=1)[:, :sparse_w.shape[1]]
    sparse_w = np.where(keep, sparse_w, 0).astype(np.int8)
    brl = BlockRunLengthMatrix.encode(sparse_w, block)
    expected_sparse = conv2d(x, sparse_w.reshape(weight.shape), bias, mult, shift, **q)
    for use_dsp in (True, False):
        got = kernels.conv(x, weight, bias, mult, shift, **q, brl=brl, use_dsp=use_dsp)
        np.testing.assert_array_equal(got, expected_sparse)


@settings(max_examples=30, deadline=None)
@given(seed=seeds, h=st.integers(2, 8), w=st.integers(2, 8), c=st.integers(1, 5), k=st.integers(1, 3),
       s=st.integers(1, 2), pad=st.integers(0, 1))
def test_pools(kernels, seed, h, w, c, k, s, pad):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(1, h, w, c), dtype=np.int8)
    if k > min(h, w):
        return
    zp = int(rng.integers(-128, 128))
    mult, shift = quantize_multiplier(float(rng.uniform(0.5, 1.5)) / (k * k))
    got = kernels.pool(x, kind="avg", kernel=(k, k), stride=(s, s), in_zp=zp, out_zp=-3, mult=mult, shift=shift)
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    acc = np.zeros((1, oh, ow, c), np.int64)
    for i in range(k):
        for j in range(k):
            acc += x[:, i:i + (oh - 1) * s + 1:s, j:j + (ow - 1) * s + 1:s].astype(np.int64) - zp
    np.testing.assert_array_equal(got, requant(acc, mult, shift, -3))
    # max pool with padding: padded positions are ignored
    if k <= pad:
        return
    got = kernels.pool(x, kind="max", kernel=(k, k), stride=(s, s), padding=(pad, pad, pad, pad))
    xp = np.full((1, h + 2 * pad, w + 2 * pad, c), -1000, np.int64)
    xp[:, pad:pad + h, pad:pad + w] = x
    oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    best = np.full((1, oh, ow, c), -1000, np.int64)
    for i in range(k):
        for j in range(k):
            best = np.maximum(best, xp[:, i:i + (oh - 1) * s + 1:s, j:j + (ow - 1) * s + 1:s])
    np.testing.assert_array_equal(got, best.astype(np.int8))


@settings(max_examples=25, deadline=None)
@given(seed=seeds, shape=st.lists(st.integers(1, 5), min_size=2, max_size=4), data=st.data())
def test_mean_over_axes(kernels, seed, shape, data):
    axes = tuple(sorted(data.draw(st.sets(st.integers(0, len(shape) - 1), min_size=1))))
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=shape, dtype=np.int8)
    count = int(np.prod([shape[a] for a in axes]))
    mult, shift = quantize_multiplier(float(rng.uniform(0.5, 2.0)) / count)
    got = kernels.mean(x, axes, in_zp=5, out_zp=-7, mult=mult, shift=shift)
    acc = (x.astype(np.int64) - 5).sum(axis=axes)
    np.testing.assert_array_equal(got, requant(acc, mult, shift, -7).reshape(-1))


def _broadcast_pair(rng, shape):
    a_shape = [d if rng.random() < 0.7 else 1 for d in shape]
    b_shape = [d if rng.random() < 0.7 else 1 for d in shape]
    return (rng.integers(-128, 128, size=a_shape, dtype=np.int8), rng.integers(-128, 128, size=b_shape, dtype=np.int8))


@settings(max_examples=40, deadline=None)
@given(seed=seeds, shape=st.lists(st.integers(1, 5), min_size=1, max_size=5))
def test_add_and_mul_with_broadcasting(kernels, seed, shape):
    rng = np.random.default_rng(seed)
    a, b = _broadcast_pair(rng, shape)
    a_zp, b_zp, y_zp = (int(v) for v in rng.integers(-128, 128, size=3))
    m1, s1 = quantize_multiplier(float(rng.uniform(0.1, 0.5)))
    m2, s2 = quantize_multiplier(float(rng.uniform(0.1, 0.5)))
    mo, so = quantize_multiplier(float(rng.uniform(0.5, 2.0)) / (1 << 20))
    got = kernels.binary("add", a, b, a_zp=a_zp, b_zp=b_zp, out_zp=y_zp, left_shift=20, a_multiplier=m1,
                         a_shift=s1, b_multiplier=m2, b_shift=s2, out_multiplier=mo, out_shift=so, act_min=-128,
                         act_max=127)
    sa = mbqm((a.astype(np.int64) - a_zp) << 20, m1, s1)
    sb = mbqm((b.astype(np.int64) - b_zp) << 20, m2, s2)
    np.testing.assert_array_equal(got, requant(sa + sb, mo, so, y_zp))
    mm, ms = quantize_multiplier(float(rng.uniform(1e-4, 1e-2)))
    got = kernels.binary("mul", a, b, a_zp=a_zp, b_zp=b_zp, out_zp=y_zp, out_multiplier=mm, out_shift=ms,
                         act_min=-20, act_max=127)
    prod = (a.astype(np.int64) - a_zp) * (b.astype(np.int64) - b_zp)
    np.testing.assert_array_equal(got, requant(prod, mm, ms, y_zp, -20, 127))


@settings(max_examples=30, deadline=None)
@given(seed=seeds, n=st.integers(1, 300), real=st.floats(1e-3, 60.0))
def test_requantize_and_lut(kernels, seed, n, real):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=n, dtype=np.int8)
    m, s = quantize_multiplier(real)
    np.testing.assert_array_equal(kernels.requantize(x, 3, -9, m, s), requant(x.astype(np.int64) - 3, m, s, -9))
    table = rng.integers(-128, 128, size=256, dtype=np.int8)
    np.testing.assert_array_equal(kernels.lut(x, table), fp.apply_lut(x, table))


@settings(max_examples=40, deadline=None)
@given(seed=seeds, rows=st.integers(1, 4), c=st.integers(1, 200), spread=st.sampled_from([0, 1, 3, 255]))
def test_layer_norm(kernels, seed, rows, c, spread):
    rng = np.random.default_rng(seed)
    base = int(rng.integers(-128, 128))
    x = np.clip(base + rng.integers(-spread, spread + 1, size=(rows, c)), -128, 127).astype(np.int8)
    mult, shift = quantize_multipliers(rng.uniform(-2, 2, size=c) / (0.05 * 2**11))
    beta = rng.integers(-50, 50, size=c).astype(np.int32)
    eps_q, x_zp, y_zp = int(rng.integers(0, 5)), int(rng.integers(-128, 128)), int(rng.integers(-5, 5))
    expected = fp.layer_norm_int(x, x_zp, eps_q, mult, shift, beta, y_zp)
    q = dict(in_zp=x_zp, out_zp=y_zp, eps_q=eps_q, mult=mult, shift=shift, beta_q=beta)
    np.testing.assert_array_equal(kernels.layer_norm(x, **q), expected)
    np.testing.assert_array_equal(kernels.layer_norm(x, **q, in_place=True), expected)


@settings(max_examples=40, deadline=None)
@given(n=st.one_of(st.integers(0, 4096), st.integers(0, 2**31 - 1)))
def test_isqrt_matches_spec(kernels, n):
    assert kernels.isqrt(n) == fp.isqrt_bitwise(n) == int(fp.isqrt(n))


@settings(max_examples=40, deadline=None)
@given(seed=seeds, rows=st.integers(1, 5), length=st.integers(1, 300), scale=st.floats(0.001, 0.5))
def test_softmax(kernels, seed, rows, length, scale):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(rows, length), dtype=np.int8)
    table = fp.build_exp_table(scale)
    np.testing.assert_array_equal(kernels.softmax(x, table), fp.softmax_int(x, table))


@settings(max_examples=40, deadline=None)
@given(seed=seeds, batch=st.integers(1, 3), m=st.integers(1, 9), k=st.integers(1, 40), n=st.integers(1, 9))
def test_batch_matmul_portable_and_dsp(kernels, seed, batch, m, k, n):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, size=(batch, m, k), dtype=np.int8)
    b = rng.integers(-128, 128, size=(batch, k, n), dtype=np.int8)
    a_zp, b_zp, y_zp = (int(v) for v in rng.integers(-128, 128, size=3))
    mult, shift = quantize_multiplier(float(rng.uniform(1e-5, 1e-3)))
    acc = (a.astype(np.int64) - a_zp) @ (b.astype(np.int64) - b_zp)
    expected = requant(acc, mult, shift, y_zp)
    for variant in ("portable", "dsp"):
        got = kernels.batch_matmul(a, b, a_zp=a_zp, b_zp=b_zp, out_zp=y_zp, mult=mult, shift=shift, variant=variant)
        np.testing.assert_array_equal(got, expected)


@settings(max_examples=30, deadline=None)
@given(seed=seeds, shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), n_in=st.integers(1, 3), data=st.data())
def test_concat_with_requant_and_identity(kernels, seed, shape, n_in, data):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(0, len(shape) - 1))
    xs, zps, mults, shifts = [], [], [], []
    for i in range(n_in):
        s = list(shape)
        s[axis] = int(rng.integers(1, 4))
        xs.append(rng.integers(-128, 128, size=s, dtype=np.int8))
        if i == 0:
            zps.append(4)
            mults.append(1 << 30)
            shifts.append(1)  # exact identity: the memcpy fast path
        else:
            m, sh = quantize_multiplier(float(rng.uniform(0.2, 3.0)))
            zps.append(int(rng.integers(-128, 128)))
            mults.append(m)
            shifts.append(sh)
    got = kernels.concat(xs, axis, zps, mults, shifts, 4)
    parts = [requant(x.astype(np.int64) - z, m, s, 4) for x, z, m, s in zip(xs, zps, mults, shifts)]
    np.testing.assert_array_equal(got, np.concatenate(parts, axis=axis))


@settings(max_examples=30, deadline=None)
@given(seed=seeds, shape=st.lists(st.integers(1, 5), min_size=1, max_size=6), data=st.data())
def test_transpose(kernels, seed, shape, data):
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    x = np.random.default_rng(seed).integers(-128, 128, size=shape, dtype=np.int8)
    np.testing.assert_array_equal(kernels.transpose(x, perm), x.transpose(perm))
