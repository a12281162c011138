"""Evaluating a trained mammoth2 run on the shapes world: GenEvalMini, edits, understanding.

``evaluate_run(run_dir, out)`` loads the run's pipeline, draws equally many samples per GenEval
category / edit kind / question kind from the run's data config (held-out split by default: the
compositions the model never saw), and writes ``report.json`` plus PNG grids of the samples.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import attrs
import numpy as np

import tuskml
from tuskml.core.config import atomic_write_bytes
from tuskml.core.errors import CheckpointError
from tuskml.plugins.mammoth2.configs_data import EDIT_KINDS, GENEVAL_CATEGORIES, PHRASE_PLANS, QUESTION_KINDS
from tuskml.plugins.mammoth2.geneval_mini import (
    EditScore,
    GenEvalMini,
    sample_grid,
    understanding_accuracy,
)
from tuskml.plugins.mammoth2.shapes_world import ShapesWorld


@attrs.frozen
class EvalSettings:
    """How many samples per category/kind, which split, and the sampling settings of the pipeline."""

    per_category: int = 8
    split: str = "heldout"
    seed: int = 0
    steps: int = 20
    guidance: float = 3.0
    # text-to-image image tokens: temperature 0.7, top_k 8, AR guidance 1.5. Of 11 settings on the train
    # split of a scene-plan run (benchmarks/results/mammoth2_t2i_sampling_train.md) it was the best
    # that samples (0.83 vs 0.66 for the earlier temperature 1 / guidance 3); greedy with guidance 2
    # scored 0.87 but draws one image per prompt whatever the seed. Held out: 0.60 vs 0.47.
    ar_guidance: float = 1.5
    temperature: float = 0.7
    top_k: int | None = 8
    image_guidance: float = 1.5
    # edit plans: greedy and unguided (see Mammoth2Pipeline.edit; 0.42 vs 0.06 held-out plan success)
    edit_temperature: float = 0.0
    edit_ar_guidance: float = 1.0
    # text-to-image image tokens: the weight of the colour pointer's logits (models with gen_copy_digit)
    pointer_scale: float = 1.0
    batch_size: int = 16


def load_run_pipeline(run_dir: str | pathlib.Path) -> Any:
    """The run's final ``pipeline/`` or, for an unfinished run, its latest checkpoint (EMA DiT weights)."""
    from safetensors.torch import load_file, load_model

    from tuskml.plugins.mammoth2.configs_train import TrainConfig
    from tuskml.plugins.mammoth2.model import Mammoth2Model
    from tuskml.plugins.mammoth2.pipeline import Mammoth2Pipeline
    from tuskml.plugins.mammoth2.train import CONFIG_FILE, model_config_of

    run = pathlib.Path(run_dir)
    if (run / "pipeline").is_dir():
        return Mammoth2Pipeline.from_pretrained(run / "pipeline")
    latest = run / "checkpoints" / "latest"
    if not (run / CONFIG_FILE).is_file() or not latest.is_file():
        raise CheckpointError(f"{run} is not a mammoth2 run folder (no pipeline/ and no checkpoints/latest); "
                              f"train one with `tuskml mammoth2 train --config tiny --out {run}`")
    config = tuskml.load_config(run / CONFIG_FILE, TrainConfig)
    model = Mammoth2Model(model_config_of(config))
    folder = run / "checkpoints" / latest.read_text().strip()
    load_model(model, str(folder / "model.safetensors"))
    ema = load_file(str(folder / "ema.safetensors"))
    result = model.decoder.load_state_dict(ema, strict=False)  # EMA holds parameters only, not buffers
    if result.unexpected_keys or len(ema) != len(list(model.decoder.parameters())):
        raise CheckpointError(f"{folder / 'ema.safetensors'} does not fit the run's decoder "
                              f"(unexpected {result.unexpected_keys[:4]})")
    return Mammoth2Pipeline(model)


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def evaluate_pipeline(pipe: Any, data_config: Any, settings: EvalSettings = EvalSettings(),
                      out: str | pathlib.Path | None = None) -> dict[str, Any]:
    """Score ``pipe`` on ``settings.per_category`` samples per category/kind; write report and grids to ``out``."""
    from tuskml.plugins.mammoth2.pipeline import to_pil

    size = pipe.model.config.image_size
    base = attrs.evolve(data_config, split=settings.split, image_size=size)
    n = settings.per_category
    report: dict[str, Any] = {"settings": attrs.asdict(settings), "image_size": size}
    grids: dict[str, dict[str, list[Any]]] = {}

    # text to image, GenEval categories
    t2i = ShapesWorld(attrs.evolve(base, task="t2i"))
    samples = [t2i.sample(i, kind=cat) for cat in GENEVAL_CATEGORIES for i in range(n)]
    images: list[Any] = []
    plans: list[Any] = []  # the AR's plans through the VQ decoder: what the DiT was asked to render
    scene_plans: list[str] = []  # what a scene_plan model wrote before each image
    for chunk_i, chunk in enumerate(_batches(samples, settings.batch_size)):
        result = pipe.generate([s.text for s in chunk], seed=settings.seed + chunk_i, steps=settings.steps,
                               guidance=settings.guidance, ar_guidance=settings.ar_guidance,
                               temperature=settings.temperature, top_k=settings.top_k,
                               pointer_scale=settings.pointer_scale, return_result=True)
        images += result.images
        plans += to_pil(result.plan_pixels)
        scene_plans += result.scene_plans or []
    report["geneval"] = GenEvalMini().evaluate([s.prompt for s in samples], images)
    if scene_plans:
        report["geneval"]["scene_plan_examples"] = [
            {"prompt": s.text, "written": w, "truth": s.scene_plan()} for s, w in list(zip(samples, scene_plans))[::n]]
        if base.t2i_plan in PHRASE_PLANS:
            report["scene_plan"] = {"names_prompt_phrases": phrase_copy_rates(samples, scene_plans)}
    report["geneval_plan"] = GenEvalMini().evaluate([s.prompt for s in samples], plans)
    grids["geneval"] = {cat: [im for s, im in zip(samples, images) if s.kind == cat] for cat in GENEVAL_CATEGORIES}

    # edits
    edit = ShapesWorld(attrs.evolve(base, task="edit"))
    esamples = [edit.sample(i, kind=k) for k in EDIT_KINDS for i in range(n)]
    outputs: list[Any] = []
    edit_plans: list[Any] = []
    for chunk_i, chunk in enumerate(_batches(esamples, settings.batch_size)):
        result = pipe.edit([s.source for s in chunk], [s.text for s in chunk], seed=settings.seed + chunk_i,
                           steps=settings.steps, text_guidance=settings.guidance,
                           image_guidance=settings.image_guidance, ar_guidance=settings.edit_ar_guidance,
                           temperature=settings.edit_temperature, top_k=settings.top_k, return_result=True)
        outputs += result.images
        edit_plans += to_pil(result.plan_pixels)
    edit_args = ([s.source for s in esamples], [s.scene for s in esamples], [s.edit_region for s in esamples])
    kinds = [s.kind for s in esamples]
    report["edit"] = EditScore().evaluate(kinds, outputs, *edit_args)
    plan_score = EditScore().evaluate(kinds, edit_plans, *edit_args)
    report["edit_plan"] = {"success": plan_score["success"], "preservation": plan_score["preservation"]}
    grids["edit"] = {k: [im for s, o in zip(esamples, outputs) if s.kind == k for im in (s.source, o)]
                     for k in EDIT_KINDS}

    # understanding
    if pipe.model.vision_encoder is not None:
        und = ShapesWorld(attrs.evolve(base, task="understanding"))
        usamples = [und.sample(i, kind=k) for k in QUESTION_KINDS for i in range(n)]
        answers: list[str] = []
        for chunk in _batches(usamples, settings.batch_size):
            answers += pipe.ask([s.image for s in chunk], [s.text for s in chunk], max_new_tokens=160)  # captions: <= 132 bytes
        report["understanding"] = understanding_accuracy([s.kind for s in usamples], answers,
                                                         [s.answer for s in usamples])
        report["understanding"]["examples"] = [
            {"kind": s.kind, "question": s.text, "answer": s.answer, "predicted": a}
            for s, a in list(zip(usamples, answers))[:: max(1, n)]]
    else:
        report["understanding"] = {"accuracy": {}, "note": "model has no vision_encoder"}

    if out is not None:
        out = pathlib.Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "report.json", json.dumps(_finite(report), indent=2).encode())
        sample_grid(grids["geneval"], out / "geneval_grid.png")
        sample_grid(grids["edit"], out / "edit_grid.png")
    return report


def names_prompt_phrases(sample: Any, plan: str) -> bool | None:
    """Whether a written plan names every coloured phrase of the sample's prompt ("green triangle"),
    whatever cells it gives; None for a prompt without colour words."""
    phrases = [f"{o.colour} {o.shape}" for o in sample.prompt.objects if o.colour]
    return all(p in plan for p in phrases) if phrases else None


def phrase_copy_rates(samples: list[Any], written: list[str]) -> dict[str, float]:
    """Per GenEval category with colour words: the share of written plans (``t2i_plan`` in
    :data:`PHRASE_PLANS`) that name every coloured phrase of their prompt (:func:`names_prompt_phrases`)."""
    hits: dict[str, list[bool]] = {}
    for sample, plan in zip(samples, written):
        named = names_prompt_phrases(sample, plan)
        if named is not None:
            hits.setdefault(sample.kind, []).append(named)
    return {kind: sum(h) / len(h) for kind, h in hits.items()}


def _finite(value: Any) -> Any:
    """JSON has no inf/nan: write them as strings."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def evaluate_run(run_dir: str | pathlib.Path, out: str | pathlib.Path,
                 settings: EvalSettings = EvalSettings()) -> dict[str, Any]:
    from tuskml.plugins.mammoth2.configs_train import TrainConfig
    from tuskml.plugins.mammoth2.train import CONFIG_FILE

    run = pathlib.Path(run_dir)
    pipe = load_run_pipeline(run)
    data = tuskml.load_config(run / CONFIG_FILE, TrainConfig).data if (run / CONFIG_FILE).is_file() else None
    if data is None:
        from tuskml.plugins.mammoth2.configs_data import ShapesWorldConfig

        data = ShapesWorldConfig()
    report = evaluate_pipeline(pipe, data, settings, out)
    report["run"] = str(run)
    atomic_write_bytes(pathlib.Path(out) / "report.json", json.dumps(_finite(report), indent=2).encode())
    return report
