"""Where held-out colour prompts fail for a phrase-plan model: in the written plan or in the image tokens.

For each colour category (colours, position, colour attribution) it samples the AR's plans of held-out
prompts (the probe's sampling: top_k 8, AR guidance 3), then counts the written plans that name every
coloured phrase of the prompt, and among those and the others how many VQ-decoded image-token plans
pass GenEvalMini. A few prompts per category are listed with what the detector found in their plan.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/mammoth2/phrase_diagnostic.py <run dir> \
        [--t2i-plan cell-phrases] [--per-category 32] [--threads 2] [--show 8] [--pointer-scale 1]

With ``--first-patches`` (models with a colour pointer, ``gen_copy_digit``) it also teacher-forces the
ground-truth plans and images of both splits and reports, at each object's first patch in raster order
(where its colour is decided), how often the head alone, the pointer alone and their sum name the
right colour digit.

``<run dir>`` is a training or plan-probe run (its pipeline or latest checkpoint). Prints only.
"""

from __future__ import annotations

import argparse
from typing import Any


def first_patch_accuracy(pipe: Any, samples: list[Any]) -> tuple[int, dict[str, float]]:
    """Teacher-forced: (number of first patches, share named right by the colour head, by the
    pointer alone and by their sum) over each object's first patch (raster order) in ``samples``.
    The head alone is the forward with ``copy_scale = 0``; the pointer alone is the difference. A
    ``gen_copy_alone`` model samples from the pointer alone; its head (trained on edit rows) is read
    with every row marked as an edit row."""
    import torch

    from tuskml.plugins.mammoth2.sequence import ntp_labels, positions_from_mask
    from tuskml.plugins.mammoth2.vq import mixed_radix_digits

    model, backbone = pipe.model, pipe.model.backbone
    batch = model.make_batch([s.to_model_sample() for s in samples])
    ids, roles, mask = batch["input_ids"], batch["roles"], batch["attention_mask"].bool()
    digit, factors = backbone.config.gen_copy_digit, backbone.gen_factors
    others = tuple(d - len(factors) for d in range(len(factors)) if d != digit)
    with_head = None if model.copy_alone_rows(roles) is None else torch.zeros(ids.shape[0], dtype=torch.bool)

    def digit_logits(scale: float) -> torch.Tensor:  # the pointed digit's logits, up to a constant per position
        backbone.copy_scale = scale
        try:
            logits = model.run_backbone(ids, mask, position_ids=positions_from_mask(mask), copy_alone=with_head).logits
        finally:
            backbone.copy_scale = 1.0
        return logits[..., backbone.gen_vocab_start:].unflatten(-1, factors).logsumexp(dim=others)

    with torch.no_grad():
        head, total = digit_logits(0.0), digit_logits(1.0)
    labels = ntp_labels(ids, roles)
    image = labels >= backbone.gen_vocab_start
    colour = mixed_radix_digits((labels - backbone.gen_vocab_start).clamp(min=0), factors)[..., digit]
    background = torch.mode(colour[image]).values.item()
    right = {"head": 0, "pointer": 0, "sum": 0}
    n = 0
    for row in range(ids.shape[0]):
        seen: set[int] = set()
        for pos in image[row].nonzero().flatten().tolist():
            c = int(colour[row, pos])
            if c == background or c in seen:
                continue
            seen.add(c)
            n += 1
            for name, logits in (("head", head), ("pointer", total - head), ("sum", total)):
                right[name] += int(logits[row, pos].argmax() == c)
    return n, {k: v / max(n, 1) for k, v in right.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--t2i-plan", default="phrases", choices=("phrases", "cell-phrases"))
    parser.add_argument("--per-category", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show", type=int, default=8)
    parser.add_argument("--pointer-scale", type=float, default=1.0, help="weight of the colour pointer's logits (gen_copy_digit)")
    parser.add_argument("--first-patches", action="store_true", help="teacher-forced colour at each object's first patch")
    args = parser.parse_args()

    import torch

    from tuskml.plugins.mammoth2.configs_data import ShapesWorldConfig
    from tuskml.plugins.mammoth2.evaluate import load_run_pipeline, names_prompt_phrases
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
        named = [names_prompt_phrases(s, w) for s, w in zip(samples, written)]
        passed = [score.score(s.prompt, p) >= 1.0 for s, p in zip(samples, plans)]
        hit = sum(p for p, k in zip(passed, named) if k)
        miss = sum(p for p, k in zip(passed, named) if not k)
        print(f"{kind}: plans name the prompt's phrases {sum(named)}/{n}; image tokens pass "
              f"{hit}/{sum(named)} of those, {miss}/{n - sum(named)} of the others")
        for s, w, p, ok in list(zip(samples, written, plans, passed))[:args.show]:
            print(f"    {s.text!r} -> {w!r} | drawn: {describe(detector.scene(p))!r}{' | pass' if ok else ''}")
    if args.first_patches:
        if getattr(pipe.model.backbone, "copy", None) is None:
            parser.error("--first-patches needs a model with a colour pointer ([backbone] gen_copy_digit)")
        for split in ("train", "heldout"):
            world = ShapesWorld(ShapesWorldConfig(split=split, task="t2i", t2i_plan=args.t2i_plan))
            for kind in ("colors", "position", "color_attr"):
                count, right = first_patch_accuracy(pipe, [world.sample(i, kind=kind) for i in range(n)])
                print(f"first patches, {split} {kind} ({count}): " + ", ".join(f"{k} {v:.2f}" for k, v in right.items()))


if __name__ == "__main__":
    main()
