"""The small protocol every engine backend implements (reference, tinygrad, c ...).

A backend is built by ``tuskml.create("engine_backend", name, **config)`` and executes an integer
:class:`~tuskml.backends.sparse_engine.ir.Graph`::

    backend = tuskml.create("engine_backend", "reference")
    result = backend.run(graph, x_int8)          # x in graph layout (NHWC for images), int8
    result.outputs                               # int8 np.ndarray: the graph's (first) output
    result.instructions                          # {"tk_layer_3": 1234, ...} or None

``instructions`` is filled only by backends that can count them (the C backend on an emulator);
keys are per-layer names, values exact instruction counts. Extra keyword arguments are
backend-specific (e.g. ``plan=``, ``target=`` for C); a backend must reject ones it does not know.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import attrs
import numpy as np

from tuskml.backends.sparse_engine.ir import Graph


@attrs.frozen(kw_only=True)
class BackendRun:
    """What :meth:`EngineBackend.run` returns."""

    outputs: np.ndarray
    instructions: dict[str, int] | None = None


@runtime_checkable
class EngineBackend(Protocol):
    """``run(graph, inputs_int8, **kw) -> BackendRun`` (``name`` for messages)."""

    name: str

    def run(self, graph: Graph, inputs_int8: np.ndarray, **kw: Any) -> BackendRun:
        ...


def check_no_extra_kwargs(backend: str, kw: dict[str, Any]) -> None:
    """Raise :class:`TypeError`-like TuskmlError for keyword arguments a backend does not take."""
    if kw:
        from tuskml.backends.sparse_engine.reference import ExecutionError

        raise ExecutionError(f"engine backend {backend!r} got unknown keyword arguments {sorted(kw)}")
