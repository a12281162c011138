"""Issue-5 targets 2 and 3: SparseNAS vs random search at equal budget under a tight MCU limit.

One supernet is trained (sandwich rule) on the dataset; then ``sparsenas`` and ``random`` each get
the same number of candidate evaluations (fitting or not) for every search seed, scored by the same
evaluator (inherited weights, block pruning, BN recalibration, validation accuracy) under the same
limits (default 256 KiB flash / 64 KiB SRAM on stm32f746). The best SparseNAS candidate is then
built and run on the emulated Cortex-M7 sparse and dense (exact instruction counts, the ratio).

    OMP_NUM_THREADS=2 python benchmarks/tinyformer/bench_sparsenas_vs_random.py --dataset digits
    OMP_NUM_THREADS=2 python benchmarks/tinyformer/bench_sparsenas_vs_random.py --dataset shapes-cls

Writes benchmarks/results/tinyformer_sparsenas_vs_random_<dataset>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"

#: a bigger space than the default so that 256 KiB flash and 64 KiB SRAM cut into it
SPACE = dict(stem_channels=24, stage_channels=(24, 32, 48, 64), head_channels=160, embed_dims=(32, 48, 64),
             expand_choices=(2, 4, 6), resolutions=(32,), width_mults=(1.0,))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="digits", choices=["digits", "shapes-cls"])
    ap.add_argument("--flash-kb", type=int, default=256)
    ap.add_argument("--sram-kb", type=int, default=64)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--device-samples", type=int, default=100)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.population, args.generations, args.seeds, args.device_samples = 3, 2, 1, 1, 2

    import torch

    import tuskml
    from tuskml.plugins.tinyformer.datasets import train_test
    from tuskml.plugins.tinyformer.device_eval import run_on_device
    from tuskml.plugins.tinyformer.evaluator import CandidateEvaluator, accuracy
    from tuskml.plugins.tinyformer.hardware_fit import target_limits
    from tuskml.plugins.tinyformer.pareto import plot_fronts
    from tuskml.plugins.tinyformer.train_supernet import SupernetTrainingOptions, train_supernet

    t0 = time.time()
    torch.manual_seed(0)
    overrides = {"resolution": 32} if args.dataset == "digits" else {"num_samples": 2000}
    train_all, test = train_test(args.dataset, **overrides)
    if args.dataset == "shapes-cls":
        test = tuskml.create("datasets", "shapes-cls", split="test", num_samples=500)
    perm = torch.randperm(len(train_all), generator=torch.Generator().manual_seed(0))
    n_val = len(train_all) // 5
    train, val = train_all.subset(perm[n_val:]), train_all.subset(perm[:n_val])
    space = tuskml.create("search_spaces", "tinyformer-hybrid", in_channels=train_all.in_channels, num_classes=10, **SPACE)
    run_dir = ROOT / "runs" / f"bench_sparsenas_vs_random_{args.dataset}"
    log = train_supernet(space, train, SupernetTrainingOptions(steps=args.steps, batch_size=64, rule="sandwich",
                                                             checkpoint=str(run_dir / "supernet.safetensors"),
                                                             checkpoint_every=25))
    t_train = time.time() - t0
    limits = target_limits("stm32f746", flash_bytes=args.flash_kb * 1024, sram_bytes=args.sram_kb * 1024)
    evaluator = CandidateEvaluator(space, train.images, val.images, val.labels, limits)

    runs = []
    for seed in range(args.seeds):
        sn = tuskml.create("search_strategies", "sparsenas", population=args.population,
                           generations=args.generations, seed=seed).run(space, evaluator, run_dir / f"seed{seed}",
                                                                        progress=True)
        rnd = tuskml.create("search_strategies", "random", budget=sn.evaluations, seed=1000 + seed).run(
            space, evaluator, run_dir / f"seed{seed}", progress=True)
        png = RESULTS / f"tinyformer_sparsenas_vs_random_{args.dataset}{'' if seed == 0 else f'_seed{seed}'}.png"
        plot_fronts({"sparsenas": sn, "random": rnd}, png,
                    title=f"{args.dataset}, {args.flash_kb} KiB flash / {args.sram_kb} KiB SRAM, "
                          f"{sn.evaluations} evaluations each (seed {seed})")
        row = {"seed": seed, "evaluations": sn.evaluations}
        for name, res in (("sparsenas", sn), ("random", rnd)):
            b = res.best
            net = evaluator.build(b.candidate)
            row[name] = {"val_accuracy": b.accuracy, "test_accuracy": accuracy(net, test.resized(b.candidate.arch.resolution),
                                                                               test.labels),
                         "instructions": b.measurement.instructions, "flash_bytes": b.measurement.flash_bytes,
                         "sram_bytes": b.measurement.sram_bytes, "fitting": sum(h["fits"] for h in res.history),
                         "arch": b.candidate.arch.short()}
        r = row["random"]
        # does some SparseNAS candidate beat random's best: higher accuracy at no more instructions?
        row["sparsenas_beats_random"] = any(
            e.accuracy > r["val_accuracy"] and e.measurement.instructions <= r["instructions"] for e in sn.front)
        runs.append((row, sn))
        print(json.dumps(row, indent=2), flush=True)

    # the best SparseNAS model of seed 0 on the emulated Cortex-M7: sparse vs dense, exact instructions
    best = runs[0][1].best
    net = evaluator.build(best.candidate)
    res = best.candidate.arch.resolution
    calib = train.resized(res)[:32]
    n = args.device_samples
    dev_dir = run_dir / "device"
    sparse_rep = run_on_device(net, calib, test.resized(res)[:n], test.labels[:n], "stm32f746", dev_dir / "sparse",
                               sparsity=best.candidate.sparsity, blocks=best.candidate.blocks, chunk=min(n, 50))
    dense_rep = run_on_device(net, calib, test.resized(res)[:2], test.labels[:2], "stm32f746", dev_dir / "dense",
                              sparsity=best.candidate.sparsity, blocks=best.candidate.blocks, chunk=2, force_format="dense")
    wall = time.time() - t0
    rows = [r for r, _ in runs]
    summary = {
        "benchmark": f"tinyformer_sparsenas_vs_random_{args.dataset}", "quick": args.quick,
        "limits": limits.to_dict(), "space": SPACE, "supernet_steps": args.steps,
        "supernet_final_loss": log.losses[-1] if log.losses else None, "train_seconds": t_train, "wall_seconds": wall,
        "runs": rows,
        "mean_best_val_accuracy": {k: statistics.fmean(r[k]["val_accuracy"] for r in rows) for k in ("sparsenas", "random")},
        "mean_best_test_accuracy": {k: statistics.fmean(r[k]["test_accuracy"] for r in rows) for k in ("sparsenas", "random")},
        "sparsenas_beats_random_in": f"{sum(r['sparsenas_beats_random'] for r in rows)}/{len(rows)} seeds",
        "final_model_on_device": {
            "arch": best.candidate.arch.short(), "device_accuracy": sparse_rep.device_accuracy,
            "device_samples": sparse_rep.samples, "bit_exact": sparse_rep.bit_exact and dense_rep.bit_exact,
            "sparse_instructions": sparse_rep.instructions, "dense_instructions": dense_rep.instructions,
            "dense_over_sparse": dense_rep.instructions / sparse_rep.instructions if sparse_rep.instructions else None,
            "sparse_flash_bytes": sparse_rep.flash_bytes, "dense_flash_bytes": dense_rep.flash_bytes,
            "sram_bytes": sparse_rep.sram_bytes, "sparse_layers": len(sparse_rep.sparse_layers),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"tinyformer_sparsenas_vs_random_{args.dataset}"
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2))
    f = summary["final_model_on_device"]
    md = [f"# SparseNAS vs random search, {args.dataset}, stm32f746 limited to {args.flash_kb} KiB flash / "
          f"{args.sram_kb} KiB SRAM", "",
          f"Command: `python benchmarks/tinyformer/bench_sparsenas_vs_random.py {' '.join(sys.argv[1:])}`; supernet {args.steps} sandwich steps; wall {wall / 60:.1f} min "
          f"({os.cpu_count()} shared CPUs).", "",
          "| seed | evaluations | strategy | best val acc | its test acc | est. instructions | flash B | fitting |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for k in ("sparsenas", "random"):
            v = r[k]
            md.append(f"| {r['seed']} | {r['evaluations']} | {k} | {v['val_accuracy']:.4f} | {v['test_accuracy']:.4f} | "
                      f"{v['instructions']:,} | {v['flash_bytes']:,} | {v['fitting']} |")
    md += ["", f"SparseNAS has a candidate with higher accuracy at no more instructions than random's best in "
               f"{summary['sparsenas_beats_random_in']}.", "",
           f"Final SparseNAS model on the emulated Cortex-M7 (`{f['arch']}`): device accuracy {f['device_accuracy']:.4f} "
           f"on {f['device_samples']} test images, bit-exact {f['bit_exact']}; instructions sparse {f['sparse_instructions']:,} "
           f"vs dense {f['dense_instructions']:,} (dense/sparse {f['dense_over_sparse']:.3f}); flash sparse "
           f"{f['sparse_flash_bytes']:,} B vs dense {f['dense_flash_bytes']:,} B; {f['sparse_layers']} sparse layers.",
           "", f"Plot: `{name}.png` (accuracy vs instructions and vs flash, Pareto fronts joined)."]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
