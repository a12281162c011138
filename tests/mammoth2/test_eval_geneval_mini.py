"""GenEvalMini is calibrated: ground truth scores ~1, noise and wrong scenes ~0; edit and QA scores."""

from __future__ import annotations

import numpy as np
import pytest

from tuskml.plugins.mammoth2.configs_data import GENEVAL_CATEGORIES, ShapesWorldConfig
from tuskml.plugins.mammoth2.geneval_mini import (
    EditScore,
    GenEvalMini,
    ShapesDetector,
    sample_grid,
    understanding_accuracy,
)
from tuskml.plugins.mammoth2.shapes_render import render
from tuskml.plugins.mammoth2.shapes_world import ShapesWorld, random_prompt, scene_for_prompt


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("split", ["train", "heldout"])
def test_detector_recovers_rendered_scenes(size, split):
    ds = ShapesWorld(ShapesWorldConfig(image_size=size, split=split))
    det = ShapesDetector()
    n = 120 if size == 32 else 40
    hits = [det.scene(ds[i].image).symbols() == ds[i].scene.symbols() for i in range(n)]
    assert np.mean(hits) >= 0.99


def _prompts_and_truth(n=240):
    ds = ShapesWorld(ShapesWorldConfig(task="t2i"))
    samples = [ds.sample(i, kind=GENEVAL_CATEGORIES[i % 6]) for i in range(n)]
    return ds, samples


def test_ground_truth_scores_at_least_0_99_per_category():
    _, samples = _prompts_and_truth()
    report = GenEvalMini().evaluate([s.prompt for s in samples], [s.image for s in samples])
    assert report["overall"] >= 0.99
    for cat in GENEVAL_CATEGORIES:
        assert report[cat] >= 0.99, (cat, report)


def test_noise_and_blank_score_zero():
    _, samples = _prompts_and_truth(120)
    rng = np.random.default_rng(0)
    ge = GenEvalMini()
    noise = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in samples]
    assert ge.evaluate([s.prompt for s in samples], noise)["overall"] <= 0.02
    ramps = [np.broadcast_to(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 32, 3)).copy()
             for _ in samples]  # a grey ramp: colourless, never an object
    assert ge.evaluate([s.prompt for s in samples], ramps)["overall"] == 0.0
    blank = [np.zeros((32, 32, 3), np.uint8) for _ in samples]
    assert ge.evaluate([s.prompt for s in samples], blank)["overall"] == 0.0


def test_wrong_scenes_score_zero():
    rng = np.random.default_rng(1)
    ge = GenEvalMini()
    scores = []
    for i in range(240):
        prompt = random_prompt(rng, GENEVAL_CATEGORIES[i % 6])
        while True:  # a scene for another prompt that does not satisfy this one
            other = scene_for_prompt(rng, random_prompt(rng, GENEVAL_CATEGORIES[(i + 1) % 6]), 1)
            if not prompt.satisfied_by(other):
                break
        scores.append(ge.score(prompt, render(other)))
    assert np.mean(scores) <= 0.01


def test_float_tensor_and_pil_inputs_agree():
    import torch
    from PIL import Image

    s = ShapesWorld(ShapesWorldConfig(task="t2i"))[0]
    t = torch.from_numpy(s.image).permute(2, 0, 1).float() / 127.5 - 1
    det = ShapesDetector()
    assert det.scene(t) == det.scene(Image.fromarray(s.image)) == det.scene(s.image)


def test_edit_score_true_output_noise_and_unedited_source():
    ds = ShapesWorld(ShapesWorldConfig(task="edit"))
    samples = [ds[i] for i in range(80)]
    es = EditScore()
    args = ([s.kind for s in samples], None, [s.source for s in samples], [s.scene for s in samples],
            [s.edit_region for s in samples])
    perfect = es.evaluate(args[0], [s.image for s in samples], *args[2:])
    assert perfect["success"]["overall"] >= 0.99 and perfect["preservation"]["overall"] == 1.0
    assert set(perfect["success"]) >= {"recolour", "remove", "add", "replace"}
    unchanged = es.evaluate(args[0], [s.source for s in samples], *args[2:])
    assert unchanged["success"]["overall"] == 0.0 and unchanged["preservation"]["overall"] == 1.0
    rng = np.random.default_rng(0)
    noise = es.evaluate(args[0], [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in samples], *args[2:])
    assert noise["success"]["overall"] == 0.0 and noise["preservation"]["overall"] < 0.3


def test_understanding_accuracy_exact_match():
    r = understanding_accuracy(["count", "count", "colour"], ["Two", "three", "red."], ["two", "two", "red"])
    assert r["accuracy"]["count"] == 0.5 and r["accuracy"]["colour"] == 1.0
    assert r["accuracy"]["overall"] == 0.75


def test_sample_grid_png(tmp_path):
    _, samples = _prompts_and_truth(12)
    rows = {cat: [s.image for s in samples if s.prompt.category == cat] for cat in GENEVAL_CATEGORIES}
    path = tmp_path / "grid.png"
    grid = sample_grid(rows, path)
    assert path.is_file() and grid.size[1] == 6 * (32 * 3 + 2)


def test_phrase_copy_rates_count_plans_naming_every_coloured_phrase():
    from tuskml.plugins.mammoth2.evaluate import phrase_copy_rates

    ds = ShapesWorld(ShapesWorldConfig(split="heldout", task="t2i", t2i_plan="phrases"))
    samples = [ds.sample(i, kind=k) for k in ("colors", "position", "single_object") for i in range(4)]
    truth = [s.scene_plan() for s in samples]
    assert phrase_copy_rates(samples, truth) == {"colors": 1.0, "position": 1.0}  # no colour word: not counted
    layout = [s.layout_plan() for s in samples]
    assert phrase_copy_rates(samples, layout) == {"colors": 0.0, "position": 0.0}
    # a plan that names only one of a position prompt's two phrases misses
    half = [t.split(" and ")[0] if s.kind == "position" else t for s, t in zip(samples, truth)]
    assert phrase_copy_rates(samples, half) == {"colors": 1.0, "position": 0.0}
