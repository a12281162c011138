"""The ``c`` engine backend object: generate -> build -> run, outputs read back as int8.

    backend = tuskml.create("engine_backend", "c", use_dsp=True, target="host")
    result = backend.run(graph, x_int8, plan=plan)      # plan optional (no-reuse layout if absent)

On the host the build runs natively on any number of graph batches. On a Cortex-M target the
inputs are compiled into the firmware as its test data, the firmware runs in the unicorn emulator
(tuskml.mcu_targets), the outputs are read back from ``tk_test_outputs`` and ``instructions`` holds
the exact instruction count of every ``tk_layer_<i>`` function (inclusive) and of ``tk_invoke``.
"""

from __future__ import annotations

import hashlib
import pathlib
import tempfile
from typing import Any

import numpy as np

from tuskml.backends.c.codegen import CProject, generate_c_project
from tuskml.backends.c.configs import CBackendConfig
from tuskml.backends.c.host import CRunError, build_project, cache_dir, run_project


def _graph_batches(graph: Any, inputs_int8: Any) -> tuple[np.ndarray, int]:
    """Inputs -> ``[chunks, input_bytes]`` int8 (graph inputs concatenated per graph batch), chunks."""
    arrays = list(inputs_int8) if isinstance(inputs_int8, (list, tuple)) else [inputs_int8]
    if len(arrays) != len(graph.inputs):
        raise CRunError(f"graph {graph.name!r} has {len(graph.inputs)} inputs, got {len(arrays)} arrays")
    chunks = None
    parts = []
    for name, arr in zip(graph.inputs, arrays):
        x = np.asarray(arr)
        t = graph.tensors[name]
        if x.dtype != np.int8:
            raise CRunError(f"input {name!r} must be int8, got {x.dtype}")
        if tuple(x.shape[1:]) != tuple(t.shape[1:]) or x.shape[0] % t.shape[0]:
            raise CRunError(f"input {name!r} has shape {list(x.shape)}; the graph expects "
                            f"[k*{t.shape[0]}, {', '.join(map(str, t.shape[1:]))}] (graph layout, NHWC for images)")
        n = x.shape[0] // t.shape[0]
        if chunks is not None and n != chunks:
            raise CRunError("graph inputs hold different numbers of samples")
        chunks = n
        parts.append(np.ascontiguousarray(x).reshape(n, -1))
    return np.concatenate(parts, axis=1), int(chunks or 0)


class CBackend:
    """The ``c`` engine backend (see the module docstring)."""

    name = "c"

    def __init__(self, config: CBackendConfig | None = None):
        self.config = config or CBackendConfig()
        self.last_project: CProject | None = None

    def generate(self, graph: Any, out_dir: str | pathlib.Path, *, plan: Any = None,
                 test_inputs: np.ndarray | None = None, expected_outputs: np.ndarray | None = None) -> CProject:
        if plan is None:
            from tuskml.backends.sparse_engine.memory_plan import plan_memory

            plan = plan_memory(graph)
        return generate_c_project(graph, plan, out_dir, use_dsp=self.config.use_dsp, test_inputs=test_inputs,
                                  expected_outputs=expected_outputs)

    def run(self, graph: Any, inputs_int8: Any, *, plan: Any = None, **kw: Any):
        from tuskml.backends.sparse_engine.backend_api import BackendRun, check_no_extra_kwargs

        check_no_extra_kwargs(self.name, kw)
        data, chunks = _graph_batches(graph, inputs_int8)
        out_t = graph.tensors[graph.outputs[0]]
        if self.config.target == "host":
            with tempfile.TemporaryDirectory(prefix="tk_c_", dir=cache_dir()) as tmp:
                project = self.generate(graph, tmp, plan=plan)
                exe = build_project(project.directory)
            self.last_project = project
            raw = run_project(exe, data, output_bytes=project.output_bytes, input_bytes=project.input_bytes)
            instructions = None
        else:
            raw, instructions, project = self._run_emulated(graph, data, plan)
        first = raw[:, :out_t.size].reshape(chunks * out_t.shape[0], *out_t.shape[1:])
        return BackendRun(outputs=first, instructions=instructions)

    def _run_emulated(self, graph: Any, data: np.ndarray, plan: Any):
        from tuskml.mcu_targets.emulators import run_unicorn
        from tuskml.mcu_targets.targets import get_target
        from tuskml.mcu_targets.toolchains import build

        target = get_target(self.config.target)
        key = hashlib.sha256(data.tobytes()).hexdigest()[:8]
        work = pathlib.Path(tempfile.mkdtemp(prefix=f"tk_c_{target.name}_{key}_", dir=cache_dir()))
        project = self.generate(graph, work / "src", plan=plan, test_inputs=data)
        result = build(target, project.firmware_sources, include_dirs=project.include_dirs, out_dir=work / "build",
                       name="model")
        run = run_unicorn(result.elf, outputs={"tk_test_outputs": data.shape[0] * project.output_bytes},
                          cpu=target.cpu.name)
        if run.exit_code != 0:
            raise CRunError(f"firmware for {target.name} exited with {run.exit_code}")
        self.last_project = project
        raw = np.frombuffer(run.outputs["tk_test_outputs"], dtype=np.int8).reshape(data.shape[0], project.output_bytes)
        counts = {layer.function: int(run.per_function.get(layer.function, 0)) for layer in project.layers}
        counts["tk_invoke"] = int(run.per_function.get("tk_invoke", 0))
        return raw.copy(), counts, project


def build_c_backend(config: CBackendConfig) -> CBackend:
    return CBackend(config)
