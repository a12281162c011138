"""Symbolic scenes of the shapes world, their descriptions, and prompt requirements.

A scene is a set of objects (shape, colour, cell of a 2x2 grid, small pixel jitter). Everything that
judges a scene works on this symbolic form: the data generator checks that an image satisfies its
prompt, and GenEvalMini turns a generated image back into a scene (by detection) and applies the
very same check. So "the detector is calibrated" reduces to "detection recovers the rendered scene".
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import attrs

from tuskml.core.errors import TuskmlError
from tuskml.plugins.mammoth2.configs_data import CELLS, COLOURS, GENEVAL_CATEGORIES, NUMBER_WORDS, SHAPES


class ShapesWorldError(TuskmlError, ValueError):
    """A scene, prompt or sample of the shapes world that is malformed."""


Relation = Literal["left of", "right of", "above", "below"]
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")


@attrs.frozen
class ShapeObject:
    """One object. ``cell`` indexes :data:`CELLS`; ``dx, dy, ds`` are pixel jitters at 32 px."""

    shape: str
    colour: str
    cell: int
    dx: int = 0
    dy: int = 0
    ds: int = 0

    def __attrs_post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ShapesWorldError(f"unknown shape {self.shape!r}; shapes: {SHAPES}")
        if self.colour not in COLOURS:
            raise ShapesWorldError(f"unknown colour {self.colour!r}; colours: {COLOURS}")
        if not 0 <= self.cell < len(CELLS):
            raise ShapesWorldError(f"cell must be in [0, {len(CELLS)}), got {self.cell}")

    @property
    def row(self) -> int:
        return self.cell // 2

    @property
    def col(self) -> int:
        return self.cell % 2

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@attrs.frozen
class Scene:
    """Objects in distinct cells, kept sorted by cell so equal scenes compare equal."""

    objects: tuple[ShapeObject, ...] = attrs.field(converter=lambda objs: tuple(sorted(objs, key=lambda o: o.cell)))

    def __attrs_post_init__(self) -> None:
        cells = [o.cell for o in self.objects]
        if len(set(cells)) != len(cells):
            raise ShapesWorldError(f"two objects share a cell: {cells}")

    def count(self, shape: str) -> int:
        return sum(o.shape == shape for o in self.objects)

    def find(self, shape: str, colour: str | None = None) -> list[ShapeObject]:
        return [o for o in self.objects if o.shape == shape and (colour is None or o.colour == colour)]

    def free_cells(self) -> list[int]:
        used = {o.cell for o in self.objects}
        return [c for c in range(len(CELLS)) if c not in used]

    def symbols(self) -> tuple[tuple[str, str, int], ...]:
        """(shape, colour, cell) of every object: what detection must recover (jitter excluded)."""
        return tuple((o.shape, o.colour, o.cell) for o in self.objects)

    def compositions(self) -> set[str]:
        """Colour-shape pairs (``"green triangle"``) and count-shape pairs (``"three circle"``, counts >= 2)."""
        out = {o.name for o in self.objects}
        for shape, n in Counter(o.shape for o in self.objects).items():
            if n >= 2:
                out.add(f"{NUMBER_WORDS[n]} {shape}")
        return out


def plural(shape: str, n: int) -> str:
    return shape if n == 1 else shape + "s"


def describe(scene: Scene, *, colours: bool = True, cell_first: bool = False) -> str:
    """The canonical caption: objects in reading order, e.g. ``a red circle at top left and a blue
    square at bottom right``; ``nothing`` for an empty scene. ``colours=False`` leaves the colours
    out (``a circle at top left and a square at bottom right``): the layout alone. ``cell_first``
    puts each cell before its object (``at top left a red circle and ...``)."""
    parts = [f"at {CELLS[o.cell]} a {o.name if colours else o.shape}" if cell_first else
             f"a {o.name if colours else o.shape} at {CELLS[o.cell]}" for o in scene.objects]
    return join_phrases(parts) if parts else "nothing"


def join_phrases(parts: list[str]) -> str:
    """``a, b and c``: how a caption or plan lists its objects."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


@attrs.frozen
class ObjectSpec:
    """What a prompt asks for about one object: a shape, optionally its colour."""

    shape: str
    colour: str | None = None

    def matches(self, obj: ShapeObject) -> bool:
        return obj.shape == self.shape and (self.colour is None or obj.colour == self.colour)

    @property
    def phrase(self) -> str:
        return f"a {self.colour} {self.shape}" if self.colour else f"a {self.shape}"


def relation_holds(a: ShapeObject, relation: str, b: ShapeObject) -> bool:
    if relation == "left of":
        return a.col < b.col
    if relation == "right of":
        return a.col > b.col
    if relation == "above":
        return a.row < b.row
    if relation == "below":
        return a.row > b.row
    raise ShapesWorldError(f"unknown relation {relation!r}; relations: {RELATIONS}")


@attrs.frozen
class T2IPrompt:
    """A text-to-image prompt of one GenEval category and the requirement it states.

    * ``single_object``: ``objects[0]`` present; ``two_object`` / ``color_attr``: both present;
    * ``counting``: exactly ``count`` objects of ``objects[0].shape``;
    * ``colors``: an object of that shape and colour; ``position``: A ``relation`` B.
    """

    category: str
    objects: tuple[ObjectSpec, ...]
    count: int | None = None
    relation: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.category not in GENEVAL_CATEGORIES:
            raise ShapesWorldError(f"unknown GenEval category {self.category!r}; categories: {GENEVAL_CATEGORIES}")
        need = {"single_object": 1, "colors": 1, "counting": 1, "two_object": 2, "color_attr": 2, "position": 2}
        if len(self.objects) != need[self.category]:
            raise ShapesWorldError(f"a {self.category} prompt names {need[self.category]} objects, got {len(self.objects)}")
        if self.category == "counting" and not (self.count and 1 <= self.count <= 4):
            raise ShapesWorldError(f"a counting prompt needs count in 1..4, got {self.count}")
        if self.category == "position" and self.relation not in RELATIONS:
            raise ShapesWorldError(f"a position prompt needs a relation in {RELATIONS}, got {self.relation!r}")

    @property
    def text(self) -> str:
        a = self.objects[0]
        if self.category in ("single_object", "colors"):
            return a.phrase
        if self.category in ("two_object", "color_attr"):
            return f"{a.phrase} and {self.objects[1].phrase}"
        if self.category == "counting":
            assert self.count is not None
            return f"{NUMBER_WORDS[self.count]} {plural(a.shape, self.count)}"
        return f"{a.phrase} {self.relation} {self.objects[1].phrase}"

    def mentions(self) -> set[str]:
        """The compositions this prompt names (for held-out splitting)."""
        out = {f"{o.colour} {o.shape}" for o in self.objects if o.colour}
        if self.category == "counting" and self.count and self.count >= 2:
            out.add(f"{NUMBER_WORDS[self.count]} {self.objects[0].shape}")
        return out

    def satisfied_by(self, scene: Scene) -> bool:
        objs = scene.objects
        if self.category == "counting":
            return scene.count(self.objects[0].shape) == self.count
        if self.category == "position":
            a, b = self.objects
            return any(a.matches(x) and b.matches(y) and x is not y and relation_holds(x, self.relation or "", y)
                       for x in objs for y in objs)
        if len(self.objects) == 1:
            return any(self.objects[0].matches(o) for o in objs)
        a, b = self.objects
        return any(a.matches(x) and b.matches(y) and x is not y for x in objs for y in objs)
