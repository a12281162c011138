"""SparseNAS as a search: Pareto ranks, repairs that move a candidate towards the limit it broke, and,
on a synthetic problem where bigger is better but most random candidates break a limit, a better
result than random search at the same budget (several seeds, deterministic)."""

from __future__ import annotations

import random
import statistics

import pytest

import tuskml
from tuskml.plugins.tinyformer.candidates import SparseCandidate, prunable_paths
from tuskml.plugins.tinyformer.evaluator import Evaluation
from tuskml.plugins.tinyformer.hardware_fit import Measurement, TargetLimits
from tuskml.plugins.tinyformer.sparsenas import pareto_ranks, random_candidate, repair, shrink_arch

SPARSITIES = (0.0, 0.25, 0.5, 0.75)
BLOCKS = (4, 8, 16)


@pytest.fixture(scope="module")
def space():
    return tuskml.create("search_spaces", "tinyformer-hybrid", resolutions=(16,), width_mults=(1.0,))


def _measurement(instructions: int, over: tuple[str, ...] = ()) -> Measurement:
    return Measurement(flash_bytes=1, sram_bytes=1, arena_bytes=1, instructions=instructions,
                       dense_instructions=instructions, sparse_layers=0,
                       reason="; ".join(over) or None, over=over)


def test_pareto_ranks(space):
    cand = random_candidate(space, random.Random(0), BLOCKS, SPARSITIES)
    pts = [(0.9, 100), (0.8, 50), (0.7, 120), (0.5, 40), (0.85, 100)]
    evals = [Evaluation(candidate=cand, accuracy=a, measurement=_measurement(i), macs=0) for a, i in pts]
    # (0.9, 100), (0.8, 50), (0.5, 40) are the front; (0.85, 100) is beaten only by (0.9, 100);
    # (0.7, 120) by both
    assert pareto_ranks(evals) == [0, 0, 2, 0, 1]


def _expand_work(arch, cfg) -> float:
    """Expanded activations weighted by resolution: what SRAM and instructions grow with."""
    from tuskml.plugins.tinyformer.sparsenas import _mbconv_blocks

    return sum(arch.expands[s][b] * px * arch.kernels[s][b] ** 2 for s, b, px in _mbconv_blocks(arch, cfg))


def test_repair_moves_towards_the_broken_limit(space):
    rng = random.Random(1)
    cand = random_candidate(space, rng, BLOCKS, SPARSITIES)
    cand = SparseCandidate(arch=space.largest(), layers=tuple((p, 8, 0.0) for p in prunable_paths(space, space.largest())))
    flash = repair(space, Evaluation(candidate=cand, accuracy=None, measurement=_measurement(1, ("flash",)), macs=0),
                   rng, SPARSITIES, BLOCKS)
    assert flash is not None and flash.arch == cand.arch
    raised = [p for p, _, s in flash.layers if s > 0.0]
    assert 1 <= len(raised) <= 3 and all(s == 0.25 for _, _, s in flash.layers if s > 0.0)
    for what in ("sram", "instructions"):
        fixed = repair(space, Evaluation(candidate=cand, accuracy=None, measurement=_measurement(1, (what,)), macs=0),
                       rng, SPARSITIES, BLOCKS)
        assert fixed is not None
        assert _expand_work(fixed.arch, space.config) < _expand_work(cand.arch, space.config)
        # the plan of the layers that still exist is kept
        old = {p: (b, s) for p, b, s in cand.layers}
        assert all(old[p] == (b, s) for p, b, s in fixed.layers if p in old)
    smallest = space.smallest()
    assert shrink_arch(smallest, space.config, rng, kernel_matters=True) is None


class _SyntheticEvaluator:
    """Bigger nets are more accurate, but flash (weights kept) and 'SRAM' (expanded work) are capped so
    that most random candidates break a limit."""

    def __init__(self, space, flash_cap: float, work_cap: float):
        self.space = space
        self.flash_cap, self.work_cap = flash_cap, work_cap
        self.limits = TargetLimits(name="synthetic", flash_bytes=int(flash_cap), sram_bytes=int(work_cap),
                                   stack_bytes=0)
        from tuskml.plugins.tinyformer.sparsenas import _layer_sizes

        self._sizes = lambda arch: _layer_sizes(space, arch)

    def evaluate_many(self, cands, workers=1):
        out = []
        for c in cands:
            sizes = self._sizes(c.arch)
            kept = sum(sizes[p] * (1.0 - s) for p, _, s in c.layers)
            work = _expand_work(c.arch, self.space.config)
            over = tuple(n for n, bad in (("flash", kept > self.flash_cap), ("sram", work > self.work_cap)) if bad)
            capacity = sum(sizes.values())
            acc = None if over else 1.0 - 1.0 / (1.0 + 1e-4 * capacity) - 0.05 * statistics.fmean(
                s for _, _, s in c.layers)
            out.append(Evaluation(candidate=c, accuracy=acc, measurement=_measurement(int(work), over), macs=0))
        return out


def test_sparsenas_beats_random_at_equal_budget_when_limits_bind(space):
    rng = random.Random(123)
    from tuskml.plugins.tinyformer.sparsenas import _layer_sizes

    samples = [random_candidate(space, rng, BLOCKS, SPARSITIES) for _ in range(60)]
    kept = sorted(sum(_layer_sizes(space, c.arch)[p] * (1 - s) for p, _, s in c.layers) for c in samples)
    work = sorted(_expand_work(c.arch, space.config) for c in samples)
    ev = _SyntheticEvaluator(space, flash_cap=kept[len(kept) // 3], work_cap=work[len(work) // 2])
    sn_best, rnd_best, sn_fit, rnd_fit = [], [], [], []
    for seed in range(3):
        sn = tuskml.create("search_strategies", "sparsenas", population=8, generations=4, seed=seed).run(space, ev)
        rnd = tuskml.create("search_strategies", "random", budget=sn.evaluations, seed=100 + seed).run(space, ev)
        assert sn.evaluations == rnd.evaluations == 40
        sn_best.append(sn.best.accuracy)
        rnd_best.append(rnd.best.accuracy)
        sn_fit.append(sum(h["fits"] for h in sn.history))
        rnd_fit.append(sum(h["fits"] for h in rnd.history))
    assert statistics.fmean(rnd_fit) < 0.35 * 40  # the limits bind for random sampling
    assert statistics.fmean(sn_fit) > statistics.fmean(rnd_fit)
    assert statistics.fmean(sn_best) > statistics.fmean(rnd_best)
