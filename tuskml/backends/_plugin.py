"""Hookimpls of the built-in ``sparseengine`` plugin: engine backends (reference, c, tinygrad)."""

from __future__ import annotations

from tuskml.core.hookspecs import hookimpl
from tuskml.core.registry import ComponentSpec


@hookimpl
def tuskml_engine_backends():
    from tuskml.backends.sparse_engine.configs import ReferenceBackendConfig, TinygradBackendConfig

    yield ComponentSpec(name="reference", factory="tuskml.backends.sparse_engine.backends:build_reference",
                        config_cls=ReferenceBackendConfig,
                        description="golden numpy integer executor of the SparseEngine IR (bit-exact by definition)")
    yield ComponentSpec(name="tinygrad", factory="tuskml.backends.sparse_engine.backends:build_tinygrad",
                        config_cls=TinygradBackendConfig,
                        description="the integer IR executed with tinygrad tensors, a cross-check of reference")
    from tuskml.backends.c.configs import CBackendConfig

    yield ComponentSpec(name="c", factory="tuskml.backends.c.backend:build_c_backend", config_cls=CBackendConfig,
                        description="generated C99 (dense portable/DSP and block-sparse kernels), run on the host "
                                    "or an emulated Cortex-M")
