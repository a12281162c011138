"""Train the ``tiny`` preset once on this machine (at most 30 minutes) and score it on held-out prompts.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/mammoth2/train_tiny.py [--minutes 30] [--per-category 16]

Baselines measured in the same run: the same model at its random initialisation (what training
adds) and the ground-truth renders of the same prompts (what GenEvalMini can give at most). Records
training throughput (samples/s over the joint phase), peak memory (process peak RSS on a CPU), the
steps reached in the budget, and the machine's load average (the CPU may be shared).
Writes benchmarks/results/mammoth2_train_tiny.json and .md; the run folder stays in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import statistics
import time
from typing import Any

import attrs

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"


def headline(report: dict[str, Any]) -> dict[str, Any]:
    und = report["understanding"]["accuracy"]
    return {
        "geneval.overall": report["geneval"]["overall"],
        **{f"geneval.{c}": v for c, v in report["geneval"].items() if c != "overall" and isinstance(v, float)},
        **({"geneval_plan.overall": report["geneval_plan"]["overall"]} if "geneval_plan" in report else {}),
        **{f"scene_plan.names_prompt_phrases.{c}": v
           for c, v in report.get("scene_plan", {}).get("names_prompt_phrases", {}).items()},
        "edit.success": report["edit"]["success"]["overall"],
        "edit.preservation": report["edit"]["preservation"]["overall"],
        "edit.success_preserved": report["edit"]["success_preserved"]["overall"],
        **{f"edit.success.{k}": v for k, v in report["edit"]["success"].items() if k != "overall"},
        **{f"edit.preservation.{k}": v for k, v in report["edit"]["preservation"].items() if k != "overall"},
        **({"edit_plan.success": report["edit_plan"]["success"]["overall"]} if "edit_plan" in report else {}),
        "understanding.accuracy": und.get("overall"),
        **{f"understanding.{k}": v for k, v in und.items() if k != "overall"},
    }


def ground_truth_geneval(data_config: Any, per_category: int) -> float:
    from tuskml.plugins.mammoth2.configs_data import GENEVAL_CATEGORIES
    from tuskml.plugins.mammoth2.geneval_mini import GenEvalMini
    from tuskml.plugins.mammoth2.shapes_world import ShapesWorld

    ds = ShapesWorld(attrs.evolve(data_config, split="heldout", task="t2i"))
    samples = [ds.sample(i, kind=c) for c in GENEVAL_CATEGORIES for i in range(per_category)]
    return GenEvalMini().evaluate([s.prompt for s in samples], [s.image for s in samples])["overall"]


def joint_throughput(run: pathlib.Path) -> dict[str, float]:
    from tuskml.plugins.mammoth2.train import iter_metrics

    rows = list(iter_metrics(run))
    joint = [r["samples_per_s"] for r in rows if r.get("phase") != "tokenizer"]
    tok = [r["samples_per_s"] for r in rows if r.get("phase") == "tokenizer"]
    last = {k: v for k, v in (rows[-1] if rows else {}).items() if k in ("loss", "ntp", "fm")}
    return {"joint_samples_per_s": statistics.median(joint) if joint else float("nan"),
            "tokenizer_images_per_s": statistics.median(tok) if tok else float("nan"),
            **{f"final_{k}": v for k, v in last.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="tiny", help="training preset or TOML")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--per-category", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    parser.add_argument("--out", default="/tmp/mammoth2_tiny_run")
    parser.add_argument("--pointer-scale", type=float, default=1.0,
                        help="eval: weight of the colour pointer's logits in text-to-image (models with gen_copy_digit)")
    parser.add_argument("--name", default="mammoth2_train_tiny")
    parser.add_argument("--seed", type=int, default=None,
                        help="training seed (initialisation, batches, noise) instead of the preset's: a replicate run")
    parser.add_argument("--reuse-run", action="store_true",
                        help="re-evaluate the finished run in --out (no training); keep the recorded untrained "
                             "baseline and machine load of the previous results file")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from tuskml.plugins.mammoth2.configs_train import load_train_config
    from tuskml.plugins.mammoth2.evaluate import EvalSettings, evaluate_pipeline, evaluate_run
    from tuskml.plugins.mammoth2.model import Mammoth2Model
    from tuskml.plugins.mammoth2.pipeline import Mammoth2Pipeline
    from tuskml.plugins.mammoth2.train import model_config_of, train

    config = attrs.evolve(load_train_config(args.config), time_limit_minutes=args.minutes, progress=False)
    if args.seed is not None:
        config = attrs.evolve(config, seed=args.seed)
    run = pathlib.Path(args.out)
    settings = EvalSettings(per_category=args.per_category, pointer_scale=args.pointer_scale)
    previous = RESULTS / f"{args.name}.json"
    if args.reuse_run:
        old = json.loads(previous.read_text()) if previous.is_file() else {}
        summary = json.loads((run / "train_summary.json").read_text())
        summary["total_steps"] = summary.get("total_steps", config.tokenizer.steps + config.joint_steps)
        wall = summary.get("train_seconds", float("nan"))
        load_before, load_after = old.get("machine", {}).get("loadavg_before"), old.get("machine", {}).get("loadavg_after")
        untrained_head = {k: v for k, v in old.get("untrained", {}).items() if isinstance(v, float)}
    else:
        shutil.rmtree(run, ignore_errors=True)
        load_before = os.getloadavg()
        torch.manual_seed(config.seed)
        untrained_head = headline(evaluate_pipeline(Mammoth2Pipeline(Mammoth2Model(model_config_of(config))),
                                                    config.data, settings))
        t0 = time.perf_counter()
        summary = train(config, run)
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()
    t1 = time.perf_counter()
    trained = evaluate_run(run, run / "eval", settings)
    eval_s = time.perf_counter() - t1

    result = {
        "config": args.config, "seed": config.seed, "time_limit_minutes": args.minutes, "train_wall_s": wall, "eval_wall_s": eval_s,
        "steps_reached": summary["steps"], "steps_planned": summary["total_steps"],
        "stopped_early": summary["stopped_early"], "peak_memory_mb": summary["peak_memory_mb"],
        **joint_throughput(run),
        "trained": headline(trained), "untrained": untrained_head or {},
        "scene_plan_examples": trained["geneval"].get("scene_plan_examples", []),
        "ground_truth_geneval_overall": ground_truth_geneval(config.data, args.per_category),
        "eval_split": settings.split, "per_category": args.per_category, "eval_settings": attrs.asdict(settings),
        "targets": {"geneval.overall": 0.75, "edit.success": 0.70, "understanding.accuracy": 0.90},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "loadavg_before": load_before, "loadavg_after": load_after},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2, default=str))
    rows = ["| metric | untrained | trained | target |", "|---|---|---|---|"]
    for k, v in result["trained"].items():
        target = result["targets"].get(k, "")
        rows.append(f"| {k} | {_fmt(result['untrained'].get(k))} | {_fmt(v)} | {target} |")
    load_b = f"{load_before[0]:.1f}" if load_before else "?"
    load_a = f"{load_after[0]:.1f}" if load_after else "?"
    md = [f"# mammoth2 `{args.config}` training run on this machine",
          "",
          f"Training seed {config.seed}. Budget {args.minutes} min; reached {summary['steps']} / {summary['total_steps']} steps "
          f"(stopped early: {summary['stopped_early']}) in {wall / 60:.1f} min. Joint phase "
          f"{result['joint_samples_per_s']:.2f} samples/s, VQ phase {result['tokenizer_images_per_s']:.1f} images/s, "
          f"peak memory {summary['peak_memory_mb']:.0f} MiB (process peak RSS). Load average before/after: "
          f"{load_b} / {load_a} on {os.cpu_count()} CPUs.",
          f"Held-out split, {args.per_category} samples per category/kind. Ground-truth renders score "
          f"{result['ground_truth_geneval_overall']:.3f} on GenEvalMini.",
          "", *rows, ""]
    if result["scene_plan_examples"]:
        md += ["Scene plans the trained model wrote (first prompt of each category) and the layout of the ground-truth image:",
               "", "| prompt | written plan | ground-truth layout |", "|---|---|---|",
               *[f"| {e['prompt']} | {e['written']} | {e['truth']} |" for e in result["scene_plan_examples"]], ""]
    (RESULTS / f"{args.name}.md").write_text("\n".join(md))
    print("\n".join(md))


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    main()
