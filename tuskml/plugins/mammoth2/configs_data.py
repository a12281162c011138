"""Configs of the mammoth2 data side (the procedural shapes world). Torch-free: the plugin imports it.

The shapes world is a toy universe small enough for a CPU model to master: coloured circles, squares
and triangles on a 2x2 grid of cells. Every sample is computed from ``(seed, split, index)``, so a
dataset needs no download and two processes agree on sample ``i`` without talking to each other.
"""

from __future__ import annotations

from typing import Literal

import attrs

import tuskml

#: the shape vocabulary (names used in prompts and answers)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: colour name -> RGB; chosen far apart so a nearest-colour detector separates them reliably
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (30, 200, 30),
    "blue": (30, 60, 235),
    "yellow": (240, 230, 30),
    "magenta": (225, 40, 225),
    "cyan": (30, 225, 230),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
BACKGROUND: tuple[int, int, int] = (0, 0, 0)
#: the 2x2 grid of cells objects sit in, in reading order
CELLS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four")

#: GenEval's six prompt categories
GENEVAL_CATEGORIES: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
EDIT_KINDS: tuple[str, ...] = ("recolour", "remove", "add", "replace")
QUESTION_KINDS: tuple[str, ...] = ("count", "colour", "presence", "position", "caption")
#: the text-to-image plan styles that copy the prompt's phrases (``ShapesWorldConfig.t2i_plan``)
PHRASE_PLANS: tuple[str, ...] = ("phrases", "cell-phrases")


def _image_size(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value < 16 or value % 16:
        raise ValueError(f"image_size must be a multiple of 16 and at least 16 (32 default, 64 option), got {value}")


def _pairs(instance: object, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    for item in value:
        parts = item.split(" ")
        if len(parts) != 2 or parts[0] not in COLOURS or parts[1] not in SHAPES:
            raise ValueError(f"{attribute.name}: {item!r} is not '<colour> <shape>' with colour in {COLOURS} "
                             f"and shape in {SHAPES}")


def _counts(instance: object, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    for item in value:
        parts = item.split(" ")
        if len(parts) != 2 or parts[0] not in NUMBER_WORDS[2:] or parts[1] not in SHAPES:
            raise ValueError(f"{attribute.name}: {item!r} is not '<two|three|four> <shape>' with shape in {SHAPES}")


def _weights(instance: object, attribute: attrs.Attribute, value: tuple[float, ...]) -> None:
    if len(value) != 3 or any(w < 0 for w in value) or sum(value) <= 0:
        raise ValueError(f"{attribute.name} must be three non-negative weights (t2i, edit, understanding) "
                         f"with a positive sum, got {value}")


@tuskml.config_class
class ShapesWorldConfig(tuskml.DatasetConfig):
    """The procedural shapes world (see :mod:`tuskml.plugins.mammoth2.shapes_world`).

    ``task`` picks the sample kind (``mixed`` draws one per index with ``mix`` weights for
    text-to-image, edit, understanding). ``split="train"`` never shows a held-out composition
    (``heldout_pairs``: colour-shape pairs; ``heldout_counts``: count-shape pairs) in any image or
    text; ``split="heldout"`` samples all name or show at least one of them. ``length`` is the
    number of distinct indices (samples are generated on access, nothing is stored).
    """

    split: Literal["train", "heldout"] = "train"
    task: Literal["mixed", "t2i", "edit", "understanding"] = "mixed"
    image_size: int = attrs.field(default=32, validator=_image_size)
    length: int = attrs.field(default=100_000, validator=attrs.validators.ge(1))
    seed: int = 0
    mix: tuple[float, ...] = attrs.field(default=(0.5, 0.25, 0.25), validator=_weights)
    heldout_pairs: tuple[str, ...] = attrs.field(default=("green triangle", "blue circle", "yellow square"),
                                                 validator=_pairs)
    heldout_counts: tuple[str, ...] = attrs.field(default=("three circle",), validator=_counts)
    # +- pixels at 32 px; more than 1 can make neighbouring objects touch (and merge for the detector)
    size_jitter: int = attrs.field(default=1, validator=[attrs.validators.ge(0), attrs.validators.le(1)])
    # what a ``scene_plan`` model writes before an edit's target: "layout", the target's layout ("a
    # triangle at top left and ..."), or "cell", the edited cell ("at top left"). Equal in an edit-only
    # probe (held out 0.42 / 0.42) and 11% cheaper, but in a joint 30-min run edits fell 0.27 -> 0.19
    # (remove 0.23 -> 0.06): the layout plan shares its skill with text-to-image plans; or "scene", the
    # target's caption with colours ("a yellow triangle at bottom right"), which a removal writes by
    # leaving out the phrase the instruction names (edit probe: held out 0.43 -> 0.38, so off)
    edit_plan: Literal["layout", "cell", "scene"] = "layout"
    # what a ``scene_plan`` model writes before a text-to-image target: "layout", each object's shape
    # and cell in reading order ("a triangle at top left and a circle at ..."), or "phrases", the
    # prompt's own phrases in the prompt's order, each with its cell ("a green triangle at bottom left
    # and a yellow circle at top left" for "a green triangle below a yellow circle"). t2i probe: held-out
    # position 0.22 -> 0.41; joint 30-min run within the seed spread (plugin README), so off
    # "cell-phrases": the same with each cell first ("at bottom left a green triangle and ..."), so that a
    # phrase's words know their cell (for gen_copy_keys = "hidden")
    t2i_plan: Literal["layout", "phrases", "cell-phrases"] = "layout"
    # what a ``describe_first`` model writes before an answer: "phrases", the objects of the asked shape
    # as a caption writes them ("a blue circle at top left and ..."), or "cell-phrases", each cell first
    # ("at top left a blue circle and ..."), so that the colour word is written after its cell and a
    # pointer that reads it from the image (``answer_pointer_words``) knows where to look
    description: Literal["phrases", "cell-phrases"] = "phrases"
    # train split only (the held-out benchmark stays as it is): the share of colour-attribution and
    # position prompts that name one shape twice ("a red circle left of a blue circle"), where a
    # colour can be bound to its object by the prompt's word order alone, not by which pairs were seen
    # (t2i probe at 0.5: held-out position 0.22 -> 0.22, colour attribution 0.16 -> 0.03, so off)
    train_same_shape: float = attrs.field(default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)])
