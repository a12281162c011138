"""The demo: each half calls the same code as its own CLI command, with small budgets.

- mammoth2: ``tuskml mammoth2 train`` (tiny preset, shortened) then ``tuskml mammoth2 eval``.
- tinyformer: ``tuskml tinyformer search`` on ``digits`` for ``stm32f746``, which ends with the
  SparseEngine deployment run bit-exact on the emulated Cortex-M7.
Outputs land in one folder with an ``index.html`` that shows the pictures and tables.
"""

from __future__ import annotations

import html
import json
import pathlib
import time
from typing import Any

import attrs
import click

from tuskml.core.config import atomic_write_bytes

#: (quick, full) budgets; the full demo is sized for ~10 minutes on 2 cores.
MAMMOTH2_BUDGET = {
    "quick": {"tokenizer_steps": 30, "stages": (10, 30), "per_category": 2, "sample_steps": 8},
    "full": {"tokenizer_steps": 100, "stages": (30, 270), "per_category": 4, "sample_steps": 20},
}
TINYFORMER_BUDGET = {
    "quick": {"supernas_samples": 8, "supernet_steps": 60, "population": 4, "generations": 1,
              "finetune_steps": 40, "device_samples": 64},
    "full": {"supernas_samples": 32, "supernet_steps": 400, "population": 8, "generations": 3,
             "finetune_steps": 200, "device_samples": 0},
}


def run_mammoth2(out: pathlib.Path, *, quick: bool, seed: int) -> dict[str, Any]:
    from tuskml.plugins.mammoth2.configs_train import StageConfig, load_train_config
    from tuskml.plugins.mammoth2.evaluate import EvalSettings, evaluate_run
    from tuskml.plugins.mammoth2.train import train

    budget = MAMMOTH2_BUDGET["quick" if quick else "full"]
    base = load_train_config("tiny")
    frozen_steps, full_steps = budget["stages"]
    config = attrs.evolve(
        base, seed=seed, checkpoint_every=max(frozen_steps + full_steps, 1),
        tokenizer=attrs.evolve(base.tokenizer, steps=budget["tokenizer_steps"]),
        stages=(StageConfig(name="frozen-backbone", steps=frozen_steps, frozen=("backbone",)),
                StageConfig(name="full", steps=full_steps)),
    )
    run_dir = out / "mammoth2" / "run"
    t0 = time.time()
    # a second demo into the same folder continues (or re-uses) the run instead of refusing it
    metrics = train(config, run_dir, resume=(run_dir / "checkpoints" / "latest").exists())
    train_s = time.time() - t0
    settings = EvalSettings(per_category=budget["per_category"], steps=budget["sample_steps"], seed=seed)
    report = evaluate_run(run_dir, out / "mammoth2" / "eval", settings)
    return {"train_seconds": train_s, "train_metrics": metrics, "report": report}


def run_tinyformer(out: pathlib.Path, *, quick: bool, seed: int) -> dict[str, Any]:
    from tuskml.plugins.tinyformer.search_pipeline import SearchRunOptions, run_search

    budget = TINYFORMER_BUDGET["quick" if quick else "full"]
    opts = SearchRunOptions(dataset="digits", target="stm32f746", out_dir=str(out / "tinyformer"), seed=seed,
                            **budget)
    return run_search(opts)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    if "mammoth2" in results:
        rep = results["mammoth2"]["report"]
        rows.append(("mammoth2", "GenEvalMini overall (held-out prompts)", _fmt(rep["geneval"]["overall"])))
        for cat, score in rep["geneval"].items():
            if cat != "overall" and isinstance(score, (int, float)):
                rows.append(("mammoth2", f"  {cat}", _fmt(score)))
        edit = rep.get("edit", {})
        if "success" in edit:
            rows.append(("mammoth2", "edit success (all kinds)", _fmt(_mean(edit["success"]))))
            rows.append(("mammoth2", "edit preservation (all kinds)", _fmt(_mean(edit["preservation"]))))
        und = rep.get("understanding", {})
        if "accuracy" in und:
            rows.append(("mammoth2", "understanding accuracy (all kinds)", _fmt(_mean(und["accuracy"]))))
        rows.append(("mammoth2", "training time (s)", _fmt(results["mammoth2"]["train_seconds"])))
    if "tinyformer" in results:
        res = results["tinyformer"]
        rows += [
            ("tinyformer", "architecture", res.get("arch_summary", "-")),
            ("tinyformer", "float accuracy (digits test)", _fmt(res.get("float_accuracy"))),
            ("tinyformer", "int8 accuracy on the emulated Cortex-M7", _fmt(res.get("device_accuracy"))),
            ("tinyformer", "bit-exact vs reference", _fmt(res.get("bit_exact"))),
            ("tinyformer", "flash bytes (limit 1,048,576)", _fmt(res.get("flash_bytes"))),
            ("tinyformer", "SRAM bytes (limit 327,680)", _fmt(res.get("sram_bytes"))),
            ("tinyformer", "instructions per image, sparse", _fmt(res.get("instructions"))),
            ("tinyformer", "instructions per image, dense", _fmt(res.get("dense_instructions"))),
        ]
        if res.get("instructions") and res.get("dense_instructions"):
            rows.append(("tinyformer", "sparse / dense instructions", _fmt(res["instructions"] / res["dense_instructions"])))
    return rows


def _mean(values: Any) -> float | None:
    if isinstance(values, dict):
        if isinstance(values.get("overall"), (int, float)):
            return values["overall"]
        nums = [v for v in values.values() if isinstance(v, (int, float))]
        return sum(nums) / len(nums) if nums else None
    return values if isinstance(values, (int, float)) else None


def write_index(out: pathlib.Path, results: dict[str, Any], rows: list[tuple[str, str, str]], wall: float) -> pathlib.Path:
    pictures = sorted(p for p in out.rglob("*.png") if "deploy" not in p.parts)
    table = "\n".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{html.escape(c)}</td></tr>"
                      for a, b, c in rows)
    figures = "\n".join(
        f'<figure><img src="{html.escape(str(p.relative_to(out)))}"><figcaption>{html.escape(str(p.relative_to(out)))}'
        f"</figcaption></figure>" for p in pictures)
    links = "\n".join(f'<li><a href="{html.escape(str(p.relative_to(out)))}">{html.escape(str(p.relative_to(out)))}</a></li>'
                      for p in sorted(out.rglob("*.json")) if "deploy" not in p.parts)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tuskml demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}
img{{image-rendering:pixelated;max-width:100%;border:1px solid #ccc}}figure{{display:inline-block;margin:8px}}</style></head>
<body><h1>tuskml demo</h1>
<p>Finished in {wall:.0f} s. mammoth2: a tiny unified AR + diffusion model trained on the shapes world;
tinyformer: NAS under STM32F746 limits, then SparseEngine int8 C run on an emulated Cortex-M7.</p>
<h2>Summary</h2><table><tr><th>family</th><th>measure</th><th>value</th></tr>{table}</table>
<h2>Pictures</h2>{figures}
<h2>Raw results</h2><ul>{links}</ul></body></html>
"""
    path = out / "index.html"
    atomic_write_bytes(path, page.encode())
    return path


def run_demo(out: str | pathlib.Path, *, quick: bool = False, only: str | None = None, seed: int = 0) -> dict[str, Any]:
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results: dict[str, Any] = {}
    if only in (None, "mammoth2"):
        click.secho("== mammoth2: train a tiny unified AR + diffusion model on the shapes world ==", bold=True)
        results["mammoth2"] = run_mammoth2(out, quick=quick, seed=seed)
    if only in (None, "tinyformer"):
        click.secho("== tinyformer: search on digits under STM32F746 limits, deploy to an emulated Cortex-M7 ==",
                    bold=True)
        results["tinyformer"] = run_tinyformer(out, quick=quick, seed=seed)
    wall = time.time() - t0
    rows = summary_rows(results)
    atomic_write_bytes(out / "summary.json", json.dumps({"quick": quick, "wall_seconds": wall,
                                                         "rows": rows}, indent=2, default=str).encode())
    index = write_index(out, results, rows, wall)
    width = max(len(r[1]) for r in rows) if rows else 10
    click.secho("\n== summary ==", bold=True)
    for family, measure, value in rows:
        click.echo(f"{family:<11} {measure:<{width}}  {value}")
    click.echo(f"\nall outputs: {out}/ (open {index})")
    return results
