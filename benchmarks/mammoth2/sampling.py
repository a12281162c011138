"""AR plans under different sampling settings, on a trained mammoth2 run: edits or text to image.

    .venv/bin/python benchmarks/mammoth2/sampling.py RUN_DIR --task edit [--per-kind 16] [--split heldout]
    .venv/bin/python benchmarks/mammoth2/sampling.py RUN_DIR --task t2i [--per-kind 32] [--split train]

For each setting (temperature, top_k, AR guidance) the AR plans every sample, the plan is decoded by
the VQ (no DiT: only ``plan_pixels`` are scored) and scored by ``EditScore`` (success per edit kind and
preservation) or ``GenEvalMini`` (per category). A scene-plan model writes its plan greedily in every
setting; the settings change only how the image tokens are sampled. The first row is the baseline:
the sampling that text-to-image evaluation used before scene plans (temperature 1, top_k 8, AR
guidance 3), measured in the same run. Writes benchmarks/results/<--name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from plan_probe import edit_plans, edit_score, t2i_plans  # benchmarks/mammoth2/, on sys.path as a script

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
#: (name, temperature, top_k, AR guidance); top_k does not matter when greedy
SETTINGS = {
    "edit": [
        ("t2i sampling (baseline)", 1.0, 8, 3.0),
        ("temperature 1, guidance 1", 1.0, 8, 1.0),
        ("temperature 0.5, guidance 3", 0.5, 8, 3.0),
        ("greedy, guidance 3", 0.0, 8, 3.0),
        ("greedy, guidance 1.5", 0.0, 8, 1.5),
        ("greedy, guidance 1 (edit default)", 0.0, 8, 1.0),
    ],
    "t2i": [
        ("top_k 8, guidance 3 (baseline)", 1.0, 8, 3.0),
        ("top_k 8, guidance 2", 1.0, 8, 2.0),
        ("top_k 8, guidance 1.5", 1.0, 8, 1.5),
        ("top_k 8, guidance 1", 1.0, 8, 1.0),
        ("temperature 0.7, top_k 8, guidance 3", 0.7, 8, 3.0),
        ("temperature 0.7, top_k 8, guidance 2", 0.7, 8, 2.0),
        ("temperature 0.7, top_k 8, guidance 1.5", 0.7, 8, 1.5),
        ("temperature 0.5, top_k 8, guidance 2", 0.5, 8, 2.0),
        ("greedy, guidance 3", 0.0, 8, 3.0),
        ("greedy, guidance 2", 0.0, 8, 2.0),
        ("greedy, guidance 1", 0.0, 8, 1.0),
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--task", choices=("edit", "t2i"), default="edit")
    parser.add_argument("--per-kind", type=int, default=16, help="samples per edit kind / GenEval category")
    parser.add_argument("--split", choices=("heldout", "train"), default="heldout")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="", help="results file name (default mammoth2_<task>_sampling)")
    args = parser.parse_args()
    name = args.name or f"mammoth2_{args.task}_sampling"

    import attrs
    import torch

    import tuskml
    from tuskml.plugins.mammoth2.configs_data import EDIT_KINDS, GENEVAL_CATEGORIES
    from tuskml.plugins.mammoth2.configs_train import TrainConfig
    from tuskml.plugins.mammoth2.evaluate import load_run_pipeline
    from tuskml.plugins.mammoth2.geneval_mini import GenEvalMini
    from tuskml.plugins.mammoth2.shapes_world import ShapesWorld
    from tuskml.plugins.mammoth2.train import CONFIG_FILE

    torch.set_num_threads(args.threads)
    run = pathlib.Path(args.run_dir)
    pipe = load_run_pipeline(run)
    data = tuskml.load_config(run / CONFIG_FILE, TrainConfig).data
    ds = ShapesWorld(attrs.evolve(data, split=args.split, task=args.task, image_size=pipe.model.config.image_size))
    kinds = EDIT_KINDS if args.task == "edit" else GENEVAL_CATEGORIES
    samples = [ds.sample(i, kind=k) for k in kinds for i in range(args.per_kind)]
    rows = []
    for setting, temperature, top_k, guidance in SETTINGS[args.task]:
        kw = {"temperature": temperature, "ar_guidance": guidance, "top_k": top_k}
        if args.task == "edit":
            score = edit_score(samples, edit_plans(pipe, samples, **kw))
        else:
            score = {"success": GenEvalMini().evaluate([s.prompt for s in samples], t2i_plans(pipe, samples, **kw))}
            score["success"].pop("n", None)
        rows.append({"setting": setting, **kw, **score})
        print(setting, json.dumps(rows[-1]["success"]), flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"run": str(run), "task": args.task, "split": args.split, "per_kind": args.per_kind, "rows": rows}
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2))
    what = "edits per kind" if args.task == "edit" else "prompts per GenEval category"
    lines = [
        f"# mammoth2 {'edit' if args.task == 'edit' else 'text-to-image'} plans by AR sampling setting",
        "",
        f"Run `{run}`, {args.split} split, {args.per_kind} {what}; plans decoded by the VQ alone (no DiT).",
        f"Command: `.venv/bin/python benchmarks/mammoth2/sampling.py {run} --task {args.task} --per-kind {args.per_kind}"
        f" --split {args.split} --name {name}`.",
        "",
        "| setting | temperature | top_k | AR guidance | success | " + " | ".join(kinds)
        + (" | preservation |" if args.task == "edit" else " |"),
        "|---" * (5 + len(kinds) + (args.task == "edit")) + "|",
    ]
    for r in rows:
        s = r["success"]
        cells = [r["setting"], str(r["temperature"]), str(r["top_k"]), str(r["ar_guidance"]), f"**{s['overall']:.3f}**",
                 *(f"{s[k]:.2f}" for k in kinds)] + ([f"{r['preservation']:.3f}"] if args.task == "edit" else [])
        lines.append("| " + " | ".join(cells) + " |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
