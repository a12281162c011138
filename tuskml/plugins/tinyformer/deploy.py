"""Deploy a torch model to a microcontroller target: the ``tuskml tinyformer deploy`` pipeline.

    report = deploy("tuskml.backends.sparse_engine.example_models:tiny_cnn", target="stm32f746",
                    out_dir="build/")
    report.bit_exact, report.flash_bytes, report.layers[3].instructions

Steps, in order, each failing with a :class:`tuskml.TuskmlError` that names what is wrong:

1. load the model (a tuskml checkpoint, or ``package.module:factory``) and the data (a registered
   dataset, or seeded random inputs of the model's input shape);
2. ``prepare`` (SparseEngine): optional block pruning, import, int8 quantisation, dense/sparse
   choice per layer, memory plan, footprint;
3. **footprint check before any C is compiled**: a model that does not fit the target raises
   :class:`ModelDoesNotFitError` naming the layers with the most flash, the tensors live at the
   SRAM peak and the bytes over (the linker's overflow check is only the safety net);
4. golden outputs from the ``reference`` backend on the test inputs;
5. generate the C project (``c`` backend) with the test inputs and expected outputs compiled in,
   build it for the target (linker script with the board's FLASH/RAM);
6. run it (unicorn's Cortex-M7/M4 model, QEMU mps2-an500, or natively for ``host``), read the
   outputs back from ``tk_test_outputs`` and compare them byte for byte with the reference;
7. a per-layer table (kind, dense/sparse, weight bytes, live arena bytes, exact instructions) and a
   summary, as a :class:`DeployReport` (``as_dict()`` is what ``--json`` writes).
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from tuskml.core.errors import TuskmlError

#: Backends that can turn a graph into code for a hardware target.
DEPLOYABLE_BACKENDS = ("c",)
EMULATORS = ("unicorn", "qemu")


class DeployError(TuskmlError):
    """Bad deploy arguments, or a step of the pipeline that failed (the message says which)."""


class ModelDoesNotFitError(DeployError):
    """The model needs more flash or SRAM than the target has; raised before anything is linked."""


@attrs.frozen(kw_only=True)
class DeployLayer:
    """One row of the per-layer table.

    ``weight_bytes``: flash bytes of the layer's constants as generated (weights as encoded, bias,
    requantisation parameters, tables). ``arena_bytes``: activation bytes live in the arena while
    the layer runs (in-place pairs counted once). ``instructions``: exact instructions of the
    layer's ``tk_layer_<i>`` function per inference (inclusive of the kernels it calls); None when
    the target runs natively.
    """

    index: int
    function: str
    node: str
    module_path: str
    kind: str
    format: str  # "dense" or "sparse(B=4)"
    kernel: str
    weight_bytes: int
    output_bytes: int
    arena_bytes: int
    instructions: int | None


@attrs.frozen(kw_only=True)
class DeployReport:
    """Everything ``tuskml tinyformer deploy`` prints; ``as_dict()`` is its JSON."""

    model: str
    target: str
    backend: str
    toolchain: str
    emulator: str
    bit_exact: bool
    mismatching_bytes: int
    exit_code: int
    samples: int
    flash_bytes: int  # as linked (code + constants + .data)
    sram_bytes: int  # as linked (.data + .bss incl. the arena + reserved stack)
    flash_limit: int | None
    sram_limit: int | None
    estimated_flash_bytes: int  # the footprint model's estimate, checked before linking
    estimated_sram_bytes: int
    arena_bytes: int
    naive_arena_bytes: int  # sum of all activation sizes (no reuse)
    peak_step: str
    peak_live: list[str]
    instructions: int | None  # per inference (tk_invoke), exact
    instructions_total: int | None  # the whole emulated run (startup + all samples + checks)
    cycles_estimate: int | None
    latency_ms_estimate: float | None  # instructions / clock, an estimate (emulators model no cycles)
    accuracy: dict[str, float | None] | None
    sparsity: float | None
    layers: list[DeployLayer]
    out_dir: str
    elf: str

    def as_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["layers"] = [attrs.asdict(layer) for layer in self.layers]
        return data

    def table(self) -> str:
        """The per-layer table and the summary, as printed by the CLI."""
        header = ["#", "layer", "kind", "format", "weights B", "arena B", "instructions"]
        rows = []
        for l in self.layers:
            rows.append([str(l.index), (l.module_path or l.node)[:40], l.kind, l.format, str(l.weight_bytes),
                         str(l.arena_bytes), "-" if l.instructions is None else f"{l.instructions:,}"])
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        right = {0, 4, 5, 6}

        def line(cells: list[str]) -> str:
            return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        out = [line(header), line(["-" * w for w in widths]), *map(line, rows), ""]
        lim = lambda used, limit: f"{used:,} B" + (f" of {limit:,} B ({100 * used / limit:.1f}%)" if limit else "")  # noqa: E731
        out.append(f"target      {self.target} ({self.toolchain}; run on {self.emulator})")
        out.append(f"bit-exact   {'yes' if self.bit_exact else 'NO'} vs reference on {self.samples} sample(s)"
                   + ("" if self.bit_exact else f" ({self.mismatching_bytes} bytes differ, exit code {self.exit_code})"))
        out.append(f"flash       {lim(self.flash_bytes, self.flash_limit)} linked (estimated {self.estimated_flash_bytes:,} B)")
        out.append(f"sram        {lim(self.sram_bytes, self.sram_limit)} linked (estimated {self.estimated_sram_bytes:,} B)")
        out.append(f"arena       {self.arena_bytes:,} B planned vs {self.naive_arena_bytes:,} B without reuse; "
                   f"peak at {self.peak_step}: {', '.join(self.peak_live[:4])}")
        if self.instructions is not None:
            est = f", ~{self.latency_ms_estimate:.2f} ms at the target clock if 1 instruction/cycle (estimate)" \
                if self.latency_ms_estimate is not None else ""
            out.append(f"instructions {self.instructions:,} per inference (exact){est}")
        if self.accuracy:
            acc = self.accuracy
            top1 = acc.get("top1_agreement")
            out.append(f"accuracy    int8 vs float: mean abs error {acc.get('mean_abs_error', float('nan')):.4g}"
                       + (f", top-1 agreement {top1:.3f}" if top1 is not None else ""))
        return "\n".join(out)


# --- inputs -------------------------------------------------------------------------------------


def load_model(spec: Any) -> tuple[Any, str]:
    """A torch module from a checkpoint path, a ``package.module:factory`` string, or a module."""
    import torch

    if isinstance(spec, torch.nn.Module):
        return spec, type(spec).__name__
    text = str(spec)
    path = pathlib.Path(text)
    if path.is_file():
        import tuskml

        model = tuskml.load(path)
    elif re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", text):
        from tuskml.core.registry import resolve_object

        try:
            factory = resolve_object(text)
        except (ImportError, AttributeError, ValueError) as exc:
            raise DeployError(f"model {text!r}: cannot import the factory ({type(exc).__name__}: {exc})") from exc
        if not callable(factory):
            raise DeployError(f"model {text!r} is not callable; give a function or class returning a torch module")
        model = factory() if not isinstance(factory, torch.nn.Module) else factory
    else:
        raise DeployError(f"model {text!r} is neither an existing checkpoint file nor 'package.module:factory'")
    if not isinstance(model, torch.nn.Module):
        raise DeployError(f"model {text!r} gave a {type(model).__name__}, not a torch.nn.Module")
    return model.eval(), text


def _example_input_shape(model: Any) -> tuple[int, ...] | None:
    example = getattr(model, "example_inputs", None)
    if callable(example):
        inputs = example()
        first = inputs[0] if isinstance(inputs, (tuple, list)) else next(iter(inputs.values()), None) if isinstance(inputs, dict) else inputs
        if hasattr(first, "shape"):
            return tuple(int(s) for s in first.shape[1:])
    return None


def _dataset_samples(name: str, count: int) -> np.ndarray:
    """The first ``count`` inputs of a registered dataset as float32 ``[count, ...]``."""
    import tuskml

    dataset = tuskml.create("datasets", name)
    if len(dataset) < count:
        raise DeployError(f"dataset {name!r} has {len(dataset)} items; {count} are needed (calibration + test)")
    out = []
    for i in range(count):
        item = dataset[i]
        if isinstance(item, dict):
            key = next((k for k in ("image", "pixel_values", "x", "input") if k in item), None)
            if key is None:
                raise DeployError(f"dataset {name!r} items are dicts without an 'image'/'x' key: {sorted(item)}")
            item = item[key]
        elif isinstance(item, (tuple, list)):
            item = item[0]
        arr = item.detach().cpu().numpy() if hasattr(item, "detach") else np.asarray(item)
        out.append(arr.astype(np.float32))
    return np.stack(out)


def _inputs(model: Any, *, dataset: str | None, input_shape: Sequence[int] | None, calibration_samples: int,
            test_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    total = calibration_samples + test_samples
    if dataset:
        data = _dataset_samples(dataset, total)
    else:
        shape = tuple(input_shape) if input_shape else _example_input_shape(model)
        if not shape:
            raise DeployError("cannot tell the model's input shape: pass input_shape (CLI --input-shape 3,32,32), "
                              "a --dataset, or give the model an example_inputs() method")
        if any(int(s) <= 0 for s in shape):
            raise DeployError(f"input shape {shape} must be positive")
        data = np.random.default_rng(seed).standard_normal((total, *shape)).astype(np.float32)
    # disjoint: the test samples are not seen by calibration
    return data[:calibration_samples], data[calibration_samples:]


# --- the pipeline --------------------------------------------------------------------------------


def _live_arena_bytes(plan: Any, steps: int) -> list[int]:
    """Bytes of distinct arena buffers live at each node index (in-place pairs counted once)."""

    def root(name: str) -> str:
        seen = set()
        while name in plan.inplace and name not in seen:
            seen.add(name)
            name = plan.inplace[name]
        return name

    out = []
    for i in range(steps):
        roots: dict[str, int] = {}
        for name, (first, last) in plan.lifetimes.items():
            if first <= i <= last:
                r = root(name)
                roots[r] = max(roots.get(r, 0), int(plan.sizes.get(name, 0)))
        out.append(sum(roots.values()))
    return out


def _graph_layout_batches(graph: Any, x_torch: np.ndarray) -> np.ndarray:
    """Float test inputs (torch layout) -> int8 graph inputs, ``[chunks, input_bytes]``."""
    from tuskml.backends.sparse_engine.reference import quantize_input

    if len(graph.inputs) != 1:
        raise DeployError(f"graph {graph.name!r} has {len(graph.inputs)} inputs; deploy supports one-input models")
    q = np.ascontiguousarray(quantize_input(graph, x_torch))
    batch = graph.tensors[graph.inputs[0]].shape[0]
    if q.shape[0] % batch:
        raise DeployError(f"{q.shape[0]} test samples are not a multiple of the graph batch {batch}")
    return q


def _expected_outputs(graph: Any, q_inputs: np.ndarray) -> np.ndarray:
    """Reference outputs, concatenated per graph batch in graph-output order: ``[chunks, output_bytes]``."""
    from tuskml.backends.sparse_engine.reference import run

    res = run(graph, q_inputs)
    batch = graph.tensors[graph.inputs[0]].shape[0]
    chunks = q_inputs.shape[0] // batch
    per_out = [np.ascontiguousarray(o).reshape(chunks, -1) for o in res.outputs]
    return np.concatenate(per_out, axis=1).astype(np.int8)


def _check_fits(target: Any, deployable: Any) -> Any:
    """Footprint with the target's stack; ModelDoesNotFitError (before linking) if it is too big."""
    from tuskml.backends.sparse_engine.footprint import compute_footprint

    footprint = compute_footprint(deployable.graph, deployable.plan, stack_bytes=target.stack_bytes)
    if target.is_host:
        return footprint
    problem = footprint.check(flash_limit=target.flash_bytes, sram_limit=target.sram_bytes, plan=deployable.plan)
    if problem:
        raise ModelDoesNotFitError(f"model does not fit {target.name} ({target.description}): {problem}. "
                                   f"Nothing was compiled or linked. Try --sparsity, a smaller model, or a bigger target.")
    return footprint


def deploy(model: Any, *, target: Any = "stm32f746", backend: str = "c", out_dir: str | os.PathLike[str] = "build",
           dataset: str | None = None, sparsity: float | None = None, block: int = 4,
           input_shape: Sequence[int] | None = None, calibration_samples: int = 16, test_samples: int = 2,
           use_dsp: bool | None = None, toolchain: str | None = None, emulator: str = "unicorn", seed: int = 0,
           max_instructions: int = 2_000_000_000, force_format: str | None = None) -> DeployReport:
    """Quantize, plan, check the footprint, generate, build, run and compare a model on ``target``.

    ``model``: a torch module, a checkpoint path or ``package.module:factory``. ``target``: a
    registered hardware target name or a :class:`~tuskml.mcu_targets.targets.HardwareTarget`.
    ``sparsity``: block-prune prunable layers to this block sparsity first (block size ``block``).
    ``use_dsp``: DSP kernels (default: the target has the DSP extension, or host).
    Returns a :class:`DeployReport`; raises :class:`ModelDoesNotFitError` before compiling anything
    if the model is too big for the target.
    """
    import tuskml
    from tuskml.mcu_targets.targets import get_target

    tuskml.get_spec("engine_backends", backend)  # a misspelt backend gets the registry's "did you mean"
    if backend not in DEPLOYABLE_BACKENDS:
        raise DeployError(f"engine backend {backend!r} runs in Python and cannot be deployed to a target; "
                          f"deployable backends: {', '.join(DEPLOYABLE_BACKENDS)}")
    if emulator not in EMULATORS:
        raise DeployError(f"unknown emulator {emulator!r}; use one of {', '.join(EMULATORS)}")
    if test_samples < 1 or calibration_samples < 1:
        raise DeployError("test_samples and calibration_samples must be >= 1")
    if sparsity is not None and not 0.0 <= sparsity < 1.0:
        raise DeployError(f"sparsity must be in [0, 1), got {sparsity}")
    tgt = get_target(target)
    torch_model, model_name = load_model(model)
    calib, test = _inputs(torch_model, dataset=dataset, input_shape=input_shape,
                          calibration_samples=calibration_samples, test_samples=test_samples, seed=seed)
    dsp = tgt.has_dsp or tgt.is_host if use_dsp is None else bool(use_dsp)

    from tuskml.backends.sparse_engine.pipeline import prepare

    deployable = prepare(torch_model, calib, sparsity=sparsity if sparsity else None, block=block, dsp=dsp,
                         test_inputs=test, force_format=force_format)
    footprint = _check_fits(tgt, deployable)
    graph, plan = deployable.graph, deployable.plan

    q_in = _graph_layout_batches(graph, test)
    expected = _expected_outputs(graph, q_in)

    from tuskml.backends.c.codegen import generate_c_project

    out = pathlib.Path(out_dir)
    project = generate_c_project(graph, plan, out / "src", use_dsp=dsp, test_inputs=q_in, expected_outputs=expected)
    samples = project.test_samples
    result = _build(tgt, project, out / "build", toolchain, footprint)
    got, run_info = _run(tgt, project, result, q_in, emulator, max_instructions)

    mismatches = int(np.count_nonzero(got.reshape(-1) != expected.reshape(-1))) if got is not None else -1
    bit_exact = run_info["exit_code"] == 0 and (got is None or mismatches == 0)
    live = _live_arena_bytes(plan, len(graph.nodes))
    per_function = run_info.get("per_function")
    layers = []
    for cl in project.layers:
        instr = None
        if per_function is not None:
            instr = int(round(per_function.get(cl.function, 0) / samples))
        block_size = int(graph.nodes[cl.index].attrs.get("sparse_block", 0) or 0)
        layers.append(DeployLayer(
            index=cl.index, function=cl.function, node=cl.node, module_path=cl.module_path, kind=cl.op,
            format=f"sparse(B={block_size})" if cl.sparse else "dense", kernel=cl.kernel,
            weight_bytes=int(cl.weight_bytes), output_bytes=int(cl.output_bytes), arena_bytes=int(live[cl.index]),
            instructions=instr,
        ))
    invoke = None
    if per_function is not None and "tk_invoke" in per_function:
        invoke = int(round(per_function["tk_invoke"] / samples))
    latency = invoke / tgt.clock_hz * 1e3 if invoke is not None and tgt.clock_hz else None
    accuracy = deployable.accuracy.as_dict() if deployable.accuracy is not None else None
    return DeployReport(
        model=model_name, target=tgt.name, backend=backend, toolchain=result.toolchain, emulator=run_info["emulator"],
        bit_exact=bool(bit_exact), mismatching_bytes=mismatches, exit_code=int(run_info["exit_code"]), samples=samples,
        flash_bytes=result.flash_bytes, sram_bytes=result.sram_bytes, flash_limit=tgt.flash_bytes,
        sram_limit=tgt.sram_bytes, estimated_flash_bytes=footprint.flash_bytes,
        estimated_sram_bytes=footprint.sram_bytes, arena_bytes=int(plan.arena_bytes),
        naive_arena_bytes=int(plan.naive_bytes), peak_step=str(plan.peak_step), peak_live=list(plan.peak_live),
        instructions=invoke, instructions_total=run_info.get("instructions"),
        cycles_estimate=invoke, latency_ms_estimate=latency, accuracy=accuracy, sparsity=sparsity,
        layers=layers, out_dir=str(out), elf=str(result.elf),
    )


def _build(target: Any, project: Any, build_dir: pathlib.Path, toolchain: str | None, footprint: Any) -> Any:
    from tuskml.mcu_targets.errors import LinkerOverflowError
    from tuskml.mcu_targets.toolchains import build

    sources = project.host_sources if target.is_host else project.firmware_sources
    try:
        return build(target, sources, include_dirs=project.include_dirs, out_dir=build_dir, name="model",
                     toolchain=toolchain)
    except LinkerOverflowError as exc:
        # the footprint estimate said it fits but the linker disagrees: still name the big layers
        top = ", ".join(f"{l.module_path or l.node} ({l.flash_bytes} B)" for l in footprint.largest_flash_layers())
        raise ModelDoesNotFitError(f"{exc}. The footprint estimate ({footprint.flash_bytes} B flash, "
                                   f"{footprint.sram_bytes} B SRAM) was too low; largest layers: {top}") from exc


def _run(target: Any, project: Any, result: Any, q_in: np.ndarray, emulator: str,
         max_instructions: int) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Run the built program; returns (outputs ``[chunks, output_bytes]`` or None, info)."""
    n_out = project.test_samples * project.output_bytes
    if target.is_host:
        from tuskml.backends.c.host import run_project
        from tuskml.mcu_targets.emulators import run_host

        code, _stdout = run_host(str(result.elf))  # the compiled-in self test
        got = run_project(result.elf, q_in.reshape(project.test_samples, -1), output_bytes=project.output_bytes,
                          input_bytes=project.input_bytes)
        return got, {"exit_code": code, "emulator": "host (native)"}
    if emulator == "qemu":
        from tuskml.mcu_targets.emulators import run_qemu

        res = run_qemu(result.elf)
        return None, {"exit_code": res.exit_code, "emulator": res.emulator}
    from tuskml.mcu_targets.emulators import run_unicorn

    res = run_unicorn(result.elf, outputs={"tk_test_outputs": n_out}, cpu=target.cpu.name,
                      max_instructions=max_instructions)
    got = np.frombuffer(res.outputs["tk_test_outputs"], dtype=np.int8).reshape(project.test_samples, -1)
    return got, {"exit_code": res.exit_code, "emulator": res.emulator, "per_function": res.per_function,
                 "instructions": res.instructions}
