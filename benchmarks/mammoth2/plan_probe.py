"""Probe the AR plan alone: train the VQ, then the AR on one task, and score the VQ-decoded plans.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mammoth2/plan_probe.py --variant colour-structure \
        [--task t2i|edit|understanding] [--steps 600] [--per-category 16]

``--task understanding`` trains on questions only (batch 3x ``--batch``) and scores the answers.

The DiT is not what is measured here (it trains on one image row per step, to keep its cost out),
so the numbers say how good the plans that the DiT renders can be. Per variant it records:
* ``roundtrip``: GenEvalMini / edit scores of the VQ round trip of the ground-truth images (the
  ceiling a perfect plan reaches through this tokenizer);
* ``plan``: the same scores of VQ-decoded sampled plans (t2i: top_k 8, AR guidance 3; edits: the
  pipeline's defaults, greedy and unguided), held-out split;
* ``plan_train``: the same on the train split (what the AR learned vs what it generalises).

Variants: ``flat`` (a 256-code VQ, one flat head, a plain conv-stem ViT) and ``colour-structure`` (a
colour group of 16 codes and a structure group of 64, 8-d each, ``groups = "colour-structure"``,
factorised head, and the ViT's ``colour_split``).
Writes benchmarks/results/mammoth2_plan_probe_<variant>_<task>.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import time
from typing import Any

import attrs

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
VARIANTS = {
    "flat": {"visual_tokenizer": {"num_codebooks": 1, "groups": "learned", "codebook_size": 256, "code_dim": 8},
             "backbone": {"gen_head": "flat", "gen_copy_digit": None, "gen_copy_alone": False, "gen_copy_from_image": False},
             "vision_encoder": {"colour_split": False}, "answer_pointer_words": []},
    "colour-structure": {"visual_tokenizer": {"num_codebooks": 2, "groups": "colour-structure", "codebook_size": 64,
                                              "colour_codebook_size": 16, "code_dim": 16},
                         "backbone": {"gen_head": "factorized"}, "vision_encoder": {"colour_split": True}},
}


def edit_plans(pipe: Any, samples: list[Any], seed: int = 0, **edit_kwargs: Any) -> list[Any]:
    """The AR's edit plans of shapes-world ``samples``, decoded by the VQ alone (PIL, no DiT steps);
    ``edit_kwargs`` (sampling settings) go to ``pipe.edit``, whose defaults apply otherwise."""
    from tuskml.plugins.mammoth2.pipeline import to_pil

    plans: list[Any] = []
    for start in range(0, len(samples), 16):
        chunk = samples[start:start + 16]
        result = pipe.edit([s.source for s in chunk], [s.text for s in chunk], seed=seed + start, steps=1,
                           return_result=True, **edit_kwargs)
        plans += to_pil(result.plan_pixels)
    return plans


def t2i_plans(pipe: Any, samples: list[Any], seed: int = 0, written: list[str] | None = None,
              **generate_kwargs: Any) -> list[Any]:
    """The AR's text-to-image plans of shapes-world ``samples``, decoded by the VQ alone (PIL, no DiT
    steps); ``generate_kwargs`` are the sampling settings of ``pipe.generate``. A ``written`` list
    receives the scene plans' text (``scene_plan`` models)."""
    from tuskml.plugins.mammoth2.pipeline import to_pil

    plans: list[Any] = []
    for start in range(0, len(samples), 16):
        result = pipe.generate([s.text for s in samples[start:start + 16]], seed=seed + start, steps=1,
                               return_result=True, **generate_kwargs)
        plans += to_pil(result.plan_pixels)
        if written is not None:
            written += result.scene_plans or []
    return plans


def edit_score(samples: list[Any], images: list[Any]) -> dict[str, Any]:
    """Edit success per kind and overall preservation of ``images`` as edits of ``samples``."""
    from tuskml.plugins.mammoth2.geneval_mini import EditScore

    score = EditScore().evaluate([s.kind for s in samples], images, [s.source for s in samples],
                                 [s.scene for s in samples], [s.edit_region for s in samples])
    return {"success": score["success"], "preservation": score["preservation"]["overall"]}


def plan_scores(pipe: Any, data: Any, task: str, split: str, n: int, seed: int = 0) -> dict[str, Any]:
    """GenEvalMini (t2i) or edit scores of VQ-decoded plans on ``n`` samples per category/kind, or
    understanding accuracy per question kind."""
    import torch

    from tuskml.plugins.mammoth2.configs_data import EDIT_KINDS, GENEVAL_CATEGORIES, PHRASE_PLANS
    from tuskml.plugins.mammoth2.geneval_mini import GenEvalMini
    from tuskml.plugins.mammoth2.pipeline import to_pil
    from tuskml.plugins.mammoth2.shapes_world import ShapesWorld, to_tensor

    ds = ShapesWorld(attrs.evolve(data, split=split, task=task))
    if task == "understanding":
        from tuskml.plugins.mammoth2.configs_data import QUESTION_KINDS
        from tuskml.plugins.mammoth2.geneval_mini import understanding_accuracy

        qs = [ds.sample(i, kind=k) for k in QUESTION_KINDS for i in range(n)]
        answers = [a for start in range(0, len(qs), 16)
                   for a in pipe.ask([q.image for q in qs[start:start + 16]], [q.text for q in qs[start:start + 16]])]
        return {"answers": understanding_accuracy([q.kind for q in qs], answers, [q.answer for q in qs])}
    kinds = GENEVAL_CATEGORIES if task == "t2i" else EDIT_KINDS
    samples = [ds.sample(i, kind=k) for k in kinds for i in range(n)]
    model = pipe.model
    vq = model.visual_tokenizer
    out: dict[str, Any] = {}
    written: list[str] = []
    with torch.no_grad():
        truth = torch.stack([to_tensor(s.image) for s in samples])
        roundtrip = to_pil(vq.decode(vq.encode(truth)).float().clamp(-1, 1))
        if task == "t2i":
            plans = t2i_plans(pipe, samples, seed, written, ar_guidance=3.0, top_k=8)
            if data.t2i_plan in PHRASE_PLANS:
                from tuskml.plugins.mammoth2.evaluate import phrase_copy_rates

                out["plan_names_prompt_phrases"] = phrase_copy_rates(samples, written)
        else:
            plans = edit_plans(pipe, samples, seed)  # the pipeline's edit defaults: greedy, AR guidance 1
    for name, images in (("roundtrip", roundtrip), ("plan", plans)):
        if task == "t2i":
            out[name] = GenEvalMini().evaluate([s.prompt for s in samples], images)
        else:
            out[name] = edit_score(samples, images)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="colour-structure")
    parser.add_argument("--task", choices=("t2i", "edit", "understanding"), default="t2i")
    parser.add_argument("--steps", type=int, default=600, help="AR steps (after the tokenizer phase)")
    parser.add_argument("--vq-steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--per-category", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="/tmp/mammoth2_plan_probe")
    parser.add_argument("--model-json", default="{}", help="extra model overrides, e.g. '{\"visual_tokenizer\": {...}}'")
    parser.add_argument("--data-json", default="{}", help="shapes-world overrides, e.g. '{\"edit_plan\": \"layout\"}'")
    parser.add_argument("--name", default="", help="suffix of the results file (for --model-json runs)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from tuskml.core.config import merge_overrides
    from tuskml.plugins.mammoth2.configs_train import StageConfig, load_train_config
    from tuskml.plugins.mammoth2.evaluate import load_run_pipeline
    from tuskml.plugins.mammoth2.train import model_config_of, train

    base = load_train_config("tiny")
    model = merge_overrides(model_config_of(base), {**VARIANTS[args.variant], "fm_max_rows": 1})
    model = merge_overrides(model, json.loads(args.model_json))
    task_batch = {"t2i": (args.batch, 0, 0), "edit": (0, args.batch, 0), "understanding": (0, 0, 3 * args.batch)}[args.task]
    data = merge_overrides(base.data, json.loads(args.data_json))
    config = attrs.evolve(base, model=model, data=data, task_batch=task_batch, progress=False, time_limit_minutes=0.0,
                          tokenizer=attrs.evolve(base.tokenizer, steps=args.vq_steps),
                          stages=(StageConfig(name="full", steps=args.steps),))
    tag = f"{args.variant}_{args.task}" + (f"_{args.name}" if args.name else "")
    run = pathlib.Path(args.out) / tag
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    summary = train(config, run)
    train_s = time.perf_counter() - t0
    pipe = load_run_pipeline(run)
    result = {"variant": args.variant, "task": args.task, "model_json": json.loads(args.model_json),
              "data_json": json.loads(args.data_json), "steps": args.steps, "vq_steps": args.vq_steps,
              "batch": args.batch, "train_s": train_s, "threads": args.threads, "summary_steps": summary["steps"],
              "heldout": plan_scores(pipe, config.data, args.task, "heldout", args.per_category),
              "train": plan_scores(pipe, config.data, args.task, "train", args.per_category)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"mammoth2_plan_probe_{tag}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k not in ("heldout", "train")}))
    for split in ("heldout", "train"):
        for name, score in result[split].items():
            print(split, name, json.dumps(score)[:400])


if __name__ == "__main__":
    main()
