"""Where held-out colour prompts fail for a phrase-plan model: in the written plan or in the image tokens.

For each colour category (colours, position, colour attribution) it samples the AR's plans of held-out
prompts (the probe's sampling: top_k 8, AR guidance 3), then counts the written plans that name every
coloured phrase of the prompt, and among those and the others how many VQ-decoded image-token plans
pass GenEvalMini. A few prompts per category are listed with what the detector found in their plan.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/mammoth2/phrase_diagnostic.py <run dir> \
        [--t2i-plan cell-phrases] [--per-category 32] [--threads 2] [--show 8] [--pointer-scale 1]

``<run dir>`` is a training or plan-probe run (its pipeline or latest checkpoint). Prints only.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--t2i-plan", default="phrases", choices=("phrases", "cell-phrases"))
    parser.add_argument("--per-category", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show", type=int, default=8)
    parser.add_argument("--pointer-scale", type=float, default=1.0, help="weight of the colour pointer's logits (gen_copy_digit)")
    args = parser.parse_args()

    import torch

    from tuskml.plugins.mammoth2.configs_data import ShapesWorldConfig
    from tuskml.plugins.mammoth2.evaluate import load_run_pipeline
    from tuskml.plugins.mammoth2.geneval_mini import GenEvalMini, ShapesDetector
    from tuskml.plugins.mammoth2.pipeline import to_pil
    from tuskml.plugins.mammoth2.shapes_scene import describe
    from tuskml.plugins.mammoth2.shapes_world import ShapesWorld

    torch.set_num_threads(args.threads)
    pipe = load_run_pipeline(args.run)
    ds = ShapesWorld(ShapesWorldConfig(split="heldout", task="t2i", t2i_plan=args.t2i_plan))
    n, detector, score = args.per_category, ShapesDetector(), GenEvalMini()
    for kind in ("colors", "position", "color_attr"):
        samples = [ds.sample(i, kind=kind) for i in range(n)]
        written: list[str] = []
        plans: list = []
        for start in range(0, n, 16):
            result = pipe.generate([s.text for s in samples[start:start + 16]], seed=start, steps=1,
                                   return_result=True, ar_guidance=3.0, top_k=8, pointer_scale=args.pointer_scale)
            written += result.scene_plans or [""] * len(result.images)
            plans += to_pil(result.plan_pixels)
        named = [all(f"{o.colour} {o.shape}" in w for o in s.prompt.objects if o.colour) for s, w in zip(samples, written)]
        passed = [score.score(s.prompt, p) >= 1.0 for s, p in zip(samples, plans)]
        hit = sum(p for p, k in zip(passed, named) if k)
        miss = sum(p for p, k in zip(passed, named) if not k)
        print(f"{kind}: plans name the prompt's phrases {sum(named)}/{n}; image tokens pass "
              f"{hit}/{sum(named)} of those, {miss}/{n - sum(named)} of the others")
        for s, w, p, ok in list(zip(samples, written, plans, passed))[:args.show]:
            print(f"    {s.text!r} -> {w!r} | drawn: {describe(detector.scene(p))!r}{' | pass' if ok else ''}")


if __name__ == "__main__":
    main()
