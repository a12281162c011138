"""Ablations of mammoth2 on the shapes world: each a config swap, same budget, one table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mammoth2/ablations.py [--minutes 30] [--per-category 16]
        [--variants baseline,experts-none,aligner-last-layer,decoder-lumina2] [--config tiny]

Variants (from the issue):
* ``baseline``: the preset as shipped (``ffn`` experts, ``mammoth2`` multi-layer aligner, ``mammoth2-dit``);
* ``experts-none``: no generation experts (``backbone.experts = {type = "none"}``);
* ``aligner-last-layer``: last hidden state + one linear projection instead of the multi-layer aligner;
* ``decoder-lumina2``: diffusers' Lumina2Transformer2DModel of the same width/depth instead of ``mammoth2-dit``.

Every variant gets the same steps, seed, data and wall-clock limit (``--minutes`` each); a variant
that is slower therefore may stop before its planned steps, which the table reports.
Writes benchmarks/results/mammoth2_ablations.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import time
from typing import Any

import attrs

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget per variant")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="scale every phase's steps (quick runs)")
    parser.add_argument("--per-category", type=int, default=16)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default="/tmp/mammoth2_ablations")
    parser.add_argument("--name", default="mammoth2_ablations")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    from tuskml.plugins.mammoth2.configs_train import load_train_config
    from tuskml.plugins.mammoth2.evaluate import EvalSettings, evaluate_run
    from tuskml.plugins.mammoth2.train import iter_metrics, model_config_of, train

    base = load_train_config(args.config)
    scale = args.steps_scale
    base = attrs.evolve(
        base, time_limit_minutes=args.minutes, progress=False,
        tokenizer=attrs.evolve(base.tokenizer, steps=max(1, round(base.tokenizer.steps * scale))),
        stages=tuple(attrs.evolve(s, steps=max(1, round(s.steps * scale))) for s in base.stages),
        warmup_steps=max(1, round(base.warmup_steps * scale)),
        checkpoint_every=max(1, round(base.checkpoint_every * scale)))
    settings = EvalSettings(per_category=args.per_category)
    rows: list[dict[str, Any]] = []
    for name in args.variants.split(","):
        cfg = attrs.evolve(base, model=variant_model(model_config_of(base), name))
        run = pathlib.Path(args.out) / name
        shutil.rmtree(run, ignore_errors=True)
        t0 = time.perf_counter()
        summary = train(cfg, run)
        wall = time.perf_counter() - t0
        report = evaluate_run(run, run / "eval", settings)
        last = [m for m in iter_metrics(run) if m.get("phase") != "tokenizer"][-1:]
        rows.append({
            "variant": name, "steps": summary["steps"], "planned": summary["total_steps"], "train_min": wall / 60,
            "final_ntp": last[0]["ntp"] if last else None, "final_fm": last[0]["fm"] if last else None,
            "samples_per_s": last[0]["samples_per_s"] if last else None,
            "geneval": report["geneval"]["overall"], "edit_success": report["edit"]["success"]["overall"],
            "edit_preservation": report["edit"]["preservation"]["overall"],
            "understanding": report["understanding"]["accuracy"].get("overall"),
        })
        print(json.dumps(rows[-1]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"config": args.config, "minutes_per_variant": args.minutes, "steps_scale": scale,
            "per_category": args.per_category, "split": settings.split, "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "eval_temperature": settings.temperature}
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    head = list(rows[0]) if rows else []
    md = [f"# mammoth2 ablations (`{args.config}`, steps x{scale}, <= {args.minutes} min each, "
          f"{args.per_category} held-out samples per category)", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in head) + " |" for r in rows]
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
