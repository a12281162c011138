"""Joint-training pace of a mammoth2 training preset with and without batch prefetch.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/mammoth2/bench_prefetch.py [--config tiny] [--steps 60] [--repeats 2]

``prefetch = true`` builds the next joint step's batches (scene rendering, tokenizing, the frozen
VQ's codes) in a background thread while the current step computes. Both settings train the same
steps from the same initialisation (the weights end bit-identical, which tests/mammoth2 checks), so
only the pace differs. Runs alternate off / on ``--repeats`` times to even out a shared machine's
drift; the pace of a run is the median of its logged samples/s windows after the first (warm-up).
No visual-tokenizer phase: its speed does not depend on prefetch.
Writes benchmarks/results/mammoth2_prefetch[_<name>].json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import statistics
import tempfile

import attrs

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"


def pace(config, prefetch: bool, out: pathlib.Path) -> float:
    from tuskml.plugins.mammoth2.train import Trainer, iter_metrics

    shutil.rmtree(out, ignore_errors=True)
    Trainer(attrs.evolve(config, prefetch=prefetch), out).train()
    windows = [m["samples_per_s"] for m in iter_metrics(out) if m.get("phase") != "tokenizer"][1:]
    shutil.rmtree(out, ignore_errors=True)
    return statistics.median(windows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="tiny", help="training preset or TOML")
    parser.add_argument("--steps", type=int, default=60, help="joint steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="off/on pairs")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--name", default="")
    args = parser.parse_args()
    if args.steps < 30:
        raise SystemExit("--steps must be at least 30 (samples/s is logged every 10 steps; the first window is warm-up)")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from tuskml.plugins.mammoth2.configs_train import StageConfig, TokenizerTrainConfig, load_train_config

    base = load_train_config(args.config)
    config = attrs.evolve(base, tokenizer=TokenizerTrainConfig(steps=0), stages=(StageConfig(steps=args.steps),),
                          warmup_steps=1, checkpoint_every=10**9, log_every=10, progress=False, time_limit_minutes=0.0,
                          device=args.device)
    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for label in ("off", "on"):
                runs[label].append(pace(config, label == "on", pathlib.Path(tmp) / f"{label}{r}"))
                print(f"repeat {r} prefetch {label}: {runs[label][-1]:.1f} samples/s", flush=True)
    off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
    result = {"config": args.config, "joint_steps": args.steps, "samples_per_step": config.samples_per_step,
              "samples_per_s": runs, "median_off": off, "median_on": on, "speedup": on / off,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "device": args.device,
                          "loadavg_before": load_before, "loadavg_after": os.getloadavg()}}
    name = "mammoth2_prefetch" + (f"_{args.name}" if args.name else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    md = [f"# mammoth2 joint-training pace with and without batch prefetch (`{args.config}`)", "",
          f"{args.steps} joint steps of {config.samples_per_step} samples per run, runs alternating off / on "
          f"{args.repeats} times; {torch.get_num_threads()} torch threads on {os.cpu_count()} CPUs, device {args.device}; "
          f"load average before / after {load_before[0]:.1f} / {os.getloadavg()[0]:.1f}.", "",
          "| prefetch | samples/s per run | median |", "|---|---|---|",
          f"| off (baseline) | {', '.join(f'{v:.1f}' for v in runs['off'])} | {off:.1f} |",
          f"| on | {', '.join(f'{v:.1f}' for v in runs['on'])} | {on:.1f} |", "",
          f"Speed-up: {on / off:.3f}x.", ""]
    (RESULTS / f"{name}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
