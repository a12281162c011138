"""The shapes world: seeded, registered, GenEval categories, edits, questions, held-out split."""

from __future__ import annotations

import attrs
import numpy as np
import pytest

import tuskml
from tuskml.core.config import structure_config
from tuskml.plugins.mammoth2.configs_data import (
    CELLS,
    COLOURS,
    EDIT_KINDS,
    GENEVAL_CATEGORIES,
    QUESTION_KINDS,
    SHAPES,
    ShapesWorldConfig,
)
from tuskml.plugins.mammoth2.shapes_scene import Scene, ShapeObject, ShapesWorldError, describe, relation_holds
from tuskml.plugins.mammoth2.shapes_world import ShapesWorld
from tuskml.testing import check_component


def test_registered_and_conforms(tmp_path):
    assert "shapes-world" in tuskml.list_components("datasets")
    check_component("datasets", "shapes-world", tmp_path)
    ds = tuskml.create("datasets", "shapes-world", length=10)
    assert len(ds) == 10 and ds[3].image.shape == (32, 32, 3)
    with pytest.raises(IndexError):
        ds[10]


def test_vocabulary_is_big_enough():
    assert {"circle", "square", "triangle"} <= set(SHAPES) and len(COLOURS) >= 6


def test_samples_are_deterministic_and_seeded():
    a, b = ShapesWorld(), ShapesWorld()
    other = ShapesWorld(ShapesWorldConfig(seed=1))
    for i in range(20):
        x, y = a[i], b[i]
        assert x.text == y.text and x.answer == y.answer and np.array_equal(x.image, y.image)
    assert any(a[i].text != other[i].text or not np.array_equal(a[i].image, other[i].image) for i in range(20))


def test_64_pixel_option():
    s = ShapesWorld(ShapesWorldConfig(image_size=64, task="edit"))[0]
    assert s.image.shape == (64, 64, 3) and s.source.shape == (64, 64, 3) and s.edit_region.shape == (64, 64)


def test_every_category_and_kind_appears_with_consistent_content():
    t2i = ShapesWorld(ShapesWorldConfig(task="t2i"))
    for cat in GENEVAL_CATEGORIES:
        s = t2i.sample(0, kind=cat)
        assert s.prompt.category == cat and s.prompt.satisfied_by(s.scene)
        assert 1 <= len(s.scene.objects) <= 4
    edits = ShapesWorld(ShapesWorldConfig(task="edit"))
    for kind in EDIT_KINDS:
        s = edits.sample(1, kind=kind)
        assert s.source_scene != s.scene
        changed = set(s.source_scene.symbols()) ^ set(s.scene.symbols())
        cells = {c for _, _, c in changed}
        assert len(cells) == 1, f"{kind} must change exactly one cell: {changed}"
        (cell,) = cells
        assert s.edit_region[cell * 0 + (cell // 2) * 16, (cell % 2) * 16]  # the edited cell is editable
        outside = ~s.edit_region
        assert np.array_equal(s.source[outside], s.image[outside]), f"{kind} changed pixels outside its cell"
    und = ShapesWorld(ShapesWorldConfig(task="understanding"))
    for kind in QUESTION_KINDS:
        s = und.sample(2, kind=kind)
        assert s.answer
        if kind == "caption":
            assert s.text == "" and s.answer == describe(s.scene)


def test_answers_match_scenes():
    und = ShapesWorld(ShapesWorldConfig(task="understanding"))
    for i in range(60):
        s = und[i]
        if s.kind == "count":
            shape = s.text.split()[2].rstrip("?")[:-1]
            assert ["zero", "one", "two", "three", "four"].index(s.answer) == s.scene.count(shape)
        elif s.kind == "presence":
            colour, shape = s.text.removeprefix("is there a ").rstrip("?").split()
            assert (s.answer == "yes") == bool(s.scene.find(shape, colour))


def test_heldout_compositions_never_in_training():
    cfg = ShapesWorldConfig()
    heldout = set(cfg.heldout_pairs) | set(cfg.heldout_counts)
    train = ShapesWorld(cfg)
    for i in range(400):
        s = train[i]
        shown = s.scene.compositions() | (s.source_scene.compositions() if s.source_scene else set())
        assert not shown & heldout, (s.text, shown & heldout)
        assert not any(h in f"{s.text} {s.answer}" for h in cfg.heldout_pairs)
        assert "three circles" not in s.text
    test = ShapesWorld(ShapesWorldConfig(split="heldout"))
    for i in range(200):
        s = test[i]
        shown = s.scene.compositions() | (s.source_scene.compositions() if s.source_scene else set())
        named = {h for h in heldout if h in f"{s.text} {s.answer}"} | ({"three circle"} if "three circles" in s.text else set())
        assert shown & heldout or named, s.text
        if s.prompt is not None and s.prompt.category in ("colors", "color_attr", "position", "counting"):
            assert s.prompt.mentions() & heldout, s.text


def test_bad_inputs_are_named():
    with pytest.raises(tuskml.ConfigError, match="heldout_pairs"):
        tuskml.create("datasets", "shapes-world", heldout_pairs=("purple hexagon",))
    with pytest.raises(tuskml.ConfigError, match="image_size"):
        tuskml.create("datasets", "shapes-world", image_size=40)
    with pytest.raises(ShapesWorldError, match="share a cell"):
        Scene((ShapeObject("circle", "red", 0), ShapeObject("square", "blue", 0)))
    with pytest.raises(ShapesWorldError, match="unknown shape"):
        ShapeObject("hexagon", "red", 0)
    with pytest.raises(ShapesWorldError, match="unknown t2i kind"):
        ShapesWorld().sample(0, task="t2i", kind="recolour")


def test_model_samples_are_tensors_in_range():
    import torch

    from tuskml.plugins.mammoth2.model import EditSample, TextToImageSample, UnderstandingSample

    ds = ShapesWorld()
    seen = set()
    for i in range(30):
        m = ds[i].to_model_sample()
        seen.add(type(m))
        img = m.image
        assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and -1 <= img.min() and img.max() <= 1
    assert seen == {TextToImageSample, EditSample, UnderstandingSample}


def test_understanding_samples_carry_the_description_a_describe_first_model_writes():
    ds = ShapesWorld()
    for kind in QUESTION_KINDS:  # questions: the objects of the shape they name; captions: the scene
        for i in range(10):
            u = ds.sample(i, task="understanding", kind=kind)
            plan = u.to_model_sample().plan
            if kind == "caption":
                assert plan == describe(u.scene)
                continue
            shape = next(s for s in SHAPES if s in u.text)
            assert plan == describe(Scene(tuple(o for o in u.scene.objects if o.shape == shape)))
            assert plan == "nothing" or {w for w in plan.split() if w in SHAPES} == {shape}


def test_cell_first_descriptions_write_each_cell_before_its_object():
    scene = Scene((ShapeObject("square", "blue", 3), ShapeObject("circle", "red", 0)))
    assert describe(scene, cell_first=True) == "at top left a red circle and at bottom right a blue square"
    plain, cell_first = ShapesWorld(), ShapesWorld(ShapesWorldConfig(description="cell-phrases"))
    for kind in QUESTION_KINDS:
        for i in range(10):
            a, b = (d.sample(i, task="understanding", kind=kind) for d in (plain, cell_first))
            assert (a.text, a.answer) == (b.text, b.answer)  # the same questions and answers
            if a.description() == "nothing":
                assert b.description() == "nothing"
                continue
            # the same phrases, each "a <colour> <shape> at <cell>" turned into "at <cell> a <colour> <shape>"
            phrases = [p.split(" at ") for p in a.description().replace(" and ", ", ").split(", ")]
            assert b.description().replace(" and ", ", ").split(", ") == [f"at {cell} {obj}" for obj, cell in phrases]
    with pytest.raises(tuskml.ConfigError, match="description"):
        structure_config({"description": "cells"}, ShapesWorldConfig)


@pytest.mark.parametrize("edit_plan", ["cell", "layout"])
def test_image_samples_carry_a_colourless_plan_of_their_target(edit_plan):
    scene = Scene((ShapeObject("square", "blue", 3), ShapeObject("circle", "red", 0)))
    assert describe(scene, colours=False) == "a circle at top left and a square at bottom right"
    for split in ("train", "heldout"):
        ds = ShapesWorld(ShapesWorldConfig(split=split, edit_plan=edit_plan))
        for task in ("t2i", "edit"):
            for i in range(20):
                s = ds.sample(i, task=task)
                plan = s.to_model_sample().plan
                if task == "edit" and edit_plan == "cell":  # the cell the edit changes, and only it
                    changed = set(s.scene.symbols()) ^ set(s.source_scene.symbols())
                    assert {cell for _, _, cell in changed} == {s.edit_cell}
                    assert plan == f"at {CELLS[s.edit_cell]}"
                else:
                    assert plan == describe(s.scene, colours=False)
                assert not set(plan.split()) & set(COLOURS)
                assert all(p not in plan for p in ds.config.heldout_pairs)  # in either split


def _samples_and_plans(kinds, n, **config):
    """``n`` samples per kind of both splits with their model-side plans; train-split plans never name a held-out pair."""
    for split in ("train", "heldout"):
        ds = ShapesWorld(ShapesWorldConfig(split=split, **config))
        for kind in kinds:
            for i in range(n):
                s = ds.sample(i, kind=kind)
                plan = s.to_model_sample().plan
                if split == "train":
                    assert all(p not in plan for p in ds.config.heldout_pairs)
                yield s, plan


@pytest.mark.parametrize("style", ["phrases", "cell-phrases"])
def test_phrase_plans_copy_the_prompt_in_its_order_with_each_cell(style):
    for s, plan in _samples_and_plans(GENEVAL_CATEGORIES, 12, task="t2i", t2i_plan=style):
        parts = plan.replace(" and ", ", ").split(", ")
        assert len(parts) == len(s.scene.objects)
        if style == "cell-phrases":  # "at bottom left a green triangle"
            cells = [next(c for c in CELLS if p.startswith(f"at {c} ")) for p in parts]
            parts = [f"{p[len(f'at {c} '):]} at {c}" for p, c in zip(parts, cells)]
        phrases = [p.rsplit(" at ", 1) for p in parts]
        objs = [next(o for o in s.scene.objects if CELLS[o.cell] == cell) for _, cell in phrases]
        assert len({o.cell for o in objs}) == len(objs)  # each object once
        if s.kind != "counting":  # the prompt's phrases, verbatim and in its order
            assert [p for p, _ in phrases] == [spec.phrase for spec in s.prompt.objects]
        assert all(spec.matches(o) for spec, o in zip(s.prompt.objects * len(objs), objs))
        if s.kind == "position":
            assert relation_holds(objs[0], s.prompt.relation, objs[1])
    # edits keep their colourless layout plan under this option
    e = ShapesWorld(ShapesWorldConfig(task="edit", t2i_plan="phrases")).sample(0)
    assert e.to_model_sample().plan == describe(e.scene, colours=False)


@pytest.mark.parametrize("field, value", [("t2i_plan", "colours"), ("edit_plan", "caption"), ("train_same_shape", 1.5)])
def test_bad_plan_and_prompt_options_are_named(field, value):
    with pytest.raises(tuskml.ConfigError, match=field):
        structure_config({field: value}, ShapesWorldConfig)


def test_scene_edit_plans_caption_the_target():
    for s, plan in _samples_and_plans(EDIT_KINDS, 8, task="edit", edit_plan="scene"):
        assert plan == describe(s.scene) and plan != describe(s.source_scene)


def test_train_same_shape_names_one_shape_twice_in_train_prompts_only():
    base = ShapesWorld(ShapesWorldConfig(task="t2i"))
    same = ShapesWorld(ShapesWorldConfig(task="t2i", train_same_shape=1.0))
    for cat in ("position", "color_attr"):
        for i in range(10):
            s = same.sample(i, kind=cat)
            p = s.prompt
            assert p.objects[0].shape == p.objects[1].shape and p.objects[0].colour != p.objects[1].colour
            assert p.satisfied_by(s.scene)
            q = base.sample(i, kind=cat).prompt
            assert q.objects[0].shape != q.objects[1].shape
    for kind in ("colors", "two_object"):  # other categories draw as before
        assert same.sample(3, kind=kind).text == base.sample(3, kind=kind).text
    held = ShapesWorldConfig(task="t2i", split="heldout")
    assert ([ShapesWorld(held).sample(i, kind="position").text for i in range(10)]
            == [ShapesWorld(attrs.evolve(held, train_same_shape=1.0)).sample(i, kind="position").text for i in range(10)])
