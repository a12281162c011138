"""Understanding accuracy split by the scene's distractors, on a trained mammoth2 run.

    .venv/bin/python benchmarks/mammoth2/understanding_distractors.py RUN_DIR [--per-kind 96] [--split heldout]

Presence and position questions name one object ("is there a red triangle?"). Each question is put
in one group by the other objects in its scene: ``shape shared`` (another object has the named shape
in another colour), ``colour shared`` (another object has the named colour, and none the shape), or
``unique`` (neither). A model that finds objects by shape alone fails the ``shape shared`` group.
Prints a JSON object and, with --name, writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from collections import defaultdict
from typing import Any

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"


def group(question: str, scene: Any) -> str:
    """``shape shared``, ``colour shared`` or ``unique``: the question's named object against ``scene``."""
    colour, shape = question.rstrip("?").split()[-2:]
    others = [o for o in scene.objects if (o.colour, o.shape) != (colour, shape)]
    if any(o.shape == shape for o in others):
        return "shape shared"
    if any(o.colour == colour for o in others):
        return "colour shared"
    return "unique"


def run_questions(description: str) -> tuple[argparse.Namespace, Any, Any, Any]:
    """The command line of an understanding diagnostic (``RUN_DIR [--per-kind] [--split] [--threads]
    [--name]``) -> (args, the run's pipeline, its data config, its shapes world of questions on ``--split``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("run_dir")
    parser.add_argument("--per-kind", type=int, default=96)
    parser.add_argument("--split", choices=("heldout", "train"), default="heldout")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="", help="results file name (none: print only)")
    args = parser.parse_args()

    import attrs
    import torch

    import tuskml
    from tuskml.plugins.mammoth2.configs_train import TrainConfig
    from tuskml.plugins.mammoth2.evaluate import load_run_pipeline
    from tuskml.plugins.mammoth2.shapes_world import ShapesWorld
    from tuskml.plugins.mammoth2.train import CONFIG_FILE

    torch.set_num_threads(args.threads)
    run = pathlib.Path(args.run_dir)
    data = tuskml.load_config(run / CONFIG_FILE, TrainConfig).data
    return args, load_run_pipeline(run), data, ShapesWorld(attrs.evolve(data, split=args.split, task="understanding"))


def main() -> None:
    from tuskml.plugins.mammoth2.geneval_mini import normalise_answer

    args, pipe, _, ds = run_questions(__doc__.splitlines()[0])
    out: dict[str, dict[str, float]] = {}
    for kind in ("presence", "position"):
        qs = [ds.sample(i, kind=kind) for i in range(args.per_kind)]
        answers = [a for s in range(0, len(qs), 16)
                   for a in pipe.ask([q.image for q in qs[s:s + 16]], [q.text for q in qs[s:s + 16]])]
        right: dict[str, list[bool]] = defaultdict(list)
        for q, a in zip(qs, answers):
            ok = normalise_answer(a) == normalise_answer(q.answer)
            right[group(q.text, q.scene)].append(ok)
            right["all"].append(ok)
        out[kind] = {g: sum(v) / len(v) for g, v in sorted(right.items())}
        out[kind].update({f"n {g}": len(v) for g, v in sorted(right.items())})
    result = {"run": args.run_dir, "split": args.split, "per_kind": args.per_kind, "accuracy": out}
    print(json.dumps(result, indent=2))
    if args.name:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
