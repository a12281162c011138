"""Host latency per image: the generated int8 C (native cc -O2) vs the float torch model.

For each model, in one run: ``prepare`` (int8 graph + memory plan) -> ``generate_c_project``
(portable kernels, and the DSP kernels, which on a host run as a bit-exact C emulation of
SXTB16/SMLAD) -> ``mcu_targets.build("host")``. The executable reads N images from a file and
writes N outputs; its per-image time is ``(t(N) - t(1)) / (N - 1)`` (process start-up and file
I/O cancel), best of ``REPEATS``. The torch baseline is the float model in eval mode,
``torch.no_grad()``, one thread, batch 1 (as on a microcontroller) and batched, best of ``REPEATS``.
The C outputs are also checked bit-exact against the reference executor.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sparseengine/bench_host_latency.py
"""

from __future__ import annotations

import json
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from tuskml.backends.c.codegen import generate_c_project
from tuskml.backends.sparse_engine.example_models import TinyMobileViT, _randomize_bn, tiny_cnn
from tuskml.backends.sparse_engine.pipeline import prepare
from tuskml.backends.sparse_engine.reference import quantize_input, run
from tuskml.mcu_targets.toolchains import build

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
N_IMAGES = 200
REPEATS = 3


def mobilevit() -> torch.nn.Module:
    torch.manual_seed(0)
    return _randomize_bn(TinyMobileViT(width=16, dim=64, heads=4), 0)


def _time_exe(exe: pathlib.Path, data: np.ndarray, workdir: pathlib.Path) -> tuple[float, np.ndarray]:
    """Seconds per image of the host executable (start-up cancelled), and its outputs on all images."""
    def once(n: int) -> float:
        src, dst = workdir / f"in{n}.bin", workdir / f"out{n}.bin"
        src.write_bytes(data[:n].tobytes())
        t0 = time.perf_counter()
        subprocess.run([str(exe), str(src), str(dst)], check=True)
        return time.perf_counter() - t0

    best = min(once(N_IMAGES) - once(1) for _ in range(REPEATS))
    outputs = np.frombuffer((workdir / f"out{N_IMAGES}.bin").read_bytes(), dtype=np.int8)
    return max(best, 1e-9) / (N_IMAGES - 1), outputs


def _time_torch(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Seconds per image of the float model: batch 1, and one batch of all images."""
    model.eval()
    with torch.no_grad():
        for i in range(5):
            model(x[i:i + 1])
        batch1 = []
        batched = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            for i in range(x.shape[0]):
                model(x[i:i + 1])
            batch1.append((time.perf_counter() - t0) / x.shape[0])
            t0 = time.perf_counter()
            model(x)
            batched.append((time.perf_counter() - t0) / x.shape[0])
    return min(batch1), min(batched)


def bench(name: str, model: torch.nn.Module, shape: tuple[int, ...]) -> list[dict]:
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((16, *shape)).astype(np.float32)
    images = rng.standard_normal((N_IMAGES, *shape)).astype(np.float32)
    dep = prepare(model, calib)
    q = np.ascontiguousarray(quantize_input(dep.graph, images))
    expected = np.ascontiguousarray(run(dep.graph, q).outputs[0]).reshape(-1)
    torch_b1, torch_batched = _time_torch(model, torch.from_numpy(images))
    rows = []
    with tempfile.TemporaryDirectory(prefix="tk_bench_host_") as tmp:
        work = pathlib.Path(tmp)
        for use_dsp in (False, True):
            project = generate_c_project(dep.graph, dep.plan, work / f"src{int(use_dsp)}", use_dsp=use_dsp)
            res = build("host", project.host_sources, include_dirs=project.include_dirs, out_dir=work / "build",
                        name=f"model{int(use_dsp)}")
            per_image, outputs = _time_exe(res.elf, q, work)
            row = {
                "model": name, "kernels": "DSP (emulated in C)" if use_dsp else "portable",
                "c_us_per_image": round(per_image * 1e6, 2), "torch_batch1_us_per_image": round(torch_b1 * 1e6, 2),
                "torch_batched_us_per_image": round(torch_batched * 1e6, 2),
                "c_over_torch_batch1": round(per_image / torch_b1, 4),
                "c_over_torch_batched": round(per_image / torch_batched, 4),
                "bit_exact": bool(np.array_equal(outputs, expected)),
                "toolchain": res.toolchain, "arena_bytes": int(dep.plan.arena_bytes),
            }
            print(row, flush=True)
            rows.append(row)
    return rows


def main() -> int:
    torch.set_num_threads(1)
    rows = bench("TinyCNN (32x32x3)", tiny_cnn(), (3, 32, 32))
    rows += bench("TinyMobileViT w16/d64/h4 (32x32x3)", mobilevit(), (3, 32, 32))
    result = {"benchmark": "bench_host_latency", "images": N_IMAGES, "repeats": REPEATS,
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "torch": torch.__version__, "threads": 1, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_host_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# bench_host_latency: generated int8 C on the host vs float torch, per image",
        "",
        "Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sparseengine/bench_host_latency.py`.",
        f"{N_IMAGES} images, best of {REPEATS}, one thread, on a shared 2-core machine (noisy). C: `cc -O2` host",
        "build of the generated project, start-up cancelled by timing N and 1 images. Torch: float eval, no_grad.",
        "Ratio < 1 means the generated C is faster.",
        "",
        "| model | C kernels | C us/image | torch batch-1 us/image | C / torch batch-1 | torch batched us/image | C / torch batched | bit-exact |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['kernels']} | {r['c_us_per_image']:.1f} | {r['torch_batch1_us_per_image']:.1f} | "
                     f"{r['c_over_torch_batch1']:.3f} | {r['torch_batched_us_per_image']:.1f} | "
                     f"{r['c_over_torch_batched']:.3f} | {'yes' if r['bit_exact'] else 'NO'} |")
    lines += ["", f"Toolchain: {rows[0]['toolchain']}; torch {torch.__version__}.", ""]
    (RESULTS / "bench_host_latency.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if all(r["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
