"""Block-magnitude pruning of linear and 1x1-conv weights (blocks of ``1 x B`` along the input dim).

For each prunable layer the weight is viewed as ``W[O][K]`` (a 1x1 conv's ``[O, C, 1, 1]`` is
``[O, C]``), cut into ``1 x B`` blocks along K (the last block may be short), and the blocks with the
smallest L2 norm are zeroed until the requested fraction of blocks is zero. Block size and sparsity
may differ per layer (TinyFormer's "mixed block sizes"), so the BRL encoding of the quantised weights
then stores only the surviving blocks.
"""

from __future__ import annotations

import fnmatch
import math

import attrs
import torch
from torch import nn

from tuskml.core.errors import TuskmlError


class PruningError(TuskmlError):
    """A bad sparsity / block specification (names the layer)."""


@attrs.frozen(kw_only=True)
class LayerPruning:
    """What happened to one layer."""

    module_path: str
    block: int
    target_sparsity: float
    block_sparsity: float  # fraction of blocks that are all zero afterwards
    blocks: int


def prunable_layers(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights of ``nn.Linear`` and 1x1, stride-1, ungrouped ``nn.Conv2d`` layers by module path, plus
    ``<path>.in_proj`` (the packed q/k/v ``[3E, E]`` matrix) of each ``nn.MultiheadAttention``."""
    out = {}
    for path, m in model.named_modules():
        if isinstance(m, nn.Linear):
            out[path] = m.weight
        elif (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1 and m.stride == (1, 1)
              and m.padding in ((0, 0), "valid")):
            out[path] = m.weight
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            out[f"{path}.in_proj" if path else "in_proj"] = m.in_proj_weight
    return out


def block_scores(weight: torch.Tensor, block: int) -> torch.Tensor:
    """L2 norm of each ``1 x block`` block of ``weight`` viewed as ``[O, K]`` -> ``[O, ceil(K/block)]``."""
    w = weight.detach().reshape(weight.shape[0], -1).float()
    o, k = w.shape
    kp = math.ceil(k / block) * block
    padded = torch.zeros(o, kp, dtype=w.dtype)
    padded[:, :k] = w
    return padded.reshape(o, kp // block, block).norm(dim=2)


def block_sparsity(weight: torch.Tensor, block: int) -> float:
    """Fraction of ``1 x block`` blocks that are entirely zero."""
    scores = block_scores(weight, block)
    return float((scores == 0).float().mean())


def prune_weight_(weight: torch.Tensor, block: int, sparsity: float) -> None:
    """Zero the ``round(sparsity * n_blocks)`` lowest-norm blocks of ``weight`` in place."""
    if not 0.0 <= sparsity < 1.0:
        raise PruningError(f"sparsity must be in [0, 1), got {sparsity}")
    scores = block_scores(weight, block)
    o, nb = scores.shape
    n_prune = int(round(sparsity * scores.numel()))
    if n_prune == 0:
        return
    order = torch.argsort(scores.reshape(-1), stable=True)[:n_prune]
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[order] = False
    k = weight[0].numel()
    mask = keep.reshape(o, nb, 1).expand(o, nb, block).reshape(o, nb * block)[:, :k]
    with torch.no_grad():
        weight.mul_(mask.reshape(weight.shape).to(weight.dtype))


def _lookup(spec: float | int | dict | None, path: str, what: str) -> float | int | None:
    if spec is None or isinstance(spec, (int, float)):
        return spec
    if isinstance(spec, dict):
        for pattern, value in spec.items():
            if pattern == path or fnmatch.fnmatchcase(path, pattern):
                return value
        return None
    raise PruningError(f"{what} must be a number or a dict of module path (glob) -> number, got {type(spec).__name__}")


def block_prune(model: nn.Module, sparsity: float | dict[str, float], block: int | dict[str, int] = 4,
                *, layers: list[str] | None = None) -> dict[str, LayerPruning]:
    """Block-magnitude prune ``model`` in place.

    ``sparsity``/``block``: one value for every prunable layer, or a dict mapping module paths (or
    glob patterns such as ``"vit.*"``) to values; layers a dict does not mention are left alone.
    ``layers`` restricts pruning to these module paths. Returns per-layer results.
    """
    candidates = prunable_layers(model)
    if layers is not None:
        unknown = [p for p in layers if p not in candidates]
        if unknown:
            raise PruningError(f"layers {unknown} are not prunable (linear or 1x1 conv); prunable: {sorted(candidates)}")
        candidates = {p: candidates[p] for p in layers}
    if isinstance(sparsity, dict):
        for pattern in sparsity:
            if not any(p == pattern or fnmatch.fnmatchcase(p, pattern) for p in candidates):
                raise PruningError(f"sparsity given for {pattern!r}, which matches no prunable layer; "
                                   f"prunable: {sorted(candidates)}")
    results = {}
    for path, weight in candidates.items():
        s = _lookup(sparsity, path, "sparsity")
        if s is None:
            continue
        b = _lookup(block, path, "block")
        b = 4 if b is None else b
        if not isinstance(b, int) or b < 1:
            raise PruningError(f"layer {path!r}: block size must be a positive int, got {b!r}")
        prune_weight_(weight, b, float(s))
        scores = block_scores(weight, b)
        results[path] = LayerPruning(module_path=path, block=b, target_sparsity=float(s),
                                     block_sparsity=float((scores == 0).float().mean()), blocks=scores.numel())
    return results
