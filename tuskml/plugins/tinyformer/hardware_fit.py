"""Does a candidate fit the hardware target? Measured with SparseEngine's own pipeline.

``measure`` runs :func:`tuskml.backends.sparse_engine.pipeline.prepare` (import, int8 quantisation,
per-layer dense/sparse choice by the engine's cost model, memory plan, footprint) on the candidate,
so flash is the *encoded* sparse size and SRAM the planner's arena: the same numbers ``tuskml
tinyformer deploy`` checks before it links. SRAM is the arena plus the target's stack reservation,
as the target's own ``check_fits`` counts it.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import nn

from tuskml.core.errors import TuskmlError


class HardwareFitError(TuskmlError):
    """A target without memory limits where the search needs them, or a model the engine cannot take."""


@attrs.frozen(kw_only=True)
class TargetLimits:
    """The limits a candidate must meet (bytes; ``max_instructions`` 0 = no cap)."""

    name: str
    flash_bytes: int
    sram_bytes: int
    stack_bytes: int
    max_instructions: int = 0

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def target_limits(target: str | Any, *, flash_bytes: int | None = None, sram_bytes: int | None = None,
                  max_instructions: int = 0) -> TargetLimits:
    """Limits of a registered hardware target (name or built target), optionally tightened."""
    import tuskml

    t = tuskml.create("hardware_targets", target) if isinstance(target, str) else target
    flash = flash_bytes if flash_bytes is not None else t.flash_bytes
    sram = sram_bytes if sram_bytes is not None else t.sram_bytes
    if flash is None or sram is None:
        raise HardwareFitError(f"target {t.name!r} has no flash/SRAM limits (the host); pick an MCU target such as "
                               f"'stm32f746' or pass flash/SRAM limits")
    return TargetLimits(name=t.name, flash_bytes=int(flash), sram_bytes=int(sram),
                        stack_bytes=int(getattr(t, "stack_bytes", 0) or 0), max_instructions=max_instructions)


@attrs.frozen(kw_only=True)
class Measurement:
    """Engine numbers for one candidate. ``reason`` says why it does not fit (None when it fits)."""

    flash_bytes: int
    sram_bytes: int  # arena + target stack
    arena_bytes: int
    instructions: int  # estimated, chosen format per layer
    dense_instructions: int  # estimated, every layer dense
    sparse_layers: int
    reason: str | None
    over: tuple[str, ...] = ()  # the limits it breaks: "flash", "sram", "instructions"

    @property
    def fits(self) -> bool:
        return self.reason is None

    def to_dict(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "over": list(self.over), "fits": self.fits}


def measure_deployable(dep: Any, limits: TargetLimits) -> Measurement:
    """Turn a ``Deployable`` into a :class:`Measurement` against ``limits``."""
    est = dep.estimated_instructions
    instructions = int(round(sum(est.values())))
    dense = int(round(sum(dep.costs[n].dense if n in dep.costs else v for n, v in est.items())))
    flash = int(dep.footprint.flash_bytes)
    sram = int(dep.footprint.arena_bytes) + limits.stack_bytes
    problems, over = [], []
    if flash > limits.flash_bytes:
        over.append("flash")
        top = ", ".join(f"{x.module_path or x.node} ({x.flash_bytes} B)" for x in dep.footprint.largest_flash_layers(2))
        problems.append(f"flash {flash} B > {limits.flash_bytes} B (largest: {top})")
    if sram > limits.sram_bytes:
        over.append("sram")
        problems.append(f"SRAM {sram} B (arena {dep.footprint.arena_bytes} B + stack {limits.stack_bytes} B) > "
                        f"{limits.sram_bytes} B")
    if limits.max_instructions and instructions > limits.max_instructions:
        over.append("instructions")
        problems.append(f"instructions {instructions} > {limits.max_instructions}")
    sparse_layers = sum(1 for x in dep.footprint.layers if x.sparse)
    return Measurement(flash_bytes=flash, sram_bytes=sram, arena_bytes=int(dep.footprint.arena_bytes),
                       instructions=instructions, dense_instructions=dense, sparse_layers=sparse_layers,
                       reason="; ".join(problems) or None, over=tuple(over))


def measure(model: nn.Module, calibration: torch.Tensor, limits: TargetLimits, *,
            sparsity: dict[str, float] | None = None, blocks: dict[str, int] | None = None) -> tuple[Measurement, Any]:
    """Prepare ``model`` with SparseEngine (pruning with ``sparsity``/``blocks`` per module path) and
    measure it; returns (measurement, deployable)."""
    from tuskml.backends.sparse_engine.pipeline import prepare

    if sparsity:
        dep = prepare(model, calibration, sparsity=dict(sparsity), block=dict(blocks or {}))
    else:
        dep = prepare(model, calibration)
    return measure_deployable(dep, limits), dep
