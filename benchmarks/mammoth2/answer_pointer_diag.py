"""Answers of one trained run decoded twice: with the answer pointer (``answer_pointer_words``) and with the text head alone.

    .venv/bin/python benchmarks/mammoth2/answer_pointer_diag.py RUN_DIR [--per-kind 96] [--split heldout] [--name N]

The same weights answer the same questions both ways, so the difference is the pointer's alone (no training-trajectory
noise). Colour questions are also split by whether the asked object is a held-out colour-shape pair. A run without
the pointer is decoded by its head only. Prints a JSON object and, with --name, writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from understanding_distractors import RESULTS, run_questions  # this folder is the script's sys.path[0]

KINDS = ("colour", "caption", "presence", "position", "count")


def answers(pipe: Any, samples: list[Any], pointer: bool) -> list[str]:
    """Greedy answers of ``pipe.ask``, with the pointer's split among its words or (the pointer taken out
    for the call) the text head's."""
    model = pipe.model
    saved = model.answer_pointer
    if not pointer:
        model.answer_pointer = None  # ask() then decodes with the head alone
    try:
        return pipe.ask([s.image for s in samples], [s.text for s in samples], max_new_tokens=160)
    finally:
        model.answer_pointer = saved


def main() -> None:
    from tuskml.plugins.mammoth2.geneval_mini import normalise_answer

    args, pipe, data, ds = run_questions(__doc__.splitlines()[0])
    run = args.run_dir
    held = set(data.heldout_pairs)
    report: dict[str, Any] = {"run": run, "split": args.split, "per_kind": args.per_kind,
                              "has_pointer": pipe.model.answer_pointer is not None}
    for decode in ("pointer", "head"):
        if decode == "pointer" and pipe.model.answer_pointer is None:
            continue
        acc: dict[str, Any] = {}
        for kind in KINDS:
            qs = [ds.sample(i, kind=kind) for i in range(args.per_kind)]
            right = [normalise_answer(a) == normalise_answer(q.answer) for q, a in zip(qs, answers(pipe, qs, decode == "pointer"))]
            acc[kind] = sum(right) / len(right)
            if kind == "colour":  # was the asked object a held-out pair?
                groups: dict[str, list[bool]] = defaultdict(list)
                for q, ok in zip(qs, right):
                    asked = f"{q.answer} {q.text.rstrip('?').split()[-1]}"
                    groups["asked held-out" if asked in held else "asked seen"].append(ok)
                acc["colour by asked pair"] = {g: f"{sum(v)}/{len(v)}" for g, v in sorted(groups.items())}
        acc["overall"] = sum(acc[k] for k in KINDS) / len(KINDS)
        report[decode] = acc
    print(json.dumps(report, indent=2))
    if args.name:
        (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
