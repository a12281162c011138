"""Accuracy of the deployed int8 model measured from the emulated microcontroller's own outputs.

``tuskml tinyformer deploy`` (``deploy.py``) checks a model on a handful of compiled-in samples
and calibrates on its own inputs. The search needs more: calibration on real training images and
every test image through the device. This module runs the same stages with the same public parts
(E1's ``prepare`` with the search's per-layer sparsity and block sizes, E2's
``generate_c_project``, E3's ``build`` and ``run_unicorn``): the firmware is built once with
``chunk`` compiled-in samples, then each chunk of the test set is written into ``tk_test_inputs``
when the emulated program reaches ``main`` and the int8 logits are read back from
``tk_test_outputs``. Every chunk is compared byte for byte with SparseEngine's reference executor,
and the device accuracy is the argmax of the device's logits against the labels.
"""

from __future__ import annotations

import pathlib
from typing import Any

import attrs
import numpy as np
import torch

from tuskml.core.errors import TuskmlError


class DeviceEvalError(TuskmlError):
    """The model cannot be built or run on the target (names the step)."""


@attrs.frozen(kw_only=True)
class DeviceReport:
    target: str
    toolchain: str
    emulator: str
    bit_exact: bool
    mismatching_bytes: int
    samples: int
    device_accuracy: float
    reference_accuracy: float  # the integer reference executor on the same inputs
    flash_bytes: int  # as linked, minus the compiled-in test inputs and expected outputs
    flash_bytes_linked: int  # as linked, with the test data
    sram_bytes: int  # as linked (.data + .bss incl. arena and stack), minus the test output buffer
    estimated_flash_bytes: int
    arena_bytes: int
    instructions: int  # exact, per inference (tk_invoke), emulated
    per_layer_instructions: dict[str, int]
    sparse_layers: list[str]
    elf: str

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def run_on_device(model: torch.nn.Module, calibration: torch.Tensor, test_images: torch.Tensor,
                  test_labels: torch.Tensor, target: Any, out_dir: str | pathlib.Path, *,
                  sparsity: dict[str, float] | None = None, blocks: dict[str, int] | None = None,
                  chunk: int = 32, max_instructions_per_sample: int = 200_000_000,
                  force_format: str | None = None) -> DeviceReport:
    """Build ``model`` for ``target`` once and run all of ``test_images`` on the emulator in chunks."""
    from tuskml.backends.c.codegen import generate_c_project
    from tuskml.backends.sparse_engine.pipeline import prepare
    from tuskml.backends.sparse_engine.reference import quantize_input, run
    from tuskml.mcu_targets.emulators import run_unicorn
    from tuskml.mcu_targets.targets import get_target
    from tuskml.mcu_targets.toolchains import build

    tgt = get_target(target)
    if tgt.is_host:
        raise DeviceEvalError("device evaluation needs an MCU target (emulated Cortex-M), not the host")
    dep = prepare(model, calibration, sparsity=dict(sparsity) if sparsity else None,
                  block=dict(blocks) if blocks else 4, dsp=tgt.has_dsp, force_format=force_format)
    graph, plan = dep.graph, dep.plan
    from tuskml.backends.sparse_engine.footprint import compute_footprint

    footprint = compute_footprint(graph, plan, stack_bytes=tgt.stack_bytes)
    problem = footprint.check(flash_limit=tgt.flash_bytes, sram_limit=tgt.sram_bytes, plan=plan)
    if problem:
        raise DeviceEvalError(f"model does not fit {tgt.name}: {problem}")
    q_all = np.ascontiguousarray(quantize_input(graph, test_images.numpy()))
    ref = run(graph, q_all)
    ref_out = np.ascontiguousarray(ref.outputs[0]).reshape(len(q_all), -1).astype(np.int8)
    n = len(q_all)
    chunk = max(1, min(chunk, n))
    out = pathlib.Path(out_dir)
    project = generate_c_project(graph, plan, out / "src", use_dsp=tgt.has_dsp, test_inputs=q_all[:chunk],
                                 expected_outputs=ref_out[:chunk])
    result = build(tgt, project.firmware_sources, include_dirs=project.include_dirs, out_dir=out / "build",
                   name="model")
    got = np.empty_like(ref_out)
    invoke = None
    per_layer: dict[str, int] = {}
    emulator = "unicorn"
    for start in range(0, n, chunk):
        part = q_all[start:start + chunk]
        k = len(part)
        padded = np.zeros((chunk, *q_all.shape[1:]), np.int8)
        padded[:k] = part
        res = run_unicorn(result.elf, inputs={"tk_test_inputs": padded.tobytes()},
                          outputs={"tk_test_outputs": chunk * project.output_bytes}, cpu=tgt.cpu.name,
                          max_instructions=max_instructions_per_sample * chunk,
                          count_functions=invoke is None)  # per-function counts: first chunk only
        emulator = res.emulator
        got[start:start + k] = np.frombuffer(res.outputs["tk_test_outputs"], np.int8).reshape(chunk, -1)[:k]
        if invoke is None:
            invoke = int(round(res.per_function.get("tk_invoke", 0) / chunk))
            for layer in project.layers:
                per_layer[layer.module_path or layer.node] = per_layer.get(layer.module_path or layer.node, 0) + \
                    int(round(res.per_function.get(layer.function, 0) / chunk))
    mismatches = int(np.count_nonzero(got != ref_out))
    labels = test_labels.numpy()
    device_acc = float((got.argmax(1) == labels).mean())
    ref_acc = float((ref_out.argmax(1) == labels).mean())
    return DeviceReport(
        target=tgt.name, toolchain=result.toolchain, emulator=emulator, bit_exact=mismatches == 0,
        mismatching_bytes=mismatches, samples=n, device_accuracy=device_acc, reference_accuracy=ref_acc,
        flash_bytes=int(result.flash_bytes - chunk * (project.input_bytes + project.output_bytes)),
        flash_bytes_linked=int(result.flash_bytes), sram_bytes=int(result.sram_bytes - chunk * project.output_bytes),
        estimated_flash_bytes=int(footprint.flash_bytes), arena_bytes=int(plan.arena_bytes),
        instructions=int(invoke or 0), per_layer_instructions=per_layer,
        sparse_layers=[layer.module_path for layer in project.layers if layer.sparse], elf=str(result.elf))
