"""The demo: each half calls the same code as its own CLI command, with small budgets.

- mammoth2: ``tuskml mammoth2 train`` (tiny preset, shortened) then ``tuskml mammoth2 eval``.
- tinyformer: ``tuskml tinyformer search`` on ``digits`` for ``stm32f746``, which ends with the
  SparseEngine deployment run bit-exact on the emulated Cortex-M7.
Outputs land in one folder with an ``index.html`` that shows the pictures and tables.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import json
import math
import os
import pathlib
import shutil
import time
from typing import Any

import attrs
import click

from tuskml.core.config import atomic_write_bytes
from tuskml.core.errors import TuskmlError
from tuskml.plugins.demo.timing import PhaseClock, Watch

#: (quick, full) budgets. Targets on 2 cores: quick under 2 minutes, full under 10 (measured by
#: benchmarks/demo/bench_demo.py, results in benchmarks/results/demo_timing.md). A joint step of the
#: tiny preset carries 144 samples (task_batch 32/16/96); with scene plans it took ~1.9 s on one
#: thread on 2026-12-06 (when tinyformer's unchanged phases also ran 35% slower than that morning),
#: and 160 / 24 joint steps ran 615 / 125 s, over target, so the joint stages were cut to 120 / 16.
MAMMOTH2_BUDGET = {
    "quick": {"tokenizer_steps": 16, "stages": (4, 12), "per_category": 1, "sample_steps": 4},
    "full": {"tokenizer_steps": 80, "stages": (20, 100), "per_category": 4, "sample_steps": 20},
}
# SuperNAS picks the space whose fitting subnets have the most FLOPs; under the STM32F746's 1 MB /
# 320 KB every subnet fits, so it always picks the largest resolution offered, and the supernet
# step and the emulated instructions per image grow with its square (48 px: 1.6 s per sandwich step
# at batch 64, 1 thread). The demo offers 16 px (digits are 8 x 8 scans) and lets SuperNAS choose
# the width. The emulator runs about 7-8 million Cortex-M7 instructions per second here (2.45 M per
# image for the full demo's model: 165 s for all 450 test images), so the full demo runs 150 of them.
TINYFORMER_BUDGET = {
    "quick": {"space_overrides": {"resolutions": [16], "width_mults": [0.5, 0.75, 1.0]},
              "supernas_samples": 4, "supernet_steps": 60, "batch_size": 32, "lr": 6e-3, "population": 4,
              "generations": 1, "finetune_steps": 200, "device_samples": 32, "device_chunk": 32},
    "full": {"space_overrides": {"resolutions": [16], "width_mults": [0.5, 0.75, 1.0]},
             "supernas_samples": 16, "supernet_steps": 250, "batch_size": 64, "population": 8, "generations": 3,
             "finetune_steps": 250, "device_samples": 150, "device_chunk": 75},
}
MARKER = ".tuskml-demo"  # written into the output folder; only such a folder is cleared for a new run


class DemoError(TuskmlError):
    """The demo cannot start (output folder, options)."""


def resolve_threads(requested: int | None) -> int:
    """Torch threads for the demo: ``requested``, else ``OMP_NUM_THREADS``, else the cores the
    1-minute load average leaves idle (at least 1). On a busy machine a second OpenMP thread that has
    to wait for a core made the tinyformer supernet step 12x slower (1.6 s -> 19.7 s) instead of faster."""
    if requested is not None:
        if requested < 1:
            raise DemoError(f"--threads must be at least 1, got {requested}")
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) >= 1:
        return int(env)
    cores = os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


def prepare_out(out: pathlib.Path) -> None:
    """Create ``out``; clear the outputs of an earlier demo there (so its training runs and supernet
    checkpoint are not silently resumed with other budgets), but never a folder the demo did not make."""
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out} is a file; give a folder")
    earlier_demo = (out / MARKER).is_file() or ((out / "index.html").is_file() and (out / "summary.json").is_file())
    if out.is_dir() and any(out.iterdir()) and not earlier_demo:
        raise DemoError(f"--out {out} is not empty and holds no earlier demo ({MARKER} missing); "
                        f"pick an empty or new folder")
    for part in ("mammoth2", "tinyformer"):
        shutil.rmtree(out / part, ignore_errors=True)
    for name in ("index.html", "summary.json"):
        (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("outputs of `tuskml demo`; the next demo into this folder replaces them\n")


def _mammoth2_watches(n_eval_batches: int) -> list[Watch]:
    from tuskml.plugins.mammoth2.model import Mammoth2Model
    from tuskml.plugins.mammoth2.pipeline import Mammoth2Pipeline
    from tuskml.plugins.mammoth2.train import Trainer

    evaluate = importlib.import_module("tuskml.plugins.mammoth2.evaluate")

    sampling = (Watch(phase="mammoth2 eval: text-to-image", owner=Mammoth2Pipeline, attr="generate", tick=True),
                Watch(phase="mammoth2 eval: edits", owner=Mammoth2Pipeline, attr="edit", tick=True),
                Watch(phase="mammoth2 eval: answers", owner=Mammoth2Pipeline, attr="ask", tick=True))
    return [
        Watch(phase="mammoth2: build model", owner=Trainer, attr="__init__"),
        Watch(phase="mammoth2: train loop", owner=Trainer, attr="train", children=(
            Watch(phase="mammoth2: first joint batch", owner=Mammoth2Model, attr="make_batch"),
            Watch(phase="mammoth2: checkpoint", owner=Trainer, attr="save_checkpoint"),
            Watch(phase="mammoth2: save pipeline", owner=Trainer, attr="finish"))),
        Watch(phase="mammoth2 eval: load pipeline", owner=evaluate, attr="load_run_pipeline"),
        Watch(phase="mammoth2 eval: sampling + scoring", owner=evaluate, attr="evaluate_pipeline", children=sampling,
              bar_total=n_eval_batches, bar_unit="batch"),
    ]


def _split_mammoth2_train(clock: PhaseClock) -> None:
    """The training loop runs the VQ steps, then the joint steps; the first joint batch marks the switch."""
    loop = clock.stats.pop("mammoth2: train loop", None)
    marker = clock.stats.pop("mammoth2: first joint batch", None)
    if loop is None or loop.first_start is None:
        return
    own = loop.seconds - clock.seconds("mammoth2: checkpoint") - clock.seconds("mammoth2: save pipeline")
    vq = own if marker is None or marker.first_start is None else marker.first_start - loop.first_start
    clock.record("mammoth2: train VQ tokenizer", vq, loop.first_start)
    clock.record("mammoth2: train joint (NTP + FM)", own - vq, loop.first_start + vq)


def run_mammoth2(out: pathlib.Path, *, quick: bool, seed: int, clock: PhaseClock | None = None) -> dict[str, Any]:
    from tuskml.plugins.mammoth2.configs_data import EDIT_KINDS, GENEVAL_CATEGORIES, QUESTION_KINDS
    from tuskml.plugins.mammoth2.configs_train import StageConfig, load_train_config
    from tuskml.plugins.mammoth2.evaluate import EvalSettings, evaluate_run
    from tuskml.plugins.mammoth2.train import train

    clock = clock or PhaseClock()
    budget = MAMMOTH2_BUDGET["quick" if quick else "full"]
    base = load_train_config("tiny")
    frozen_steps, full_steps = budget["stages"]
    config = attrs.evolve(
        base, seed=seed, checkpoint_every=max(budget["tokenizer_steps"] + frozen_steps + full_steps, 1),
        tokenizer=attrs.evolve(base.tokenizer, steps=budget["tokenizer_steps"]),
        stages=(StageConfig(name="frozen-backbone", steps=frozen_steps, frozen=("backbone",)),
                StageConfig(name="full", steps=full_steps)),
    )
    run_dir = out / "mammoth2" / "run"
    settings = EvalSettings(per_category=budget["per_category"], steps=budget["sample_steps"], seed=seed)
    n = settings.per_category
    n_batches = sum(math.ceil(k * n / settings.batch_size)
                    for k in (len(GENEVAL_CATEGORIES), len(EDIT_KINDS), len(QUESTION_KINDS)))
    with clock.watching(_mammoth2_watches(n_batches)):
        t0 = time.perf_counter()
        metrics = train(config, run_dir)
        train_s = time.perf_counter() - t0
        report = evaluate_run(run_dir, out / "mammoth2" / "eval", settings)
    _split_mammoth2_train(clock)
    return {"train_seconds": train_s, "train_metrics": metrics, "report": report}


def _tinyformer_watches(opts: Any) -> list[Watch]:
    import tuskml
    from tuskml.plugins.tinyformer.arch import candidate_spaces
    from tuskml.plugins.tinyformer.evaluator import CandidateEvaluator
    from tuskml.plugins.tinyformer.sparsenas import SparseNAS
    from tuskml.plugins.tinyformer.supernas import SuperNAS

    # modules, not same-named functions (e.g. finetune.finetune): run_search imports from them per call
    (codegen, pipeline, reference, emulators, toolchains, datasets, device_eval, finetune, train_supernet) = (
        importlib.import_module(name) for name in (
            "tuskml.backends.c.codegen", "tuskml.backends.sparse_engine.pipeline",
            "tuskml.backends.sparse_engine.reference", "tuskml.mcu_targets.emulators", "tuskml.mcu_targets.toolchains",
            "tuskml.plugins.tinyformer.datasets", "tuskml.plugins.tinyformer.device_eval",
            "tuskml.plugins.tinyformer.finetune", "tuskml.plugins.tinyformer.train_supernet"))
    space_cfg = tuskml.resolve_config("search_spaces", "tinyformer-hybrid", **opts.space_overrides)[1]

    def emulator_runs(model: Any, calibration: Any, test_images: Any, *args: Any, chunk: int = 32, **kw: Any) -> int:
        return 2 + math.ceil(len(test_images) / max(1, min(chunk, len(test_images))))  # build + reference + runs

    deploy = (Watch(phase="tinyformer deploy: quantize + memory plan", owner=pipeline, attr="prepare"),
              Watch(phase="tinyformer deploy: int8 reference run", owner=reference, attr="run", tick=True),
              Watch(phase="tinyformer deploy: C codegen", owner=codegen, attr="generate_c_project"),
              Watch(phase="tinyformer deploy: compile + link", owner=toolchains, attr="build", tick=True),
              Watch(phase="tinyformer deploy: emulate Cortex-M7", owner=emulators, attr="run_unicorn", tick=True))
    return [
        Watch(phase="tinyformer: load digits", owner=datasets, attr="train_test"),
        Watch(phase="tinyformer: SuperNAS", owner=SuperNAS, attr="run",
              children=(Watch(phase="tinyformer: SuperNAS measure", owner=CandidateEvaluator, attr="measure_arch",
                              tick=True),),
              bar_total=len(candidate_spaces(space_cfg)) * opts.supernas_samples, bar_unit="arch"),
        Watch(phase="tinyformer: supernet training", owner=train_supernet, attr="train_supernet"),
        Watch(phase="tinyformer: SparseNAS", owner=SparseNAS, attr="run",
              children=(Watch(phase="tinyformer: SparseNAS evaluate", owner=CandidateEvaluator, attr="evaluate",
                              tick=True),),
              bar_total=opts.population * (opts.generations + 1), bar_unit="candidate"),
        Watch(phase="tinyformer: fine-tune", owner=finetune, attr="finetune"),
        Watch(phase="tinyformer: deploy (sparse + dense)", owner=device_eval, attr="run_on_device", children=deploy,
              bar_total=emulator_runs, bar_unit="step"),
    ]


def run_tinyformer(out: pathlib.Path, *, quick: bool, seed: int, clock: PhaseClock | None = None) -> dict[str, Any]:
    from tuskml.plugins.tinyformer.search_pipeline import SearchRunOptions, run_search

    clock = clock or PhaseClock()
    budget = TINYFORMER_BUDGET["quick" if quick else "full"]
    opts = SearchRunOptions(dataset="digits", target="stm32f746", out_dir=str(out / "tinyformer"), seed=seed,
                            **budget)
    with clock.watching(_tinyformer_watches(opts)), clock.phase("tinyformer: search + deploy (total)"):
        result = run_search(opts)
    timed = sum(clock.seconds(row["phase"]) for row in clock.table()
                if row["phase"].startswith("tinyformer: ") and "total" not in row["phase"]
                and not row["phase"].endswith(("measure", "evaluate")))
    total = clock.stats["tinyformer: search + deploy (total)"]
    clock.record("tinyformer: rest (BN recalibration, accuracy, footprint)", total.seconds - timed,
                 (total.first_start or 0.0) + total.seconds)
    return result


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
            ("tinyformer", "test images run on the emulator", _fmt((res.get("device") or {}).get("samples"))),
            ("tinyformer", "bit-exact vs reference", _fmt(res.get("bit_exact"))),
            ("tinyformer", "flash bytes (limit 1,048,576)", _fmt(res.get("flash_bytes"))),
            ("tinyformer", "SRAM bytes (limit 327,680)", _fmt(res.get("sram_bytes"))),
            ("tinyformer", "instructions per image, sparse", _fmt(res.get("instructions"))),
            ("tinyformer", "instructions per image, dense", _fmt(res.get("dense_instructions"))),
        ]
        if res.get("instructions") and res.get("dense_instructions"):
            rows.append(("tinyformer", "sparse / dense instructions", _fmt(res["instructions"] / res["dense_instructions"])))
    timing = results.get("timing")
    if timing:
        for phase in timing["phases"]:
            rows.append(("time", phase["phase"], f"{phase['seconds']:.1f} s"))
        rows.append(("time", "wall, whole demo", f"{timing['wall_seconds']:.1f} s"))
        rows.append(("time", "torch threads", str(timing["threads"])))
        rows.append(("time", "load average (1 min) at start / end",
                     f"{timing['loadavg_start'][0]:.2f} / {timing['loadavg_end'][0]:.2f}"))
    return rows


def _mean(values: Any) -> float | None:
    if isinstance(values, dict):
        if isinstance(values.get("overall"), (int, float)):
            return values["overall"]
        nums = [v for v in values.values() if isinstance(v, (int, float))]
        return sum(nums) / len(nums) if nums else None
    return values if isinstance(values, (int, float)) else None


def _shown(path: pathlib.Path, out: pathlib.Path) -> bool:
    """Results worth a link: not build folders, checkpoints or the saved pipeline's own files."""
    parts = path.relative_to(out).parts
    return not any(p.startswith("deploy") or p in ("checkpoints", "pipeline") for p in parts)


def _answers_table(results: dict[str, Any]) -> str:
    """mammoth2's answers to held-out questions (one per kind), next to the expected answer."""
    examples = results.get("mammoth2", {}).get("report", {}).get("understanding", {}).get("examples", [])
    if not examples:
        return ""
    cells = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(str(ex.get(k, '')))}</td>" for k in ("kind", "question", "answer", "predicted"))
        + "</tr>" for ex in examples)
    return ("<h2>mammoth2 answers (held-out images)</h2><table><tr><th>kind</th><th>question</th><th>expected</th>"
            f"<th>answered</th></tr>{cells}</table>")


def write_index(out: pathlib.Path, results: dict[str, Any], rows: list[tuple[str, str, str]], wall: float) -> pathlib.Path:
    pictures = sorted(p for p in out.rglob("*.png") if _shown(p, out))
    table = "\n".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{html.escape(c)}</td></tr>"
                      for a, b, c in rows)
    figures = "\n".join(
        f'<figure><img src="{html.escape(p.relative_to(out).as_posix())}"><figcaption>'
        f"{html.escape(p.relative_to(out).as_posix())}</figcaption></figure>" for p in pictures)
    answers = _answers_table(results)
    links = "\n".join(f'<li><a href="{html.escape(p.relative_to(out).as_posix())}">'
                      f"{html.escape(p.relative_to(out).as_posix())}</a></li>"
                      for p in sorted(out.rglob("*.json")) if _shown(p, out))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tuskml demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}
img{{image-rendering:pixelated;max-width:100%;border:1px solid #ccc}}figure{{display:inline-block;margin:8px}}</style></head>
<body><h1>tuskml demo</h1>
<p>Finished in {wall:.0f} s. mammoth2: a tiny unified AR + diffusion model trained on the shapes world;
tinyformer: NAS under STM32F746 limits, then SparseEngine int8 C run on an emulated Cortex-M7.
Rows marked <em>time</em> are the measured wall time of each phase.</p>
<h2>Summary</h2><table><tr><th>family</th><th>measure</th><th>value</th></tr>{table}</table>
<h2>Pictures</h2>{figures}
{answers}
<h2>Raw results</h2><ul>{links}</ul></body></html>
"""
    path = out / "index.html"
    atomic_write_bytes(path, page.encode())
    return path


def run_demo(out: str | pathlib.Path, *, quick: bool = False, only: str | None = None, seed: int = 0,
             threads: int | None = None, startup_seconds: float | None = None) -> dict[str, Any]:
    """Run the demo into ``out``; ``startup_seconds``: the process's time before this call (the CLI
    passes it, so the reported wall time includes Python and plugin start-up)."""
    if only not in (None, "mammoth2", "tinyformer"):
        raise DemoError(f"only must be 'mammoth2', 'tinyformer' or None, got {only!r}")
    out = pathlib.Path(out)
    prepare_out(out)
    n_threads = resolve_threads(threads)
    loadavg_start = os.getloadavg()
    clock = PhaseClock()
    t0 = time.perf_counter()
    if startup_seconds is not None:
        clock.record("start-up (python, click, plugins)", startup_seconds, t0 - startup_seconds)
    with clock.phase("imports (torch, timm, mammoth2, tinyformer, SparseEngine)"):
        import torch

        torch.set_num_threads(n_threads)
        # timm (and torchvision under it, ~2.4 s) is imported lazily by the mammoth2 ViT: counted here,
        # not as model building
        for name in ("timm", "tuskml.mcu_targets.toolchains", "tuskml.plugins.mammoth2.train",
                     "tuskml.plugins.tinyformer.search_pipeline"):
            if importlib.util.find_spec(name.split(".")[0]) is not None:
                importlib.import_module(name)
    click.secho(f"tuskml demo{' --quick' if quick else ''}: {n_threads} torch thread(s), outputs in {out}/", bold=True)
    results: dict[str, Any] = {}
    if only in (None, "mammoth2"):
        click.secho("== mammoth2: train a tiny unified AR + diffusion model on the shapes world ==", bold=True)
        results["mammoth2"] = run_mammoth2(out, quick=quick, seed=seed, clock=clock)
    if only in (None, "tinyformer"):
        click.secho("== tinyformer: search on digits under STM32F746 limits, deploy to an emulated Cortex-M7 ==",
                    bold=True)
        results["tinyformer"] = run_tinyformer(out, quick=quick, seed=seed, clock=clock)
    wall = time.perf_counter() - t0 + (startup_seconds or 0.0)
    results["timing"] = {"threads": n_threads, "wall_seconds": wall, "startup_seconds": startup_seconds,
                         "loadavg_start": list(loadavg_start), "loadavg_end": list(os.getloadavg()),
                         "cpu_count": os.cpu_count(), "phases": clock.table(), "not_timed": clock.missing}
    rows = summary_rows(results)
    summary = {"quick": quick, "only": only, "seed": seed, **results["timing"], "rows": rows}
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2, default=str).encode())
    index = write_index(out, results, rows, wall)
    width = max(len(r[1]) for r in rows) if rows else 10
    click.secho("\n== summary ==", bold=True)
    for family, measure, value in rows:
        click.echo(f"{family:<11} {measure:<{width}}  {value}")
    if clock.missing:
        click.echo(f"(not timed, renamed upstream: {', '.join(clock.missing)})")
    click.echo(f"\nall outputs: {out}/ (open {index})")
    return results
