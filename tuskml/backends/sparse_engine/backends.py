"""Factories of the ``reference`` and ``tinygrad`` engine backends (see ``backend_api.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tuskml.backends.sparse_engine.backend_api import BackendRun, check_no_extra_kwargs
from tuskml.backends.sparse_engine.configs import ReferenceBackendConfig, TinygradBackendConfig
from tuskml.backends.sparse_engine.ir import Graph


class ReferenceBackend:
    """Golden integer executor (numpy); bit-exact by definition."""

    name = "reference"

    def __init__(self, config: ReferenceBackendConfig | None = None):
        self.config = config or ReferenceBackendConfig()

    def run(self, graph: Graph, inputs_int8: np.ndarray, **kw: Any) -> BackendRun:
        from tuskml.backends.sparse_engine.reference import run_integer

        check_no_extra_kwargs(self.name, kw)
        values = run_integer(graph, inputs_int8)
        return BackendRun(outputs=values[graph.outputs[0]], instructions=None)


class TinygradBackend:
    """The same integer graph executed with tinygrad tensors (independent cross-check)."""

    name = "tinygrad"

    def __init__(self, config: TinygradBackendConfig | None = None):
        self.config = config or TinygradBackendConfig()

    def run(self, graph: Graph, inputs_int8: np.ndarray, **kw: Any) -> BackendRun:
        from tuskml.backends.sparse_engine.tinygrad_backend import run_tinygrad

        check_no_extra_kwargs(self.name, kw)
        return BackendRun(outputs=run_tinygrad(graph, inputs_int8, device=self.config.device), instructions=None)


def build_reference(config: ReferenceBackendConfig) -> ReferenceBackend:
    return ReferenceBackend(config)


def build_tinygrad(config: TinygradBackendConfig) -> TinygradBackend:
    return TinygradBackend(config)
