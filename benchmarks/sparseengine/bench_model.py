"""Whole-model benchmark on the emulated Cortex-M7 (STM32F746): dense vs block-sparse, arena vs naive.

A MobileViT-like hybrid (conv stem, two MBConv blocks, a MobileViT block with attention, layer norm
and GELU, 1x1 head, classifier) on 32x32x3 inputs is deployed with ``tuskml.plugins.tinyformer.deploy``
(int8, memory plan, generated C, zig/gcc build, unicorn Cortex-M7) several times in one run:

* baseline: every layer dense (DSP kernels);
* block sparsity 50 / 75 / 90 % (block 4, block-magnitude pruning of 1x1 convs and linears),
  sparse kernels forced on every prunable layer;
* 90 % with the cost model choosing dense or sparse per layer (what ``deploy`` does by default).

Reported per configuration: exact instructions per inference (tk_invoke) and their ratio to the
dense baseline, the instructions spent in sparse-capable layers, flash and SRAM as linked, the
planned arena vs the naive sum of all activations, and whether the emulated outputs were
bit-exact with the reference. Accuracy is not the point here (pruning without fine-tuning).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sparseengine/bench_model.py
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile
import time

import torch

from tuskml.backends.sparse_engine.example_models import TinyMobileViT, _randomize_bn
from tuskml.plugins.tinyformer.deploy import deploy

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"


def bench_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return _randomize_bn(TinyMobileViT(width=16, dim=64, heads=4), 0)


def run_config(label: str, **kw) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tk_bench_model_") as tmp:
        r = deploy(bench_model(), target="stm32f746", out_dir=tmp, input_shape=(3, 32, 32), test_samples=1,
                   calibration_samples=8, **kw)
    sparse_layers = [l for l in r.layers if l.format.startswith("sparse")]
    row = {
        "config": label,
        "sparsity": kw.get("sparsity") or 0.0,
        "format": kw.get("force_format") or "cost model",
        "bit_exact": r.bit_exact,
        "instructions": r.instructions,
        "sparse_layers": len(sparse_layers),
        "flash_bytes": r.flash_bytes,
        "sram_bytes": r.sram_bytes,
        "weight_bytes": sum(l.weight_bytes for l in r.layers),
        "arena_bytes": r.arena_bytes,
        "naive_arena_bytes": r.naive_arena_bytes,
        "peak_step": r.peak_step,
        "peak_live": r.peak_live,
        "toolchain": r.toolchain,
        "emulator": r.emulator,
        "wall_s": round(time.perf_counter() - t0, 1),
        "layers": [{"index": l.index, "module_path": l.module_path, "kind": l.kind, "format": l.format,
                    "weight_bytes": l.weight_bytes, "instructions": l.instructions} for l in r.layers],
    }
    print(f"{label:<28} bit_exact={r.bit_exact} instructions={r.instructions:,} flash={r.flash_bytes:,} "
          f"arena={r.arena_bytes:,} naive={r.naive_arena_bytes:,} ({row['wall_s']} s)", flush=True)
    return row


def main() -> int:
    torch.set_num_threads(1)
    configs = [
        ("dense (baseline)", dict(force_format="dense")),
        ("sparse 50% B=4", dict(sparsity=0.5, block=4, force_format="sparse")),
        ("sparse 75% B=4", dict(sparsity=0.75, block=4, force_format="sparse")),
        ("sparse 90% B=4", dict(sparsity=0.9, block=4, force_format="sparse")),
        ("90% B=4, cost model", dict(sparsity=0.9, block=4)),
    ]
    rows = [run_config(label, **kw) for label, kw in configs]
    base = rows[0]["instructions"]
    # the prunable layers (1x1 convs, linears) are the ones the forced-sparse runs made sparse
    prunable = {l["index"] for l in rows[3]["layers"] if l["format"].startswith("sparse")}
    base_prunable = sum(l["instructions"] for l in rows[0]["layers"] if l["index"] in prunable)
    for row in rows:
        row["ratio_vs_dense"] = round(row["instructions"] / base, 4)
        row["instructions_prunable_layers"] = sum(l["instructions"] for l in row["layers"] if l["index"] in prunable)
        row["prunable_ratio_vs_dense"] = round(row["instructions_prunable_layers"] / base_prunable, 4)
    params = sum(p.numel() for p in bench_model().parameters())
    result = {
        "benchmark": "bench_model",
        "model": "TinyMobileViT(width=16, dim=64, heads=4), 32x32x3 input",
        "parameters": params,
        "target": "stm32f746 (Cortex-M7, unicorn CPU model; instruction counts exact, no cycle model)",
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_model.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# bench_model: MobileViT-like model on the emulated Cortex-M7 (STM32F746)",
        "",
        f"Model: {result['model']}, {params:,} parameters. Command: "
        "`OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sparseengine/bench_model.py`.",
        "Instructions are exact counts per inference (unicorn Cortex-M7, `tk_invoke` inclusive); ratios are",
        "against the dense baseline measured in the same run. Arena = planned SRAM for activations;",
        "naive = sum of all activation sizes (no reuse).",
        "",
        "| config | bit-exact | instructions | vs dense | prunable layers' instr. | vs dense | sparse layers | weights B | flash B | arena B | naive B | arena/naive |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['config']} | {'yes' if r['bit_exact'] else 'NO'} | {r['instructions']:,} | "
                     f"{r['ratio_vs_dense']:.3f} | {r['instructions_prunable_layers']:,} | "
                     f"{r['prunable_ratio_vs_dense']:.3f} | {r['sparse_layers']} | {r['weight_bytes']:,} | {r['flash_bytes']:,} | "
                     f"{r['arena_bytes']:,} | {r['naive_arena_bytes']:,} | {r['arena_bytes'] / r['naive_arena_bytes']:.3f} |")
    lines += ["", "Prunable layers = the 1x1 convs and linears (block-pruned in the sparse rows); the other",
              "layers (3x3 and depthwise convs, attention matmuls, softmax, layer norm, LUTs) stay dense, which",
              "bounds the whole-model gain.",
              "", f"Peak (dense): at `{rows[0]['peak_step']}`, live tensors: {', '.join(rows[0]['peak_live'])}.",
              f"Toolchain: {rows[0]['toolchain']}; emulator: {rows[0]['emulator']}.", ""]
    (RESULTS / "bench_model.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if all(r["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
