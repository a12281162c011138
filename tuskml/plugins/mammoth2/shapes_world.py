"""The shapes world: a procedural, seeded dataset for mammoth2's three tasks. No download.

Sample ``i`` of a split is drawn from ``numpy.random.default_rng([seed, split, i])``, so it is the
same in every process and on every run, and any index can be produced without producing the others.

* text-to-image: a prompt in one of GenEval's six categories (single object, two objects, counting,
  colours, position, colour attribution) and an image that satisfies it;
* editing triplets (source, instruction, target) of four kinds: recolour, remove, add, replace shape;
* understanding pairs (image, question, answer): count, colour of X, presence, position, caption.

Held-out compositions (``ShapesWorldConfig.heldout_pairs`` / ``heldout_counts``) never occur in any
image or text of the ``train`` split; every ``heldout`` sample names or shows at least one of them.
Both splits are drawn by rejection from the same generators, which keeps their distributions equal
apart from the compositions.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import numpy as np

from tuskml.plugins.mammoth2.configs_data import (
    CELLS,
    COLOURS,
    EDIT_KINDS,
    GENEVAL_CATEGORIES,
    NUMBER_WORDS,
    PHRASE_PLANS,
    QUESTION_KINDS,
    SHAPES,
    ShapesWorldConfig,
)
from tuskml.plugins.mammoth2.shapes_render import cell_mask, render
from tuskml.plugins.mammoth2.shapes_scene import (
    RELATIONS,
    ObjectSpec,
    Scene,
    ShapeObject,
    ShapesWorldError,
    T2IPrompt,
    describe,
    join_phrases,
    plural,
    relation_holds,
)

TASKS: tuple[str, ...] = ("t2i", "edit", "understanding")
_SPLIT_IDS = {"train": 0, "heldout": 1}
_MAX_TRIES = 5000


@attrs.frozen(eq=False)
class ShapesSample:
    """One sample. ``image`` is the t2i / edit target or the image asked about (uint8 HWC).

    ``kind`` is the GenEval category, edit kind or question kind; ``text`` the prompt, instruction
    or question; ``edit_cell`` (edits) the cell the edit changes, ``edit_region`` its pixels.
    """

    task: str
    kind: str
    text: str
    image: np.ndarray
    scene: Scene
    answer: str = ""
    prompt: T2IPrompt | None = None
    source: np.ndarray | None = None
    source_scene: Scene | None = None
    edit_cell: int | None = None
    edit_plan: str = "layout"
    t2i_plan: str = "layout"
    description_style: str = "phrases"

    @property
    def edit_region(self) -> np.ndarray | None:
        """Bool[H, W] of an edit: the pixels of ``edit_cell``, the only ones the edit may change."""
        return None if self.edit_cell is None else cell_mask(self.edit_cell, self.image.shape[0])

    def scene_plan(self) -> str:
        """What a ``scene_plan`` model writes before this sample's image: for an edit, the edited cell
        (``at top left``) with ``edit_plan="cell"`` (:attr:`ShapesWorldConfig.edit_plan`) or the target's
        caption with ``edit_plan="scene"``; for text to image, :meth:`phrase_plan` with
        ``t2i_plan="phrases"``; else :meth:`layout_plan`."""
        if self.edit_cell is not None and self.edit_plan == "cell":
            return f"at {CELLS[self.edit_cell]}"
        if self.edit_cell is not None and self.edit_plan == "scene":
            return describe(self.scene)
        if self.prompt is not None and self.t2i_plan in PHRASE_PLANS:
            return self.phrase_plan(cell_first=self.t2i_plan == "cell-phrases")
        return self.layout_plan()

    def phrase_plan(self, cell_first: bool = False) -> str:
        """A text-to-image plan (``t2i_plan="phrases"``) that copies the prompt: its phrases in its order,
        each followed by the cell it is drawn in (``a green triangle at bottom left and a yellow circle at
        top left`` for "a green triangle below a yellow circle"; a count's objects in reading order).
        ``cell_first`` (``t2i_plan="cell-phrases"``) puts each cell before its phrase (``at bottom left a
        green triangle and at top left a yellow circle``), so every word of a phrase comes after its cell.

        The colour of a held-out pair is then copied from the phrase it is in, where the prompt's
        order says which cell it belongs to: the reading-order :meth:`layout_plan` leaves the image
        tokens to pair a cell's shape with a colour word, and they paired held-out shapes with the
        other object's colour (a seen pair) in 38 of 55 held-out position prompts."""
        assert self.prompt is not None
        specs = self.prompt.objects
        if self.prompt.category == "counting":
            specs = specs * len(self.scene.objects)
        for objs in itertools.permutations(self.scene.objects):
            if all(s.matches(o) for s, o in zip(specs, objs)) and (
                    self.prompt.category != "position" or relation_holds(objs[0], self.prompt.relation or "", objs[1])):
                break
        else:  # pragma: no cover - scene_for_prompt draws exactly the named objects
            raise ShapesWorldError(f"internal: scene {self.scene} does not match {self.prompt.text!r}")
        if cell_first:
            return join_phrases([f"at {CELLS[o.cell]} {s.phrase}" for s, o in zip(specs, objs)])
        return join_phrases([f"{s.phrase} at {CELLS[o.cell]}" for s, o in zip(specs, objs)])

    def layout_plan(self) -> str:
        """The text-to-image scene plan (and an edit's, with ``edit_plan="layout"``): each object's shape
        and cell, without colours (``a triangle at top left and a circle at bottom right``).

        Colours stay out because the held-out compositions are colour-shape pairs that no training
        text contains: a plan naming them (``a green triangle``) is text the model learned never to
        write, and it wrote a seen pair instead (held-out colour attribution 0.00 vs 0.81 on the train
        split in a plan probe). The colours come from the prompt, or the source image, when drawing."""
        return describe(self.scene, colours=False)

    def to_model_sample(self) -> Any:
        """The matching ``TextToImageSample`` / ``EditSample`` / ``UnderstandingSample`` of the model."""
        from tuskml.plugins.mammoth2.model import EditSample, TextToImageSample, UnderstandingSample

        if self.task == "t2i":
            return TextToImageSample(self.text, to_tensor(self.image), plan=self.scene_plan())
        if self.task == "edit":
            assert self.source is not None
            return EditSample(to_tensor(self.source), self.text, to_tensor(self.image), plan=self.scene_plan())
        return UnderstandingSample(to_tensor(self.image), self.text, self.answer, plan=self.description())

    def description(self) -> str:
        """What a ``describe_first`` model writes before it answers this question: every object of the
        shape the question names, with its colour and cell ("where is the red triangle?": ``a blue
        triangle at top left and a red triangle at bottom right``), so that the answer is then found by
        one word, the colour; the whole scene when the question names no shape (a caption).
        ``description_style = "cell-phrases"`` writes each cell first (``at top left a blue triangle``)."""
        words = set(self.text.replace("?", " ").split())
        named = [shape for shape in SHAPES if shape in words or plural(shape, 2) in words]
        scene = self.scene if len(named) != 1 else Scene(tuple(self.scene.find(named[0])))
        return describe(scene, cell_first=self.description_style == "cell-phrases")


def to_tensor(image: np.ndarray) -> Any:
    """uint8 HWC -> float [3, H, W] in [-1, 1] (the model's image convention)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0


# --- random pieces ---------------------------------------------------------------------------------


def _jitter(rng: np.random.Generator, j: int) -> dict[str, int]:
    return {k: int(rng.integers(-j, j + 1)) for k in ("dx", "dy", "ds")} if j else {}


def _obj(rng: np.random.Generator, shape: str, colour: str, cell: int, j: int) -> ShapeObject:
    return ShapeObject(shape=shape, colour=colour, cell=cell, **_jitter(rng, j))


def _choice(rng: np.random.Generator, items: Any) -> Any:
    items = list(items)
    return items[int(rng.integers(len(items)))]


def random_prompt(rng: np.random.Generator, category: str, same_shape: float = 0.0) -> T2IPrompt:
    """A prompt of ``category`` with uniformly drawn shapes, colours, counts and relations. Two named
    objects have different shapes, except that with probability ``same_shape`` a colour-attribution or
    position prompt names one shape twice ("a red circle left of a blue circle")."""
    if category == "single_object":
        return T2IPrompt(category, (ObjectSpec(_choice(rng, SHAPES)),))
    if category == "colors":
        return T2IPrompt(category, (ObjectSpec(_choice(rng, SHAPES), _choice(rng, COLOURS)),))
    if category == "counting":
        return T2IPrompt(category, (ObjectSpec(_choice(rng, SHAPES)),), count=int(rng.integers(2, 5)))
    a, b = rng.permutation(len(SHAPES))[:2]
    if category == "two_object":
        return T2IPrompt(category, (ObjectSpec(SHAPES[a]), ObjectSpec(SHAPES[b])))
    ca, cb = rng.permutation(len(COLOURS))[:2]
    if same_shape > 0 and rng.random() < same_shape:  # no draw at 0: the default stream stays as it was
        b = a
    objects = (ObjectSpec(SHAPES[a], COLOURS[ca]), ObjectSpec(SHAPES[b], COLOURS[cb]))
    if category == "color_attr":
        return T2IPrompt(category, objects)
    if category == "position":
        return T2IPrompt(category, objects, relation=_choice(rng, RELATIONS))
    raise ShapesWorldError(f"unknown GenEval category {category!r}; categories: {GENEVAL_CATEGORIES}")


def scene_for_prompt(rng: np.random.Generator, prompt: T2IPrompt, jitter: int) -> Scene:
    """Exactly the named objects (unnamed colours drawn at random) in random cells satisfying the prompt."""
    cells = [int(c) for c in rng.permutation(len(CELLS))]
    if prompt.category == "counting":
        shape = prompt.objects[0].shape
        return Scene(tuple(_obj(rng, shape, _choice(rng, COLOURS), cells[i], jitter) for i in range(prompt.count or 0)))
    if prompt.category == "position":
        pairs = [(x, y) for x in range(len(CELLS)) for y in range(len(CELLS)) if x != y
                 and relation_holds(ShapeObject("circle", "red", x), prompt.relation or "", ShapeObject("circle", "red", y))]
        cells = list(pairs[int(rng.integers(len(pairs)))])
    objs = [_obj(rng, spec.shape, spec.colour or _choice(rng, COLOURS), cells[i], jitter)
            for i, spec in enumerate(prompt.objects)]
    scene = Scene(tuple(objs))
    if not prompt.satisfied_by(scene):  # pragma: no cover - a generator bug, not bad input
        raise ShapesWorldError(f"internal: scene {scene} does not satisfy {prompt.text!r}")
    return scene


def random_scene(rng: np.random.Generator, n_min: int, n_max: int, jitter: int, *, distinct: bool = False) -> Scene:
    """``n_min..n_max`` random objects in random cells; ``distinct``: no two share colour and shape,
    so every object can be named unambiguously by ``"<colour> <shape>"``."""
    n = int(rng.integers(n_min, n_max + 1))
    cells = rng.permutation(len(CELLS))[:n]
    objs: list[ShapeObject] = []
    for cell in cells:
        while True:
            obj = _obj(rng, _choice(rng, SHAPES), _choice(rng, COLOURS), int(cell), jitter)
            if not distinct or all(o.name != obj.name for o in objs):
                break
        objs.append(obj)
    return Scene(tuple(objs))


def random_edit(rng: np.random.Generator, kind: str, jitter: int) -> tuple[Scene, str, Scene, int]:
    """(source scene, instruction, target scene, edited cell) of one edit ``kind``."""
    if kind == "add":
        src = random_scene(rng, 1, 3, jitter, distinct=True)
        cell = int(_choice(rng, src.free_cells()))
        while True:
            new = _obj(rng, _choice(rng, SHAPES), _choice(rng, COLOURS), cell, jitter)
            if all(o.name != new.name for o in src.objects):
                break
        return src, f"add a {new.name} at {CELLS[cell]}", Scene(src.objects + (new,)), cell
    src = random_scene(rng, 1 if kind != "remove" else 2, 4, jitter, distinct=True)
    target = _choice(rng, src.objects)
    rest = tuple(o for o in src.objects if o is not target)
    if kind == "remove":
        return src, f"remove the {target.name}", Scene(rest), target.cell
    if kind == "recolour":
        colour = _choice(rng, [c for c in COLOURS if c != target.colour
                               and all(o.name != f"{c} {target.shape}" for o in rest)])
        new = attrs.evolve(target, colour=colour)
        return src, f"make the {target.name} {colour}", Scene(rest + (new,)), target.cell
    if kind == "replace":
        shapes = [s for s in SHAPES if s != target.shape and all(o.name != f"{target.colour} {s}" for o in rest)]
        if not shapes:  # every other shape of this colour is taken: pick again
            return random_edit(rng, kind, jitter)
        shape = _choice(rng, shapes)
        new = attrs.evolve(target, shape=shape)
        return src, f"replace the {target.name} with a {shape}", Scene(rest + (new,)), target.cell
    raise ShapesWorldError(f"unknown edit kind {kind!r}; kinds: {EDIT_KINDS}")


def random_question(rng: np.random.Generator, kind: str, jitter: int) -> tuple[Scene, str, str]:
    """(scene, question, answer) of one question ``kind``; captions have an empty question."""
    if kind == "count":
        scene = random_scene(rng, 1, 4, jitter)
        shape = _choice(rng, SHAPES)
        return scene, f"how many {plural(shape, 2)}?", NUMBER_WORDS[scene.count(shape)]
    if kind == "caption":
        scene = random_scene(rng, 1, 4, jitter)
        return scene, "", describe(scene)
    if kind == "presence":
        scene = random_scene(rng, 1, 4, jitter)
        if rng.random() < 0.5:
            obj = _choice(rng, scene.objects)
            return scene, f"is there a {obj.name}?", "yes"
        absent = [f"{c} {s}" for c in COLOURS for s in SHAPES if not scene.find(s, c)]
        return scene, f"is there a {_choice(rng, absent)}?", "no"
    scene = random_scene(rng, 1, 4, jitter, distinct=True)
    if kind == "colour":
        unique = [o for o in scene.objects if scene.count(o.shape) == 1]
        if not unique:
            return random_question(rng, kind, jitter)
        obj = _choice(rng, unique)
        return scene, f"what colour is the {obj.shape}?", obj.colour
    if kind == "position":
        obj = _choice(rng, scene.objects)
        return scene, f"where is the {obj.name}?", CELLS[obj.cell]
    raise ShapesWorldError(f"unknown question kind {kind!r}; kinds: {QUESTION_KINDS}")


# --- the dataset ---------------------------------------------------------------------------------


class ShapesWorld:
    """``len()`` and ``[i]`` over procedurally generated :class:`ShapesSample` records.

    ``kind`` (optional) fixes the GenEval category / edit kind / question kind instead of drawing it
    uniformly; evaluation uses it to get equally many samples per category.
    """

    def __init__(self, config: ShapesWorldConfig | None = None):
        self.config = config if config is not None else ShapesWorldConfig()
        self._heldout = set(self.config.heldout_pairs) | set(self.config.heldout_counts)

    def __len__(self) -> int:
        return self.config.length

    def __repr__(self) -> str:
        c = self.config
        return f"ShapesWorld(split={c.split!r}, task={c.task!r}, image_size={c.image_size}, length={c.length})"

    def _rng(self, index: int, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, _SPLIT_IDS[self.config.split], index, salt])

    def task_of(self, index: int) -> str:
        if self.config.task != "mixed":
            return self.config.task
        w = np.asarray(self.config.mix, dtype=np.float64)
        return TASKS[int(self._rng(index, 1).choice(len(TASKS), p=w / w.sum()))]

    def __getitem__(self, index: int) -> ShapesSample:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise ShapesWorldError(f"shapes-world index must be an int, got {type(index).__name__}")
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"shapes-world index {index} out of range [0, {len(self)})")
        return self.sample(index)

    def sample(self, index: int, *, task: str | None = None, kind: str | None = None) -> ShapesSample:
        task = task or self.task_of(index)
        rng = self._rng(index)
        kinds = {"t2i": GENEVAL_CATEGORIES, "edit": EDIT_KINDS, "understanding": QUESTION_KINDS}
        if task not in kinds:
            raise ShapesWorldError(f"unknown task {task!r}; tasks: {TASKS}")
        if kind is not None and kind not in kinds[task]:
            raise ShapesWorldError(f"unknown {task} kind {kind!r}; kinds: {kinds[task]}")
        k = kind or _choice(rng, kinds[task])  # drawn once, so rejection does not skew the kind mix
        for _ in range(_MAX_TRIES):
            sample = self._draw(rng, task, k)
            if self._fits_split(sample):
                return sample
        raise ShapesWorldError(
            f"no {task} sample of kind {kind!r} fits split {self.config.split!r} after {_MAX_TRIES} tries; "
            f"check heldout_pairs / heldout_counts"
        )

    def _draw(self, rng: np.random.Generator, task: str, kind: str) -> ShapesSample:
        j, size = self.config.size_jitter, self.config.image_size
        if task == "t2i":
            same = self.config.train_same_shape if self.config.split == "train" else 0.0
            prompt = random_prompt(rng, kind, same)
            scene = scene_for_prompt(rng, prompt, j)
            return ShapesSample("t2i", kind, prompt.text, render(scene, size), scene, prompt=prompt,
                                t2i_plan=self.config.t2i_plan)
        if task == "edit":
            src, instruction, tgt, cell = random_edit(rng, kind, j)
            return ShapesSample("edit", kind, instruction, render(tgt, size), tgt, source=render(src, size),
                                source_scene=src, edit_cell=cell,
                                edit_plan=self.config.edit_plan)
        scene, question, answer = random_question(rng, kind, j)
        return ShapesSample("understanding", kind, question, render(scene, size), scene, answer=answer,
                            description_style=self.config.description)

    def _shown(self, sample: ShapesSample) -> set[str]:
        shown = sample.scene.compositions()
        if sample.source_scene is not None:
            shown |= sample.source_scene.compositions()
        return shown

    def _named(self, sample: ShapesSample) -> set[str]:
        text = f"{sample.text} {sample.answer}"
        return {c for c in self._heldout if c in text or _count_phrase(c) in text}

    def _fits_split(self, sample: ShapesSample) -> bool:
        if self.config.split == "train":
            return not (self._shown(sample) & self._heldout) and not self._named(sample)
        if sample.prompt is not None and sample.prompt.category in ("colors", "color_attr", "position", "counting"):
            return bool(sample.prompt.mentions() & self._heldout)  # the prompt itself must name one
        return bool(self._shown(sample) & self._heldout) or bool(self._named(sample))


def _count_phrase(composition: str) -> str:
    """``"three circle"`` -> ``"three circles"`` (how counts appear in text)."""
    word, shape = composition.split(" ")
    return f"{word} {shape}s" if word in NUMBER_WORDS[2:] else composition


def build_shapes_world(config: ShapesWorldConfig) -> ShapesWorld:
    """Factory of the ``shapes-world`` dataset."""
    return ShapesWorld(config)
