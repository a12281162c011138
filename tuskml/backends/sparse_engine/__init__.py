"""SparseEngine: int8 (block-sparse) inference for microcontrollers. See README.md in this folder.

Importing this package imports nothing heavy; torch is imported only by ``frontend``/``pruning``/
``pipeline`` and tinygrad only by ``tinygrad_backend``.
"""
