"""Search results shared by ``sparsenas`` and ``random``: Pareto front, JSON and PNG output.

The front is over three objectives: accuracy (higher is better), estimated instructions and flash
bytes (lower is better). Only candidates that fit the target take part.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any

import attrs

from tuskml.plugins.tinyformer.evaluator import Evaluation


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> pathlib.Path:
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, p)
    return p


def dominates(a: Evaluation, b: Evaluation) -> bool:
    """``a`` is at least as good as ``b`` in every objective and better in one."""
    ka = (a.accuracy, -a.measurement.instructions, -a.measurement.flash_bytes)
    kb = (b.accuracy, -b.measurement.instructions, -b.measurement.flash_bytes)
    return all(x >= y for x, y in zip(ka, kb)) and ka != kb


def pareto_front(evaluations: list[Evaluation]) -> list[Evaluation]:
    fit = [e for e in evaluations if e.fits and e.accuracy is not None]
    front = [e for e in fit if not any(dominates(o, e) for o in fit)]
    return sorted(front, key=lambda e: e.measurement.instructions)


def best_of(evaluations: list[Evaluation]) -> Evaluation | None:
    """Highest accuracy among fitting candidates; ties go to fewer instructions."""
    fit = [e for e in evaluations if e.fits and e.accuracy is not None]
    if not fit:
        return None
    return max(fit, key=lambda e: (e.accuracy, -e.measurement.instructions, -e.measurement.flash_bytes))


@attrs.frozen(kw_only=True)
class SearchResult:
    """What a sparse search returns: the best candidate, the front and every evaluation in order."""

    strategy: str
    best: Evaluation | None
    front: list[Evaluation]
    history: list[dict[str, Any]]  # evaluation dicts with "step"/"generation"
    evaluations: int
    limits: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "best": self.best.to_dict() if self.best else None,
                "pareto_front": [e.to_dict() for e in self.front], "evaluations": self.evaluations,
                "limits": self.limits, "history": self.history}

    def write(self, out_dir: str | os.PathLike[str]) -> dict[str, pathlib.Path]:
        out = pathlib.Path(out_dir)
        paths = {"json": write_json_atomic(out / f"{self.strategy}.json", self.to_dict())}
        paths["png"] = plot_fronts({self.strategy: self}, out / f"{self.strategy}_pareto.png")
        return paths


def plot_fronts(results: dict[str, SearchResult], path: str | os.PathLike[str], title: str = "") -> pathlib.Path:
    """Accuracy vs instructions and vs flash for every fitting candidate of each result, fronts joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for (name, res), color in zip(results.items(), colors):
        pts = [h for h in res.history if h.get("fits") and h.get("accuracy") is not None]
        front = res.front
        for ax, key in zip(axes, ("instructions", "flash_bytes")):
            ax.scatter([h[key] for h in pts], [h["accuracy"] for h in pts], s=12, alpha=0.35, color=color)
            fx = sorted(front, key=lambda e: getattr(e.measurement, key))
            ax.plot([getattr(e.measurement, key) for e in fx], [e.accuracy for e in fx], "o-", color=color,
                    label=f"{name} (best {res.best.accuracy:.3f})" if res.best else name)
    axes[0].set_xlabel("estimated instructions (SparseEngine cost model)")
    axes[1].set_xlabel("flash bytes (encoded sparse weights + code)")
    for ax in axes:
        ax.set_ylabel("validation accuracy (inherited weights)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "Pareto front: accuracy vs instructions vs flash")
    fig.tight_layout()
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
