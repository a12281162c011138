"""Edit plans under different AR sampling settings, on a trained mammoth2 run.

    .venv/bin/python benchmarks/mammoth2/edit_sampling.py RUN_DIR [--per-kind 16] [--split heldout]

For each setting (temperature, AR guidance) the AR plans every edit, the plan is decoded by the VQ
(no DiT: ``steps=1`` and only ``plan_pixels`` are scored) and scored by ``EditScore``: success per edit
kind and preservation. The baseline is the sampling that text-to-image uses (temperature 1, top_k 8,
AR guidance 3), measured in the same run. Writes benchmarks/results/<--name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from plan_probe import edit_plans, edit_score  # benchmarks/mammoth2/, on sys.path when run as a script

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
#: (name, temperature, AR guidance); top_k 8 throughout (it does not matter when greedy)
SETTINGS = [
    ("t2i sampling (baseline)", 1.0, 3.0),
    ("temperature 1, guidance 1", 1.0, 1.0),
    ("temperature 0.5, guidance 3", 0.5, 3.0),
    ("greedy, guidance 3", 0.0, 3.0),
    ("greedy, guidance 1.5", 0.0, 1.5),
    ("greedy, guidance 1 (default)", 0.0, 1.0),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--per-kind", type=int, default=16)
    parser.add_argument("--split", choices=("heldout", "train"), default="heldout")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="mammoth2_edit_sampling", help="results file name")
    args = parser.parse_args()

    import attrs
    import torch

    import tuskml
    from tuskml.plugins.mammoth2.configs_data import EDIT_KINDS
    from tuskml.plugins.mammoth2.configs_train import TrainConfig
    from tuskml.plugins.mammoth2.evaluate import load_run_pipeline
    from tuskml.plugins.mammoth2.shapes_world import ShapesWorld
    from tuskml.plugins.mammoth2.train import CONFIG_FILE

    torch.set_num_threads(args.threads)
    run = pathlib.Path(args.run_dir)
    pipe = load_run_pipeline(run)
    data = tuskml.load_config(run / CONFIG_FILE, TrainConfig).data
    ds = ShapesWorld(attrs.evolve(data, split=args.split, task="edit", image_size=pipe.model.config.image_size))
    samples = [ds.sample(i, kind=k) for k in EDIT_KINDS for i in range(args.per_kind)]
    rows = []
    for name, temperature, guidance in SETTINGS:
        plans = edit_plans(pipe, samples, temperature=temperature, ar_guidance=guidance, top_k=8)
        rows.append({"setting": name, "temperature": temperature, "ar_guidance": guidance,
                     **edit_score(samples, plans)})
        print(name, json.dumps(rows[-1]["success"]), round(rows[-1]["preservation"], 3), flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"run": str(run), "split": args.split, "per_kind": args.per_kind, "rows": rows}
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=2))
    lines = [
        "# mammoth2 edit plans by AR sampling setting",
        "",
        f"Run `{run}`, {args.split} split, {args.per_kind} edits per kind; plans decoded by the VQ alone (no DiT).",
        f"Command: `.venv/bin/python benchmarks/mammoth2/edit_sampling.py {run} --per-kind {args.per_kind}"
        f" --split {args.split} --name {args.name}`.",
        "",
        "| setting | temperature | AR guidance | success | recolour | remove | add | replace | preservation |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["success"]
        lines.append(f"| {r['setting']} | {r['temperature']} | {r['ar_guidance']} | **{s['overall']:.3f}** | "
                     f"{s['recolour']:.2f} | {s['remove']:.2f} | {s['add']:.2f} | {s['replace']:.2f} | "
                     f"{r['preservation']:.3f} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
