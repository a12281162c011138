"""Block run-length format: round trip, documented layout, encoded size, kernel-style walk."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuskml.backends.sparse_engine.sparse_format import BlockRunLengthMatrix, SparseFormatError


def sparse_matrix(rng, o, k, b, density):
    kp = -(-k // b) * b
    blocks = rng.random((o, kp // b)) < density
    w = rng.integers(-127, 128, size=(o, kp)).astype(np.int8)
    w[w == 0] = 1
    w = w * np.repeat(blocks, b, axis=1)
    return w[:, :k].astype(np.int8)


@settings(max_examples=60, deadline=None)
@given(o=st.integers(1, 20), k=st.integers(1, 70), b=st.sampled_from([1, 2, 3, 4, 8, 16]),
       density=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_round_trip_size_and_matvec(o, k, b, density, seed):
    rng = np.random.default_rng(seed)
    w = sparse_matrix(rng, o, k, b, density)
    brl = BlockRunLengthMatrix.encode(w, b)
    assert np.array_equal(brl.decode(), w)
    assert brl.nbytes == 2 * o + brl.nnzb * (2 + b)
    assert brl.row_nnzb.dtype == np.uint16 and brl.runs.dtype == np.uint16 and brl.values.dtype == np.int8
    assert brl.values.size == brl.nnzb * b and int(brl.row_nnzb.sum()) == brl.nnzb
    x = rng.integers(-255, 256, size=k)
    assert np.array_equal(brl.matvec_reference(x), w.astype(np.int64) @ x)


def test_documented_example():
    w = np.zeros((2, 10), np.int8)
    w[0, 4:6] = [1, 2]  # block 2 (B=2)
    w[0, 8] = 3  # block 4
    w[1, 0] = -1  # block 0
    brl = BlockRunLengthMatrix.encode(w, 2)
    assert brl.row_nnzb.tolist() == [2, 1]
    assert brl.runs.tolist() == [2, 1, 0]  # 2 zero blocks, then 1 (block 3) after the end of block 2
    assert brl.values.tolist() == [1, 2, 3, 0, -1, 0]
    assert brl.nbytes == 4 + 3 * 4
    # K not a multiple of B: last block is padded with zeros
    brl3 = BlockRunLengthMatrix.encode(w, 3)
    assert brl3.padded_cols == 12 and np.array_equal(brl3.decode(), w)


def test_bad_input():
    with pytest.raises(SparseFormatError, match="int8"):
        BlockRunLengthMatrix.encode(np.zeros((2, 2), np.float32), 2)
    with pytest.raises(SparseFormatError, match="2-D"):
        BlockRunLengthMatrix.encode(np.zeros(4, np.int8), 2)
    with pytest.raises(SparseFormatError, match="block size"):
        BlockRunLengthMatrix.encode(np.zeros((2, 2), np.int8), 0)
