"""Issue-5 targets 2 and 3: SparseNAS vs random search at equal budget under a tight MCU limit.

One supernet is trained (sandwich rule) on the dataset (resumed from its checkpoint in runs/ when
one exists for the same space and steps); then ``sparsenas`` and ``random`` each get the same
number of candidate evaluations (every engine measurement counts, fitting or not) for every search
seed, scored by the same evaluator (inherited weights, block pruning, BN recalibration, validation
accuracy) under the same limits. The default limits - 160 KiB flash, 48 KiB SRAM and 30 M
instructions per inference (~139 ms at 216 MHz and one instruction per cycle) on the stm32f746 -
are chosen so that most random candidates of this space do NOT fit (the fit rate of random search
is recorded), so search skill matters. The compared criterion is the brief's: higher accuracy at
no more instructions; the table also gives the best accuracy and the 2-D hypervolume of the
accuracy-vs-instructions front (instructions normalised by the cap), mean and spread over seeds.
The best SparseNAS model of seed 0 is built and run on the emulated Cortex-M7, sparse and dense
(exact instruction counts), and the best models of both strategies give the cost model's
estimate/measured ratio.

    OMP_NUM_THREADS=1 python benchmarks/tinyformer/bench_sparsenas_vs_random.py --dataset digits
    OMP_NUM_THREADS=1 python benchmarks/tinyformer/bench_sparsenas_vs_random.py --dataset shapes-cls --steps 250

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

#: a bigger space than the default so that the limits cut into it
SPACE = dict(stem_channels=24, stage_channels=(24, 32, 48, 64), head_channels=160, embed_dims=(32, 48, 64),
             expand_choices=(2, 4, 6), resolutions=(32,), width_mults=(1.0,))


def fitting_points(res) -> list[tuple[int, float]]:
    """(instructions, validation accuracy) of every fitting candidate a search scored."""
    return [(h["instructions"], h["accuracy"]) for h in res.history if h["fits"] and h["accuracy"] is not None]


def front_2d(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Accuracy-vs-instructions Pareto front, by increasing instructions."""
    front, best = [], -1.0
    for ins, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((ins, acc))
            best = acc
    return front


def hypervolume(points: list[tuple[int, float]], cap: int) -> float:
    """Area dominated by the front in (instructions / cap, accuracy) up to the reference (1, 0)."""
    hv, front = 0.0, front_2d(points)
    for i, (ins, acc) in enumerate(front):
        nxt = front[i + 1][0] if i + 1 < len(front) else cap
        hv += (min(nxt, cap) - ins) / cap * acc
    return hv


def beats(a: list[tuple[int, float]], b_best: tuple[int, float]) -> bool:
    """Does some point of ``a`` have higher accuracy than ``b_best`` at no more instructions?"""
    return any(acc > b_best[1] and ins <= b_best[0] for ins, acc in a)


def front_share_beaten(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> float:
    """Share of ``b``'s front points for which ``a`` has higher accuracy at no more instructions."""
    fb = front_2d(b)
    return sum(beats(a, p) for p in fb) / len(fb) if fb else 0.0


def mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def plot(runs: list[dict], cap: int, path: pathlib.Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(runs)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.2), squeeze=False, sharey=True)
    for ax, run in zip(axes[0], runs):
        for name, color in (("sparsenas", "tab:blue"), ("random", "tab:orange")):
            pts = run["points"][name]
            ax.scatter([p[0] / 1e6 for p in pts], [p[1] for p in pts], s=12, alpha=0.35, color=color)
            fr = front_2d(pts)
            if fr:
                xs = [p[0] / 1e6 for p in fr] + [cap / 1e6]
                ys = [p[1] for p in fr] + [fr[-1][1]]
                ax.step(xs, ys, where="post", color=color,
                        label=f"{name}: best {max(p[1] for p in pts):.3f}, {len(pts)} fit")
                ax.plot([p[0] / 1e6 for p in fr], [p[1] for p in fr], "o", color=color, ms=4)
        ax.axvline(cap / 1e6, color="gray", ls="--", lw=1)
        ax.set_title(f"seed {run['seed']}: {run['evaluations']} evaluations each", fontsize=9)
        ax.set_xlabel("estimated instructions per inference (M), calibrated cost model")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("validation accuracy (inherited weights)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="digits", choices=["digits", "shapes-cls"])
    ap.add_argument("--flash-kb", type=int, default=160)
    ap.add_argument("--sram-kb", type=int, default=48)
    ap.add_argument("--max-minstr", type=float, default=30.0, help="instruction cap per inference, millions")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--population", type=int, default=10)
    ap.add_argument("--generations", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--device-samples", type=int, default=50)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--markdown-only", action="store_true",
                    help="rewrite the .md from the recorded .json (and the run's random.json histories)")
    args = ap.parse_args()
    if args.markdown_only:
        path = RESULTS / f"tinyformer_sparsenas_vs_random_{args.dataset}.json"
        summary = json.loads(path.read_text())
        if not summary.get("random_candidate_ranges"):
            summary["random_candidate_ranges"] = candidate_ranges(
                ROOT / "runs" / f"bench_sparsenas_vs_random_{args.dataset}", len(summary["runs"]))
            path.write_text(json.dumps(summary, indent=2))
        write_markdown(summary, args.dataset)
        return
    if args.quick:
        args.steps, args.population, args.generations, args.seeds, args.device_samples = 3, 2, 1, 1, 2

    import torch

    torch.set_num_threads(1)
    import tuskml
    from tuskml.plugins.tinyformer.datasets import train_test
    from tuskml.plugins.tinyformer.device_eval import run_on_device
    from tuskml.plugins.tinyformer.evaluator import CandidateEvaluator, accuracy
    from tuskml.plugins.tinyformer.hardware_fit import target_limits
    from tuskml.plugins.tinyformer.train_supernet import SupernetTrainingOptions, train_supernet

    t0 = time.time()
    load_before = os.getloadavg()
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
    cap = int(args.max_minstr * 1e6)
    limits = target_limits("stm32f746", flash_bytes=args.flash_kb * 1024, sram_bytes=args.sram_kb * 1024,
                           max_instructions=cap)
    evaluator = CandidateEvaluator(space, train.images, val.images, val.labels, limits)

    runs, results = [], []
    for seed in range(args.seeds):
        t_seed = time.time()
        sn = tuskml.create("search_strategies", "sparsenas", population=args.population,
                           generations=args.generations, seed=seed).run(space, evaluator, run_dir / f"seed{seed}",
                                                                        progress=True)
        t_sn = time.time() - t_seed
        rnd = tuskml.create("search_strategies", "random", budget=sn.evaluations, seed=1000 + seed).run(
            space, evaluator, run_dir / f"seed{seed}", progress=True)
        row = {"seed": seed, "evaluations": sn.evaluations, "sparsenas_seconds": t_sn,
               "random_seconds": time.time() - t_seed - t_sn, "points": {}}
        for name, res in (("sparsenas", sn), ("random", rnd)):
            b = res.best
            net = evaluator.build(b.candidate)
            pts = fitting_points(res)
            over = [h["over"] for h in res.history if not h["fits"]]
            row["points"][name] = pts
            row[name] = {"val_accuracy": b.accuracy,
                         "test_accuracy": accuracy(net, test.resized(b.candidate.arch.resolution), test.labels),
                         "instructions": b.measurement.instructions, "flash_bytes": b.measurement.flash_bytes,
                         "sram_bytes": b.measurement.sram_bytes, "evaluated": len(res.history), "fitting": len(pts),
                         "fit_rate": len(pts) / max(1, len(res.history)),
                         "over_flash": sum("flash" in o for o in over), "over_sram": sum("sram" in o for o in over),
                         "over_instructions": sum("instructions" in o for o in over),
                         "hypervolume": hypervolume(pts, cap), "arch": b.candidate.arch.short(),
                         "mean_sparsity": statistics.fmean(b.candidate.sparsity.values()) if b.candidate.layers else 0.0}
        sn_best = (row["sparsenas"]["instructions"], row["sparsenas"]["val_accuracy"])
        r_best = (row["random"]["instructions"], row["random"]["val_accuracy"])
        row["sparsenas_beats_random"] = beats(row["points"]["sparsenas"], r_best)
        row["random_beats_sparsenas"] = beats(row["points"]["random"], sn_best)
        row["share_of_random_front_beaten_by_sparsenas"] = front_share_beaten(row["points"]["sparsenas"],
                                                                              row["points"]["random"])
        row["share_of_sparsenas_front_beaten_by_random"] = front_share_beaten(row["points"]["random"],
                                                                              row["points"]["sparsenas"])
        if "origin" in (sn.history[0] if sn.history else {}):
            row["sparsenas_origins"] = {o: sum(h["origin"] == o for h in sn.history)
                                        for o in ("random", "repair", "mutation", "crossover")}
            row["sparsenas_repairs_that_fit"] = sum(h["origin"] == "repair" and h["fits"] for h in sn.history)
        runs.append(row)
        results.append((sn, rnd))
        print(json.dumps({k: v for k, v in row.items() if k != "points"}, indent=2), flush=True)

    title = (f"{args.dataset}: {args.flash_kb} KiB flash / {args.sram_kb} KiB SRAM / {args.max_minstr:g} M instructions "
             f"(dashed), SparseNAS vs random, equal budget")
    png = RESULTS / f"tinyformer_sparsenas_vs_random_{args.dataset}.png"
    plot(runs, cap, png, title)

    # on the emulated Cortex-M7: the best SparseNAS model of seed 0 (sparse, and dense for the ratio) and
    # random's best (instructions only), exact counts vs the cost model's estimate
    n = args.device_samples
    dev_dir = run_dir / "device"
    device = {}
    for name, res in zip(("sparsenas", "random"), results[0]):
        best = res.best
        net = evaluator.build(best.candidate)
        res_px = best.candidate.arch.resolution
        calib = train.resized(res_px)[:32]
        k = n if name == "sparsenas" else 2
        rep = run_on_device(net, calib, test.resized(res_px)[:k], test.labels[:k], "stm32f746", dev_dir / name,
                            sparsity=best.candidate.sparsity, blocks=best.candidate.blocks, chunk=min(k, 50))
        device[name] = {"arch": best.candidate.arch.short(), "device_accuracy": rep.device_accuracy,
                        "device_samples": rep.samples, "bit_exact": rep.bit_exact,
                        "measured_instructions": rep.instructions, "estimated_instructions": best.measurement.instructions,
                        "estimated_over_measured": best.measurement.instructions / rep.instructions,
                        "flash_bytes_linked": rep.flash_bytes, "estimated_flash_bytes": best.measurement.flash_bytes,
                        "sram_bytes_linked": rep.sram_bytes, "sparse_layers": len(rep.sparse_layers)}
        if name == "sparsenas":
            dense_rep = run_on_device(net, calib, test.resized(res_px)[:2], test.labels[:2], "stm32f746",
                                      dev_dir / "dense", sparsity=best.candidate.sparsity, blocks=best.candidate.blocks,
                                      chunk=2, force_format="dense")
            device[name].update(dense_instructions=dense_rep.instructions, dense_bit_exact=dense_rep.bit_exact,
                                dense_over_sparse=dense_rep.instructions / rep.instructions,
                                dense_flash_bytes_linked=dense_rep.flash_bytes)
    wall = time.time() - t0
    agg = {name: {key: mean_sd([r[name][key] for r in runs])
                  for key in ("val_accuracy", "test_accuracy", "instructions", "hypervolume", "fit_rate", "fitting")}
           for name in ("sparsenas", "random")}
    summary = {
        "benchmark": f"tinyformer_sparsenas_vs_random_{args.dataset}", "quick": args.quick,
        "command": f"OMP_NUM_THREADS=1 python benchmarks/tinyformer/bench_sparsenas_vs_random.py {' '.join(sys.argv[1:])}",
        "threads": torch.get_num_threads(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "limits": limits.to_dict(), "space": SPACE, "supernet_steps": args.steps,
        "supernet_resumed_from_step": log.resumed_from,
        "supernet_final_loss": log.losses[-1] if log.losses else None, "train_seconds": t_train, "wall_seconds": wall,
        "population": args.population, "generations": args.generations,
        "runs": [{k: v for k, v in r.items() if k != "points"} for r in runs],
        "fronts": [{"seed": r["seed"], **{k: front_2d(v) for k, v in r["points"].items()}} for r in runs],
        "aggregate": agg,
        "sparsenas_beats_random_in": f"{sum(r['sparsenas_beats_random'] for r in runs)}/{len(runs)} seeds",
        "random_beats_sparsenas_in": f"{sum(r['random_beats_sparsenas'] for r in runs)}/{len(runs)} seeds",
        "mean_share_of_random_front_beaten_by_sparsenas": statistics.fmean(
            r["share_of_random_front_beaten_by_sparsenas"] for r in runs),
        "mean_share_of_sparsenas_front_beaten_by_random": statistics.fmean(
            r["share_of_sparsenas_front_beaten_by_random"] for r in runs),
        "device": device,
    }
    summary["random_candidate_ranges"] = candidate_ranges(run_dir, args.seeds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"tinyformer_sparsenas_vs_random_{args.dataset}"
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2))
    write_markdown(summary, args.dataset)


def candidate_ranges(run_dir: pathlib.Path, seeds: int) -> dict[str, list[float]]:
    """10th/50th/90th percentiles of flash KiB, SRAM KiB and M instructions over random's candidates."""
    import numpy as np

    rows = []
    for seed in range(seeds):
        path = run_dir / f"seed{seed}" / "random.json"
        if path.is_file():
            rows += json.loads(path.read_text())["history"]
    if not rows:
        return {}
    pct = lambda xs: [round(float(v), 1) for v in np.percentile(xs, [10, 50, 90])]  # noqa: E731
    return {"flash_kib": pct([r["flash_bytes"] / 1024 for r in rows]), "sram_kib": pct([r["sram_bytes"] / 1024 for r in rows]),
            "minstr": pct([r["instructions"] / 1e6 for r in rows]), "candidates": len(rows)}


def write_markdown(summary: dict, dataset: str) -> None:
    name = f"tinyformer_sparsenas_vs_random_{dataset}"
    lim = summary["limits"]
    flash_kb, sram_kb, minstr = lim["flash_bytes"] // 1024, lim["sram_bytes"] // 1024, lim["max_instructions"] / 1e6
    runs, agg, device = summary["runs"], summary["aggregate"], summary["device"]
    load_before, wall = summary["loadavg_before"], summary["wall_seconds"]
    rng = summary.get("random_candidate_ranges") or {}
    ranges = (f"flash {rng['flash_kib'][0]}-{rng['flash_kib'][2]} KiB (median {rng['flash_kib'][1]}), SRAM "
              f"{rng['sram_kib'][0]}-{rng['sram_kib'][2]} KiB (median {rng['sram_kib'][1]}) and {rng['minstr'][0]}-"
              f"{rng['minstr'][2]} M estimated instructions (median {rng['minstr'][1]}), 10th-90th percentile over "
              f"random search's {rng['candidates']} candidates") if rng else "(ranges not recorded)"

    def ms(d: dict, fmt: str = ".4f") -> str:
        return f"{d['mean']:{fmt}} ± {d['sd']:{fmt}}"

    md = [f"# SparseNAS vs random search, {dataset}, stm32f746 limited to {flash_kb} KiB flash / "
          f"{sram_kb} KiB SRAM / {minstr:g} M instructions", "",
          f"Command: `{summary['command']}`; 1 thread, load average {load_before[0]:.2f} before, "
          f"{summary['loadavg_after'][0]:.2f} after (2 shared CPUs); supernet {summary['supernet_steps']} sandwich steps "
          f"(resumed from step {summary['supernet_resumed_from_step']} of its checkpoint); population "
          f"{summary['population']}, {summary['generations']} generations; wall {wall / 60:.1f} min.", "",
          f"Why these limits: the candidates of this space have {ranges}; SRAM is the planner's arena (set by the "
          f"first stage's expanded activations) plus the stack. {flash_kb} KiB / {sram_kb} KiB / {minstr:g} M leave only "
          f"a minority of them fitting (random search's fit rate is in the table), so a search must find the few "
          f"fitting, accurate corners. Every engine measurement counts against the budget, fitting or not; random "
          f"search gets exactly as many as SparseNAS used. Flash is the engine's estimate (encoded weights, params, "
          f"code); the device section compares it with the linked image.", "",
          "| seed | evaluations | strategy | fitting (fit rate) | over flash/SRAM/instr | best val acc | its test acc | "
          "its est. instructions | flash B | hypervolume |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for k in ("sparsenas", "random"):
            v = r[k]
            md.append(f"| {r['seed']} | {r['evaluations']} | {k} | {v['fitting']} ({v['fit_rate']:.0%}) | "
                      f"{v['over_flash']}/{v['over_sram']}/{v['over_instructions']} | {v['val_accuracy']:.4f} | "
                      f"{v['test_accuracy']:.4f} | {v['instructions']:,} | {v['flash_bytes']:,} | {v['hypervolume']:.4f} |")
    md += ["", "Mean ± sd over seeds:", "", "| strategy | best val acc | its test acc | hypervolume | fit rate |",
           "|---|---|---|---|---|"]
    for k in ("sparsenas", "random"):
        a = agg[k]
        md.append(f"| {k} | {ms(a['val_accuracy'])} | {ms(a['test_accuracy'])} | {ms(a['hypervolume'])} | "
                  f"{ms(a['fit_rate'], '.2f')} |")
    md += ["", f"Criterion (higher validation accuracy at no more instructions than the other's best): SparseNAS beats "
               f"random's best in {summary['sparsenas_beats_random_in']}; random beats SparseNAS's best in "
               f"{summary['random_beats_sparsenas_in']}. Over the whole fronts: on average "
               f"{summary['mean_share_of_random_front_beaten_by_sparsenas']:.0%} of random's front points have a "
               f"SparseNAS point with higher accuracy at no more instructions, and "
               f"{summary['mean_share_of_sparsenas_front_beaten_by_random']:.0%} of SparseNAS's front points have such "
               f"a random point."]
    if runs and "sparsenas_origins" in runs[0]:
        md += ["", "SparseNAS evaluations by origin (seed: random/repair/mutation/crossover, repairs that fit): " +
               "; ".join(f"{r['seed']}: {'/'.join(str(r['sparsenas_origins'][o]) for o in ('random', 'repair', 'mutation', 'crossover'))}, "
                         f"{r['sparsenas_repairs_that_fit']}" for r in runs) + "."]
    s_dev, r_dev = device.get("sparsenas", {}), device.get("random", {})
    if s_dev:
        md += ["", f"Best SparseNAS model of seed 0 on the emulated Cortex-M7 (`{s_dev['arch']}`): device accuracy "
                   f"{s_dev['device_accuracy']:.4f} on {s_dev['device_samples']} test images, bit-exact {s_dev['bit_exact']}; "
                   f"instructions measured {s_dev['measured_instructions']:,} vs estimated {s_dev['estimated_instructions']:,} "
                   f"(est/measured {s_dev['estimated_over_measured']:.3f}); dense {s_dev['dense_instructions']:,} "
                   f"(dense/sparse {s_dev['dense_over_sparse']:.3f}); flash linked {s_dev['flash_bytes_linked']:,} B "
                   f"(sparse; the search's estimate {s_dev['estimated_flash_bytes']:,} B) vs "
                   f"{s_dev['dense_flash_bytes_linked']:,} B (dense); SRAM linked {s_dev['sram_bytes_linked']:,} B; "
                   f"{s_dev['sparse_layers']} sparse layers."]
    if r_dev:
        md += ["", f"Best random model of seed 0 (`{r_dev['arch']}`): measured {r_dev['measured_instructions']:,} vs "
                   f"estimated {r_dev['estimated_instructions']:,} instructions (est/measured "
                   f"{r_dev['estimated_over_measured']:.3f}), bit-exact {r_dev['bit_exact']}; flash linked "
                   f"{r_dev['flash_bytes_linked']:,} B vs estimated {r_dev['estimated_flash_bytes']:,} B."]
    md += ["", f"Plot: `{name}.png` (accuracy vs estimated instructions, every fitting candidate and the 2-D Pareto "
               f"front of each strategy, one panel per seed; dashed: the instruction cap)."]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))




if __name__ == "__main__":
    main()
