"""Ablations of mammoth2 on the shapes world: each a config swap, same budget, one table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mammoth2/ablations.py [--minutes 30] [--per-category 16]
        [--variants baseline,experts-none,aligner-last-layer,decoder-lumina2] [--config tiny]

Variants (from the issue):
* ``baseline``: the preset as shipped (``ffn`` experts, ``mammoth2`` multi-layer aligner, ``mammoth2-dit``);
* ``experts-none``: no generation experts (``backbone.experts = {type = "none"}``);
* ``aligner-last-layer``: last hidden state + one linear projection instead of the multi-layer aligner;
* ``decoder-lumina2``: diffusers' Lumina2Transformer2DModel of the same width/depth instead of ``mammoth2-dit``.

Every variant gets the same steps, seed, data and wall-clock limit (``--minutes`` each); a variant
that is slower therefore may stop before its planned steps, which the table reports. ``--recorded``
adds finished ``train_tiny.py`` runs of the unchanged preset as baseline rows (e.g. its replicate
seeds at the full budget, so the swaps are read against the seed spread). Writes
benchmarks/results/mammoth2_ablations.json and .md after every variant.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pathlib
import shutil
import statistics
import sys
from typing import Any

import attrs

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # train_tiny's headline(), also in spawned children
VARIANTS = ("baseline", "experts-none", "aligner-last-layer", "decoder-lumina2")


def variant_model(model: Any, name: str) -> Any:
    """The model config of one ablation variant (a config swap of ``model``)."""
    from tuskml.core.config import merge_overrides

    if name == "baseline":
        return model
    if name == "experts-none":
        return merge_overrides(model, {"backbone": {"experts": {"type": "none"}}})
    if name == "aligner-last-layer":
        return merge_overrides(model, {"aligner": {"type": "last-layer"}})
    if name == "decoder-lumina2":
        dit = model.decoder
        return merge_overrides(model, {"decoder": {
            "type": "lumina2", "patch_size": dit.patch_size, "hidden_size": dit.hidden_size, "num_layers": dit.depth,
            "num_heads": dit.num_heads, "num_kv_heads": dit.num_kv_heads, "rope_axes_dim": list(dit.rope_axes_dim)}})
    raise SystemExit(f"unknown variant {name!r}; variants: {', '.join(VARIANTS)}")


def _row(name: str, seed: int, steps: int, planned: int, train_min: float, samples_per_s: float, peak_mb: float,
         head: dict[str, Any]) -> dict[str, Any]:
    """One table row; ``head`` is :func:`train_tiny.headline` of the run's report."""
    return {"variant": name, "seed": seed, "steps": f"{steps}/{planned}", "train_min": train_min,
            "samples_per_s": samples_per_s, "peak_mb": peak_mb, **{col: head.get(key) for col, key in SCORES.items()}}


HAND_NOTES = "\nNotes (added by hand"

#: table column -> headline key (train_tiny.headline; the keys of its results' "trained" block)
SCORES = {"geneval": "geneval.overall", "single": "geneval.single_object", "two": "geneval.two_object",
          "counting": "geneval.counting", "colours": "geneval.colors", "position": "geneval.position",
          "color_attr": "geneval.color_attr", "edit_success": "edit.success", "edit_preservation": "edit.preservation",
          "understanding": "understanding.accuracy"}


def recorded_row(name: str) -> dict[str, Any]:
    """A row from a finished ``train_tiny.py`` result (``benchmarks/results/<name>.json``)."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"--recorded: no results file {path}")
    r = json.loads(path.read_text())
    return _row(f"baseline ({name})", r.get("seed", 0), r["steps_reached"], r["steps_planned"], r["train_wall_s"] / 60,
                r["joint_samples_per_s"], r["peak_memory_mb"], r["trained"])


def run_row(name: str, run: pathlib.Path) -> dict[str, Any]:
    """A row from a trained and evaluated run folder (train_summary.json, metrics, eval/report.json)."""
    from train_tiny import headline, joint_throughput

    from tuskml.plugins.mammoth2.configs_train import load_train_config

    summary = json.loads((run / "train_summary.json").read_text())
    report = json.loads((run / "eval" / "report.json").read_text())
    return _row(name, load_train_config(run / "train_config.toml").seed, summary["steps"], summary["total_steps"],
                summary["train_seconds"] / 60, joint_throughput(run)["joint_samples_per_s"],
                summary["peak_memory_mb"], headline(report))


def write_table(name: str, title: str, meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Write results/<name>.json and .md (called after every variant, so a crash keeps what ran). Notes
    added by hand at the end of an existing .md (from a line starting "Notes (added by hand") are kept."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    head = list(rows[0]) if rows else []
    md = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in head) + " |" for r in rows]
    recorded = [r for r in rows if r["variant"].startswith("baseline (")]
    if len(recorded) > 1:
        md += ["", f"Recorded baseline runs, mean (sd) over {len(recorded)} seeds: " + ", ".join(
            f"{c} {statistics.mean(r[c] for r in recorded):.3f} ({statistics.stdev(r[c] for r in recorded):.3f})"
            for c in SCORES)]
    text = "\n".join(md) + "\n"
    md_path = RESULTS / f"{name}.md"
    old = md_path.read_text() if md_path.is_file() else ""
    notes = old[old.index(HAND_NOTES):] if HAND_NOTES in old else ""
    md_path.write_text(text + notes)
    return text


def run_variant(name: str, cfg: Any, run: pathlib.Path, settings: Any, threads: int) -> dict[str, Any]:
    """Train and score one variant (run in a child process)."""
    import torch

    from tuskml.plugins.mammoth2.evaluate import evaluate_run
    from tuskml.plugins.mammoth2.train import train

    torch.set_num_threads(threads)
    shutil.rmtree(run, ignore_errors=True)
    train(cfg, run)
    evaluate_run(run, run / "eval", settings)
    return run_row(name, run)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget per variant")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="scale every phase's steps (quick runs)")
    parser.add_argument("--per-category", type=int, default=16)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--recorded", default="",
                        help="comma-separated train_tiny.py result names (benchmarks/results/<name>.json) of the "
                             "unchanged preset, listed as baseline rows: e.g. replicate seeds run at the same budget")
    parser.add_argument("--seed", type=int, default=None, help="training seed instead of the preset's (a replicate)")
    parser.add_argument("--append", action="store_true",
                        help="keep the rows of benchmarks/results/<name>.json; run (or, with --from-runs, read) only "
                             "the variant-seed pairs it lacks")
    parser.add_argument("--from-runs", action="store_true",
                        help="no training: tabulate the variants' finished, evaluated run folders in --out")
    parser.add_argument("--out", default="/tmp/mammoth2_ablations")
    parser.add_argument("--name", default="mammoth2_ablations")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    args = parser.parse_args()
    from tuskml.plugins.mammoth2.configs_train import load_train_config  # torch-free

    names = args.variants.split(",")
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variants {bad}; variants: {', '.join(VARIANTS)}")
    base = load_train_config(args.config)
    if args.seed is not None:
        base = attrs.evolve(base, seed=args.seed)
    rows: list[dict[str, Any]] = [recorded_row(n) for n in args.recorded.split(",") if n]
    previous = RESULTS / f"{args.name}.json"
    if args.append and previous.is_file():
        kept = [r for r in json.loads(previous.read_text())["rows"] if not r["variant"].startswith("baseline (")]
        rows += kept
        done = {(r["variant"], r["seed"]) for r in kept}
        if not args.from_runs:  # the seed of a run folder is known only once it is read
            names = [n for n in names if (n, base.seed) not in done]

    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    from tuskml.plugins.mammoth2.evaluate import EvalSettings
    from tuskml.plugins.mammoth2.train import model_config_of

    scale = args.steps_scale
    base = attrs.evolve(
        base, time_limit_minutes=args.minutes, progress=False,
        tokenizer=attrs.evolve(base.tokenizer, steps=max(1, round(base.tokenizer.steps * scale))),
        stages=tuple(attrs.evolve(s, steps=max(1, round(s.steps * scale))) for s in base.stages),
        warmup_steps=max(1, round(base.warmup_steps * scale)),
        checkpoint_every=max(1, round(base.checkpoint_every * scale)))
    settings = EvalSettings(per_category=args.per_category)
    meta = {"config": args.config, "minutes_per_variant": args.minutes, "steps_scale": scale,
            "per_category": args.per_category, "split": settings.split, "loadavg_before": load_before,
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "eval_temperature": settings.temperature,
            "recorded": args.recorded}
    title = (f"# mammoth2 ablations (`{args.config}`, steps x{scale}, <= {args.minutes} min each, "
             f"{args.per_category} held-out samples per category)")
    for name in names:
        run = pathlib.Path(args.out) / name
        if args.from_runs:
            row = run_row(name, run)
            rows = [r for r in rows if (r["variant"], r["seed"]) != (name, row["seed"])] + [row]
            continue
        cfg = attrs.evolve(base, model=variant_model(model_config_of(base), name))
        # each variant trains in a fresh process, so its peak memory (process peak RSS) is its own
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            rows.append(pool.apply(run_variant, (name, cfg, run, settings, args.threads)))
        print(json.dumps(rows[-1]), flush=True)
        meta["loadavg_after"] = os.getloadavg()
        write_table(args.name, title, meta, rows)
    print(write_table(args.name, title, meta, rows))


if __name__ == "__main__":
    main()
