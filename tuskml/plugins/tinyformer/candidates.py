"""A SparseNAS candidate: an architecture plus a block size and a sparsity for every prunable layer.

Prunable layers are those SparseEngine can run block-sparse (linear and 1x1 convs, as listed by
``sparse_engine.pruning.prunable_layers``), named by their module path in the extracted subnet.
Those paths depend on the arch (a deeper stage has more blocks), so the per-layer plan is rebuilt
after every architecture change, keeping the choices of layers that still exist.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from tuskml.plugins.tinyformer.arch import HybridArch


@attrs.frozen(kw_only=True)
class SparseCandidate:
    """``layers``: sorted ``(module_path, block, sparsity)`` triples."""

    arch: HybridArch
    layers: tuple[tuple[str, int, float], ...]

    @property
    def sparsity(self) -> dict[str, float]:
        return {p: s for p, _, s in self.layers}

    @property
    def blocks(self) -> dict[str, int]:
        return {p: b for p, b, _ in self.layers}

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(),
                "layers": [{"module_path": p, "block": b, "sparsity": s} for p, b, s in self.layers]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SparseCandidate:
        return cls(arch=HybridArch.from_dict(data["arch"]),
                   layers=tuple((e["module_path"], int(e["block"]), float(e["sparsity"])) for e in data["layers"]))


def prunable_paths(space: Any, arch: HybridArch) -> tuple[str, ...]:
    """Module paths of the arch's prunable layers (cached on the space, per arch)."""
    from tuskml.backends.sparse_engine.pruning import prunable_layers

    cache = space.__dict__.setdefault("_prunable_paths_cache", {})
    if arch not in cache:
        cache[arch] = tuple(sorted(prunable_layers(space.extract(arch))))
    return cache[arch]


def random_plan(paths: tuple[str, ...], rng: random.Random, block_sizes: tuple[int, ...],
                sparsities: tuple[float, ...]) -> tuple[tuple[str, int, float], ...]:
    return tuple((p, rng.choice(block_sizes), rng.choice(sparsities)) for p in paths)


def rebuild_plan(paths: tuple[str, ...], old: tuple[tuple[str, int, float], ...], rng: random.Random,
                 block_sizes: tuple[int, ...], sparsities: tuple[float, ...], prob: float = 0.0) -> tuple[tuple[str, int, float], ...]:
    """Plan for ``paths``: keep ``old``'s choice for surviving layers (resampled with ``prob``), new
    layers get random choices."""
    previous = {p: (b, s) for p, b, s in old}
    out = []
    for p in paths:
        b, s = previous.get(p, (rng.choice(block_sizes), rng.choice(sparsities)))
        if rng.random() < prob:
            b = rng.choice(block_sizes)
        if rng.random() < prob:
            s = rng.choice(sparsities)
        out.append((p, b, s))
    return tuple(out)


def crossover_plan(paths: tuple[str, ...], a: tuple, b: tuple, rng: random.Random, block_sizes: tuple[int, ...],
                   sparsities: tuple[float, ...]) -> tuple[tuple[str, int, float], ...]:
    pa, pb = {p: (x, y) for p, x, y in a}, {p: (x, y) for p, x, y in b}
    out = []
    for p in paths:
        options = [v for v in (pa.get(p), pb.get(p)) if v is not None]
        bs = rng.choice(options) if options else (rng.choice(block_sizes), rng.choice(sparsities))
        out.append((p, *bs))
    return tuple(out)
