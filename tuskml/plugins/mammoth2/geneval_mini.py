"""GenEvalMini: a deterministic shapes-world detector and the scores built on it.

GenEval judges a generated image with an object detector; here the world is simple enough for a
hand-written one, which makes the score exact and reproducible:

1. colour segmentation: each pixel goes to the nearest palette colour if it lies within
   ``colour_radius`` of it (RGB distance) and is nearer to it than to the background;
2. connected components (4-neighbourhood) per colour; components smaller than ``min_area_fraction``
   of a nominal object are noise;
3. shape classification from the component's mask: a triangle is much wider in its bottom third
   than in its top third; otherwise a square fills the corners of its bounding box, a circle not;
4. the component's centroid gives its grid cell.

The detected scene is judged by the same symbolic checks that generate the data
(:meth:`T2IPrompt.satisfied_by`), so on rendered ground truth the score is 1 exactly when
detection recovers the scene (tested), and noise or wrong scenes score 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import numpy as np

from tuskml.plugins.mammoth2.configs_data import (
    BACKGROUND,
    COLOURS,
    EDIT_KINDS,
    GENEVAL_CATEGORIES,
    PALETTE,
    QUESTION_KINDS,
)
from tuskml.plugins.mammoth2.shapes_render import OBJECT_FRACTION
from tuskml.plugins.mammoth2.shapes_scene import Scene, ShapeObject, ShapesWorldError, T2IPrompt


@attrs.frozen
class Detection:
    """One detected object: its class, colour, grid cell, centroid (x, y) and area in pixels."""

    shape: str
    colour: str
    cell: int
    centroid: tuple[float, float]
    area: int


def as_uint8_image(image: Any) -> np.ndarray:
    """PIL image, uint8 HWC array, or float ``[3, H, W]`` tensor/array in [-1, 1] -> uint8 HWC."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
        arr = np.asarray(image.convert("RGB"))
    else:
        if hasattr(image, "detach"):
            image = image.detach().cpu().float().numpy()
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            if arr.ndim != 3 or arr.shape[0] != 3:
                raise ShapesWorldError(f"float images must be [3, H, W] in [-1, 1], got shape {arr.shape}")
            arr = np.clip((arr.transpose(1, 2, 0) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] != arr.shape[1]:
        raise ShapesWorldError(f"expected a square RGB image, got an array of shape {arr.shape}")
    return arr


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, as arrays of (y, x) coordinates."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, pixels = [(int(y0), int(x0))], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        out.append(np.asarray(pixels))
    return out


@attrs.frozen
class ShapesDetector:
    """The deterministic detector (see the module docstring); thresholds are in pixels at any size."""

    colour_radius: float = 90.0
    min_area_fraction: float = 0.3  # of a nominal triangle's area
    square_corners: float = 0.5  # filled fraction of the bounding box's corners above which a blob is a square
    triangle_taper: float = 1.8  # bottom-third width / top-third width above which a blob is a triangle

    def segment(self, image: np.ndarray) -> np.ndarray:
        """Int[H, W]: index into COLOURS, or -1 for background / unassigned pixels."""
        px = image.astype(np.float32)
        refs = np.asarray([PALETTE[c] for c in COLOURS] + [BACKGROUND], dtype=np.float32)
        dist = np.linalg.norm(px[:, :, None, :] - refs[None, None], axis=-1)  # [H, W, K+1]
        nearest = dist.argmin(-1)
        close = dist.min(-1) <= self.colour_radius
        labels = np.where(close & (nearest < len(COLOURS)), nearest, -1)
        return labels

    def classify(self, pixels: np.ndarray) -> str:
        ys, xs = pixels[:, 0], pixels[:, 1]
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        height, width = y1 - y0 + 1, x1 - x0 + 1
        third = max(height // 3, 1)
        top = np.count_nonzero(ys < y0 + third) / third
        bottom = np.count_nonzero(ys > y1 - third) / third
        if bottom > self.triangle_taper * max(top, 1e-6):
            return "triangle"
        # a square fills the corners of its bounding box; a circle leaves them empty (at 10 px a
        # rasterised disc fills ~88% of its box, so the fill ratio alone cannot tell them apart)
        box = np.zeros((height, width), dtype=bool)
        box[ys - y0, xs - x0] = True
        k = max(2, int(round(0.2 * min(height, width))))
        iy, ix = np.mgrid[0:height, 0:width]
        near = lambda a, n: np.minimum(a, n - 1 - a)  # noqa: E731 - distance to the nearer edge
        corners = near(iy, height) + near(ix, width) < k
        return "square" if box[corners].mean() >= self.square_corners else "circle"

    def detect(self, image: Any) -> list[Detection]:
        arr = as_uint8_image(image)
        size = arr.shape[0]
        side = OBJECT_FRACTION * size / 2.0
        min_area = self.min_area_fraction * 0.5 * side * side
        labels = self.segment(arr)
        found = []
        for ci, colour in enumerate(COLOURS):
            mask = labels == ci
            if not mask.any():
                continue
            for pixels in _components(mask):
                if len(pixels) < min_area:
                    continue
                cy, cx = pixels[:, 0].mean() + 0.5, pixels[:, 1].mean() + 0.5
                cell = int(cy >= size / 2) * 2 + int(cx >= size / 2)
                found.append(Detection(self.classify(pixels), colour, cell, (float(cx), float(cy)), len(pixels)))
        return sorted(found, key=lambda d: (d.cell, d.centroid))

    def scene(self, image: Any) -> Scene:
        """The detected scene; of several detections in one cell the largest is kept."""
        best: dict[int, Detection] = {}
        for d in self.detect(image):
            if d.cell not in best or d.area > best[d.cell].area:
                best[d.cell] = d
        return Scene(tuple(ShapeObject(d.shape, d.colour, d.cell) for d in best.values()))


# --- scores ------------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


@attrs.define
class GenEvalMini:
    """Scores text-to-image results per GenEval category and overall (the mean over categories,
    as GenEval reports it)."""

    detector: ShapesDetector = attrs.field(factory=ShapesDetector)

    def score(self, prompt: T2IPrompt, image: Any) -> float:
        return float(prompt.satisfied_by(self.detector.scene(image)))

    def evaluate(self, prompts: Sequence[T2IPrompt], images: Sequence[Any]) -> dict[str, Any]:
        if len(prompts) != len(images):
            raise ShapesWorldError(f"GenEvalMini got {len(prompts)} prompts but {len(images)} images")
        per: dict[str, list[float]] = defaultdict(list)
        for p, im in zip(prompts, images):
            per[p.category].append(self.score(p, im))
        cats = {c: _mean(per[c]) for c in GENEVAL_CATEGORIES if per[c]}
        return {"overall": _mean(list(cats.values())), **cats, "n": {c: len(per[c]) for c in cats}}


def pixel_agreement(a: np.ndarray, b: np.ndarray, mask: np.ndarray, tolerance: int = 48) -> float:
    """Fraction of ``mask`` pixels where images ``a`` and ``b`` differ by at most ``tolerance`` per channel."""
    if not mask.any():
        return 1.0
    diff = np.abs(a.astype(np.int32) - b.astype(np.int32)).max(-1)
    return float((diff[mask] <= tolerance).mean())


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    err = ((a.astype(np.float64) - b.astype(np.float64)) ** 2)[mask].mean() if mask.any() else 0.0
    return float("inf") if err == 0 else float(10 * np.log10(255.0**2 / err))


@attrs.define
class EditScore:
    """Edit success (the detected output scene equals the target scene: the instruction was followed
    and nothing else changed symbolically) and preservation (pixel agreement with the source outside
    the edited cell). ``preserved_threshold`` defines success-with-preservation."""

    detector: ShapesDetector = attrs.field(factory=ShapesDetector)
    preserved_threshold: float = 0.9

    def score(self, output: Any, source: np.ndarray, target_scene: Scene, edit_region: np.ndarray) -> dict[str, float]:
        out = as_uint8_image(output)
        success = float(self.detector.scene(out).symbols() == target_scene.symbols())
        keep = ~edit_region
        agreement = pixel_agreement(out, as_uint8_image(source), keep)
        return {"success": success, "preservation": agreement, "psnr": psnr(out, as_uint8_image(source), keep),
                "success_preserved": float(success and agreement >= self.preserved_threshold)}

    def evaluate(self, kinds: Sequence[str], outputs: Sequence[Any], sources: Sequence[np.ndarray],
                 target_scenes: Sequence[Scene], regions: Sequence[np.ndarray]) -> dict[str, Any]:
        per: dict[str, list[dict[str, float]]] = defaultdict(list)
        for k, o, s, t, r in zip(kinds, outputs, sources, target_scenes, regions, strict=True):
            per[k].append(self.score(o, s, t, r))
        report: dict[str, Any] = {}
        for metric in ("success", "preservation", "success_preserved", "psnr"):
            by_kind = {k: _mean([x[metric] for x in per[k]]) for k in EDIT_KINDS if per[k]}
            finite = [v for v in by_kind.values() if np.isfinite(v)]
            report[metric] = {**by_kind, "overall": _mean(finite)}
        report["n"] = {k: len(per[k]) for k in EDIT_KINDS if per[k]}
        return report


def normalise_answer(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


def understanding_accuracy(kinds: Iterable[str], predictions: Iterable[str], answers: Iterable[str]) -> dict[str, Any]:
    """Exact-match accuracy (after lower-casing and whitespace normalisation) per question kind."""
    per: dict[str, list[float]] = defaultdict(list)
    for k, p, a in zip(kinds, predictions, answers, strict=True):
        per[k].append(float(normalise_answer(p) == normalise_answer(a)))
    acc = {k: _mean(per[k]) for k in QUESTION_KINDS if per[k]}
    return {"accuracy": {**acc, "overall": _mean(list(acc.values()))}, "n": {k: len(per[k]) for k in acc}}


def sample_grid(rows: dict[str, Sequence[Any]], path: Any, *, scale: int = 3, pad: int = 2) -> Any:
    """A PNG grid: one row of images per label (e.g. per GenEval category), label text on the left."""
    from PIL import Image, ImageDraw

    arrays = {k: [as_uint8_image(im) for im in ims] for k, ims in rows.items() if len(ims)}
    if not arrays:
        raise ShapesWorldError("sample_grid needs at least one image")
    size = next(iter(arrays.values()))[0].shape[0] * scale
    label_w = 90
    cols = max(len(v) for v in arrays.values())
    grid = Image.new("RGB", (label_w + cols * (size + pad), len(arrays) * (size + pad)), (40, 40, 40))
    draw = ImageDraw.Draw(grid)
    for r, (label, ims) in enumerate(arrays.items()):
        y = r * (size + pad)
        draw.text((3, y + size // 2 - 5), label, fill=(230, 230, 230))
        for c, im in enumerate(ims):
            tile = Image.fromarray(im).resize((size, size), Image.NEAREST)
            grid.paste(tile, (label_w + c * (size + pad), y))
    grid.save(path)
    return grid
