"""Issue-5 target 1: ``tuskml tinyformer search`` on ``digits`` for ``stm32f746`` in one CPU run.

Target: the deployed int8 sparse model's test accuracy >= 97 %, measured from the emulated
Cortex-M7's outputs on the whole test set, within 1 MB flash / 320 KB SRAM, wall time <= 30 min.
Baselines measured in the same run: the same model built dense (exact emulated instructions, the
dense/sparse ratio) and random search with SparseNAS's evaluation budget. Runs on one thread
(``torch.set_num_threads(1)``) and records the load average and the process's CPU time, since the
machine is shared.

    OMP_NUM_THREADS=1 python benchmarks/tinyformer/bench_digits_search.py [--quick]

Writes benchmarks/results/tinyformer_digits_search.{json,md} (the run folder: runs/bench_digits).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="toy budgets (checks the script, not the target)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_digits"))
    ap.add_argument("--name", default="tinyformer_digits_search", help="results file stem under benchmarks/results")
    ap.add_argument("--min-sparsity", type=float, default=0.6,
                    help="block sparsity floor of every prunable layer in the deployed model")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from tuskml.plugins.tinyformer.search_pipeline import SearchRunOptions, run_search

    budgets = dict(supernas_samples=8, supernet_steps=800, population=10, generations=4, finetune_steps=1000,
                   min_sparsity=args.min_sparsity, device_samples=0)
    if args.quick:
        budgets = dict(supernas_samples=2, supernet_steps=5, population=2, generations=1, finetune_steps=5,
                       min_sparsity=args.min_sparsity, device_samples=8)
    load_before = os.getloadavg()
    opts = SearchRunOptions(dataset="digits", target="stm32f746", out_dir=args.out,
                            space_overrides={"resolutions": (16,), "width_mults": (0.5, 1.0, 1.5)}, batch_size=64, rule="sandwich",
                            compare_random=True, workers=1, seed=0, progress=True, **budgets)
    t0 = time.time()
    r = run_search(opts)
    wall = time.time() - t0
    load_after = os.getloadavg()
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {"process_s": own.ru_utime + own.ru_stime, "children_s": kids.ru_utime + kids.ru_stime}
    summary = {
        "benchmark": "tinyformer_digits_search", "quick": args.quick, "wall_seconds": wall,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "omp_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
                    "loadavg_before": load_before, "loadavg_after": load_after},
        "cpu_seconds": cpu,
        "budgets": budgets, "space": r["space"], "arch": r["arch_summary"],
        "float_accuracy": r["float_accuracy"], "device_accuracy": r["device_accuracy"],
        "device_samples": r["device"]["samples"] if r["device"] else 0, "bit_exact": r["bit_exact"],
        "flash_bytes": r["flash_bytes"], "sram_bytes": r["sram_bytes"], "instructions": r["instructions"],
        "dense_instructions": r["dense_instructions"], "reference_accuracy": r["device"]["reference_accuracy"] if r["device"] else None,
        "sparsity": r["sparsity"], "searched_sparsity": r["searched_sparsity"], "finetune": r["finetune"],
        "dense_over_sparse_instructions": (r["dense_instructions"] / r["instructions"]) if r["instructions"] else None,
        "sparse_layers": len(r["device"]["sparse_layers"]) if r["device"] else None,
        "comparison": r["comparison"],
        "targets": {"device_accuracy>=0.97": r["device_accuracy"] is not None and r["device_accuracy"] >= 0.97,
                    "flash<=1MB": r["flash_bytes"] <= 1024 * 1024, "sram<=320KB": r["sram_bytes"] <= 320 * 1024,
                    "wall<=30min": wall <= 1800},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(summary, indent=2))
    c = r["comparison"]
    md = [
        "# tinyformer search on digits for stm32f746",
        "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/tinyformer/bench_digits_search.py{' --quick' if args.quick else ''}"
        f" --min-sparsity {args.min_sparsity}` (1 torch thread; {os.cpu_count()} CPUs shared with other processes, "
        f"load average {load_before[0]:.2f} before / {load_after[0]:.2f} after; wall {wall / 60:.1f} min; "
        f"CPU {cpu['process_s']:.0f} s in the process + {cpu['children_s']:.0f} s in compiler subprocesses)",
        "",
        f"Budgets: {budgets}",
        "",
        "| metric | value | target |",
        "|---|---|---|",
        f"| device (emulated Cortex-M7) test accuracy, int8 sparse | {r['device_accuracy']:.4f} on {summary['device_samples']} images | >= 0.97 |",
        f"| float test accuracy (pruned, fine-tuned) | {r['float_accuracy']:.4f} | |",
        f"| int8 reference executor test accuracy | {summary['reference_accuracy']:.4f} | |",
        f"| bit-exact vs reference | {r['bit_exact']} | |",
        f"| flash (linked, without test data) | {r['flash_bytes']:,} B | <= 1,048,576 B |",
        f"| SRAM (linked) | {r['sram_bytes']:,} B | <= 327,680 B |",
        f"| instructions / inference, sparse (exact, emulated) | {r['instructions']:,} | |",
        f"| instructions / inference, same model dense | {r['dense_instructions']:,} | |",
        f"| dense / sparse instructions | {summary['dense_over_sparse_instructions']:.3f} | |",
        f"| wall time | {wall / 60:.1f} min | <= 30 min |",
        "",
        f"Chosen space {r['space']}; arch `{r['arch_summary']}`.",
        "",
        "| search (equal budget) | best val accuracy | est. instructions | flash B | evaluations |",
        "|---|---|---|---|---|",
        *[f"| {k} | {v['best_accuracy']:.4f} | {v['best_instructions']:,} | {v['best_flash_bytes']:,} | {v['evaluations']} |"
          for k, v in c.items()],
        "",
        "Targets met: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in summary["targets"].items()),
    ]
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
