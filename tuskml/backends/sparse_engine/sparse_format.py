"""Block run-length (BRL) encoding of an int8 weight matrix, the engine's sparse weight format.

A matrix ``W[O][K]`` is cut into blocks of ``B`` consecutive input columns (``1 x B`` blocks along
the input dimension; ``K`` is padded with zero columns up to ``Kp = ceil(K / B) * B``). A block is
*zero* when all its ``B`` values are 0. Per output row we store only the non-zero blocks, each
preceded by the number of zero blocks skipped to reach it:

* ``row_nnzb``  uint16 ``[O]``   : number of stored (non-zero) blocks in each row;
* ``runs``      uint16 ``[nnzb]``: for each stored block, the zero blocks skipped before it, counted
  from the end of the previous stored block of the same row (or from the row start);
* ``values``    int8 ``[nnzb*B]``: the dense values of the stored blocks, row by row.

A kernel walks a row as::

    const int8_t *xp = x;                       /* input row, K values */
    for (b = 0; b < row_nnzb[o]; ++b) {
        xp += runs[r++] * B;                    /* skip zero blocks */
        acc += dot(xp, values + v, B);          /* dense block */
        xp += B; v += B;
    }

Encoded size ``nbytes = 2*O + nnzb*(2 + B)`` is what flash budgets count (values + indices).
"""

from __future__ import annotations

import attrs
import numpy as np

from tuskml.core.errors import TuskmlError


class SparseFormatError(TuskmlError):
    """A matrix or block size that the BRL format cannot represent."""


@attrs.frozen(kw_only=True, eq=False)
class BlockRunLengthMatrix:
    """An int8 matrix ``[rows, cols]`` stored as block run-length (see the module docstring)."""

    rows: int
    cols: int
    block: int
    row_nnzb: np.ndarray  # uint16 [rows]
    runs: np.ndarray  # uint16 [nnzb]
    values: np.ndarray  # int8 [nnzb * block]

    @property
    def padded_cols(self) -> int:
        return -(-self.cols // self.block) * self.block

    @property
    def nnzb(self) -> int:
        return int(self.runs.size)

    @property
    def total_blocks(self) -> int:
        return self.rows * (self.padded_cols // self.block)

    @property
    def block_density(self) -> float:
        """Fraction of blocks stored (1 - block sparsity)."""
        return self.nnzb / self.total_blocks if self.total_blocks else 0.0

    @property
    def nbytes(self) -> int:
        """Encoded size in bytes: ``2*rows + nnzb*(2 + block)``."""
        return 2 * self.rows + self.nnzb * (2 + self.block)

    @classmethod
    def encode(cls, matrix: np.ndarray, block: int) -> BlockRunLengthMatrix:
        """Encode an int8 ``[O, K]`` matrix with blocks of ``block`` columns."""
        w = np.asarray(matrix)
        if w.ndim != 2:
            raise SparseFormatError(f"BRL encodes a 2-D matrix, got shape {w.shape}")
        if w.dtype != np.int8:
            raise SparseFormatError(f"BRL encodes int8 matrices, got dtype {w.dtype}")
        if not isinstance(block, (int, np.integer)) or block < 1:
            raise SparseFormatError(f"block size must be a positive int, got {block!r}")
        rows, cols = w.shape
        blocks_per_row = -(-cols // block)
        if blocks_per_row > 0xFFFF:
            raise SparseFormatError(f"{blocks_per_row} blocks per row do not fit the uint16 run lengths")
        padded = np.zeros((rows, blocks_per_row * block), dtype=np.int8)
        padded[:, :cols] = w
        blocks = padded.reshape(rows, blocks_per_row, block)
        nonzero = np.any(blocks != 0, axis=2)  # [rows, blocks_per_row]
        row_nnzb = nonzero.sum(axis=1).astype(np.uint16)
        runs: list[int] = []
        for r in range(rows):
            idx = np.flatnonzero(nonzero[r])
            if idx.size:
                gaps = np.diff(np.concatenate(([-1], idx))) - 1
                runs.extend(int(g) for g in gaps)
        values = blocks[nonzero].reshape(-1)  # row-major order of (row, block)
        return cls(rows=rows, cols=cols, block=int(block), row_nnzb=row_nnzb,
                   runs=np.array(runs, dtype=np.uint16), values=values.astype(np.int8))

    def decode(self) -> np.ndarray:
        """The dense int8 ``[rows, cols]`` matrix."""
        out = np.zeros((self.rows, self.padded_cols), dtype=np.int8)
        r = 0
        for row in range(self.rows):
            col_block = 0
            for _ in range(int(self.row_nnzb[row])):
                col_block += int(self.runs[r])
                start = col_block * self.block
                out[row, start:start + self.block] = self.values[r * self.block:(r + 1) * self.block]
                col_block += 1
                r += 1
        return out[:, :self.cols]

    def matvec_reference(self, x: np.ndarray) -> np.ndarray:
        """``W @ x`` for int ``x [cols]`` walking the encoding like a kernel does (int64 result)."""
        xp = np.zeros(self.padded_cols, dtype=np.int64)
        xp[:self.cols] = x
        acc = np.zeros(self.rows, dtype=np.int64)
        r = 0
        for row in range(self.rows):
            pos = 0
            for _ in range(int(self.row_nnzb[row])):
                pos += int(self.runs[r]) * self.block
                block_vals = self.values[r * self.block:(r + 1) * self.block].astype(np.int64)
                acc[row] += int(block_vals @ xp[pos:pos + self.block])
                pos += self.block
                r += 1
        return acc


def dense_nbytes(rows: int, cols: int) -> int:
    """Bytes of the same matrix stored dense int8."""
    return rows * cols
