"""``sparsenas``: evolutionary search over architecture x per-layer block size x per-layer sparsity.

Inside the supernet chosen by SuperNAS (weights already trained), candidates
(:class:`~.candidates.SparseCandidate`) are scored by :class:`~.evaluator.CandidateEvaluator`:
the engine measures flash (encoded sparse size), SRAM (its planner) and instructions (its cost
model), and only a candidate that fits gets an accuracy (inherited weights, block pruning, BN
recalibration). Every scored candidate, fitting or not, counts against the budget
``population * (generations + 1)``, so ``random`` can be given exactly the same budget.

The search is a small multi-objective evolution (accuracy up, instructions down):

- generation 0 is ``population`` random candidates; only those that fit enter the population;
- every later generation first *repairs* the candidates of the previous generation that did not fit
  (at most half of its slots): the measurement says which limit failed, and the repair moves the
  candidate towards it - flash: raise the sparsity of the largest prunable layers one level;
  SRAM: lower the expansion of the MBConv block with the largest activations; instructions: lower
  the expansion or kernel of the most expensive MBConv block (or drop a block);
- the other slots are children of parents chosen by binary tournament on (Pareto rank of
  accuracy vs instructions, accuracy): a fraction ``mutation_fraction`` mutations (each choice
  resampled with ``mutation_prob``), the rest uniform crossovers; a child already scored is mutated
  again rather than scored twice;
- survivors (elitism): the population and the fitting children ranked by (Pareto rank, accuracy),
  best ``population`` kept, so the accuracy/instructions front found so far is never lost.
"""

from __future__ import annotations

import pathlib
import random
from typing import Any

import attrs

from tuskml.core.errors import TuskmlError
from tuskml.plugins.tinyformer.arch import HybridArch, canonical, crossover_arch, mutate_arch
from tuskml.plugins.tinyformer.candidates import (
    SparseCandidate,
    crossover_plan,
    prunable_paths,
    random_plan,
    rebuild_plan,
)
from tuskml.plugins.tinyformer.configs import SparseNASConfig
from tuskml.plugins.tinyformer.evaluator import Evaluation
from tuskml.plugins.tinyformer.pareto import SearchResult, best_of, pareto_front


class NoFeasibleCandidateError(TuskmlError):
    """No sampled candidate fits the target."""


def random_candidate(space: Any, rng: random.Random, block_sizes: tuple[int, ...],
                     sparsities: tuple[float, ...]) -> SparseCandidate:
    arch = space.sample(rng)
    return SparseCandidate(arch=arch, layers=random_plan(prunable_paths(space, arch), rng, block_sizes, sparsities))


def _history_row(e: Evaluation, index: int, generation: int, origin: str) -> dict[str, Any]:
    return {"index": index, "generation": generation, "origin": origin, "summary": e.candidate.arch.short(),
            **e.to_dict()}


def pareto_ranks(evals: list[Evaluation]) -> list[int]:
    """Non-dominated sorting on (accuracy up, instructions down): 0 for the front, 1 for the next ..."""
    keys = [(e.accuracy or 0.0, -e.measurement.instructions) for e in evals]
    ranks = [-1] * len(evals)
    remaining = set(range(len(evals)))
    rank = 0
    while remaining:
        front = {i for i in remaining
                 if not any(keys[j][0] >= keys[i][0] and keys[j][1] >= keys[i][1] and keys[j] != keys[i]
                            for j in remaining)}
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return ranks


def _ranked(evals: list[Evaluation]) -> list[Evaluation]:
    ranks = pareto_ranks(evals)
    order = sorted(range(len(evals)), key=lambda i: (ranks[i], -(evals[i].accuracy or 0.0),
                                                     evals[i].measurement.instructions))
    return [evals[i] for i in order]


def _tournament(population: list[Evaluation], ranks: list[int], rng: random.Random) -> SparseCandidate:
    """Binary tournament: the lower Pareto rank wins, then the higher accuracy."""
    i, j = rng.randrange(len(population)), rng.randrange(len(population))
    ki = (ranks[i], -(population[i].accuracy or 0.0))
    kj = (ranks[j], -(population[j].accuracy or 0.0))
    return population[i if ki <= kj else j].candidate


# --- repair ----------------------------------------------------------------------------------------

def _layer_sizes(space: Any, arch: HybridArch) -> dict[str, int]:
    """Weight count of each prunable layer of ``arch`` (cached on the space, per arch)."""
    from tuskml.backends.sparse_engine.pruning import prunable_layers

    cache = space.__dict__.setdefault("_prunable_sizes_cache", {})
    if arch not in cache:
        cache[arch] = {p: int(w.numel()) for p, w in prunable_layers(space.extract(arch)).items()}
    return cache[arch]


def _mbconv_blocks(arch: HybridArch, cfg: Any) -> list[tuple[int, int, int]]:
    """(stage, block, output pixels) of every MBConv block in use."""
    out, stride = [], 2  # the stem halves the resolution
    for s in range(arch.num_stages):
        stride *= cfg.stage_strides[s]
        side = max(1, arch.resolution // stride)
        out += [(s, b, side * side) for b in range(arch.mbconv_depth(s))]
    return out


def _lower(value: float, choices: tuple[Any, ...]) -> Any:
    """The next smaller choice, or None at the bottom."""
    return max((c for c in choices if c < value), default=None)


def _higher(value: float, choices: tuple[Any, ...]) -> Any:
    """The next larger choice (a sparsity: fewer weights kept), or None at the top."""
    return min((c for c in choices if c > value), default=None)


def shrink_arch(arch: HybridArch, cfg: Any, rng: random.Random, *, kernel_matters: bool) -> HybridArch | None:
    """A one-step smaller arch: the MBConv block with the largest (expand x pixels [x kernel^2]) gets a
    smaller expansion (or kernel, when instructions are the problem); failing that, a stage loses a
    block, then a transformer stage gets a smaller embedding. None if nothing can shrink."""
    scored = []
    for s, b, pixels in _mbconv_blocks(arch, cfg):
        k, e = arch.kernels[s][b], arch.expands[s][b]
        score = e * pixels * (k * k if kernel_matters else 1) * (1.0 + 0.01 * rng.random())
        scored.append((score, s, b))
    for _, s, b in sorted(scored, reverse=True):
        e = _lower(arch.expands[s][b], cfg.expand_choices)
        k = _lower(arch.kernels[s][b], cfg.kernel_choices) if kernel_matters else None
        if e is None and k is None:
            continue
        use_kernel = k is not None and (e is None or rng.random() < 0.5)
        rows = [list(r) for r in (arch.kernels if use_kernel else arch.expands)]
        rows[s][b] = k if use_kernel else e
        field = "kernels" if use_kernel else "expands"
        return canonical(attrs.evolve(arch, **{field: tuple(tuple(r) for r in rows)}), cfg)
    for s in sorted(range(arch.num_stages), key=lambda s: -arch.depths[s]):
        d = _lower(arch.depths[s], cfg.depth_choices)
        if not arch.is_vit_stage(s) and d is not None:
            depths = list(arch.depths)
            depths[s] = d
            return canonical(attrs.evolve(arch, depths=tuple(depths)), cfg)
    for s in range(arch.num_stages):
        emb = _lower(arch.embed_dims[s], cfg.embed_dims) if arch.is_vit_stage(s) else None
        if emb is not None:
            heads = max((h for h in cfg.head_choices if emb % h == 0 and h <= arch.heads[s]),
                        default=min(cfg.head_choices))
            embeds, hs = list(arch.embed_dims), list(arch.heads)
            embeds[s], hs[s] = emb, heads
            return canonical(attrs.evolve(arch, embed_dims=tuple(embeds), heads=tuple(hs)), cfg)
    return None


def repair(space: Any, e: Evaluation, rng: random.Random, sparsities: tuple[float, ...],
           block_sizes: tuple[int, ...]) -> SparseCandidate | None:
    """A candidate moved towards the limits ``e`` broke (see the module docstring); None if stuck."""
    cand, m = e.candidate, e.measurement
    over = m.over or ()
    arch = cand.arch
    plan = {p: (b, s) for p, b, s in cand.layers}
    if "flash" in over:
        sizes = _layer_sizes(space, arch)
        # the largest layers that can still be pruned further, by the weights they keep
        movable = sorted((p for p in plan if _higher(plan[p][1], sparsities) is not None),
                         key=lambda p: -sizes.get(p, 0) * (1.0 - plan[p][1]))
        for p in movable[:3]:
            plan[p] = (plan[p][0], _higher(plan[p][1], sparsities))
        if not movable:
            arch = shrink_arch(arch, space.config, rng, kernel_matters=False) or arch
    if "sram" in over:
        arch = shrink_arch(arch, space.config, rng, kernel_matters=False) or arch
    if "instructions" in over:
        arch = shrink_arch(arch, space.config, rng, kernel_matters=True) or arch
    old = tuple((p, b, s) for p, (b, s) in plan.items())
    fixed = SparseCandidate(arch=arch, layers=rebuild_plan(prunable_paths(space, arch), old, rng, block_sizes,
                                                           sparsities))
    return None if fixed == cand else fixed


class SparseNAS:
    """The registered ``sparsenas`` strategy; ``run(space, evaluator, out_dir)``."""

    def __init__(self, config: SparseNASConfig | None = None):
        self.config = config or SparseNASConfig()

    @property
    def budget(self) -> int:
        return self.config.population * (self.config.generations + 1)

    def _mutate(self, space: Any, parent: SparseCandidate, rng: random.Random) -> SparseCandidate:
        c = self.config
        arch = mutate_arch(parent.arch, space.config, rng, c.mutation_prob)
        layers = rebuild_plan(prunable_paths(space, arch), parent.layers, rng, c.block_sizes, c.sparsities,
                              prob=c.mutation_prob)
        return SparseCandidate(arch=arch, layers=layers)

    def _crossover(self, space: Any, a: SparseCandidate, b: SparseCandidate, rng: random.Random) -> SparseCandidate:
        arch = crossover_arch(a.arch, b.arch, space.config, rng)
        layers = crossover_plan(prunable_paths(space, arch), a.layers, b.layers, rng, self.config.block_sizes,
                                self.config.sparsities)
        return SparseCandidate(arch=arch, layers=layers)

    def run(self, space: Any, evaluator: Any, out_dir: str | pathlib.Path | None = None, workers: int = 1,
            progress: bool = False) -> SearchResult:
        c = self.config
        rng = random.Random(c.seed)
        history: list[dict[str, Any]] = []
        seen: set[SparseCandidate] = set()
        all_evals: list[Evaluation] = []
        used = 0

        def evaluate(cands: list[tuple[SparseCandidate, str]], generation: int) -> list[Evaluation]:
            nonlocal used
            fresh: dict[SparseCandidate, str] = {}
            for cand, origin in cands:
                if cand not in seen and cand not in fresh and len(fresh) < self.budget - used:
                    fresh[cand] = origin
            results = evaluator.evaluate_many(list(fresh), workers=workers)
            for e in results:
                seen.add(e.candidate)
                all_evals.append(e)
                history.append(_history_row(e, len(history), generation, fresh[e.candidate]))
            used += len(fresh)
            if progress:
                fit = [e.accuracy for e in results if e.fits]
                print(f"[sparsenas] generation {generation}: {len(results)} evaluated, {len(fit)} fit, "
                      f"best {max(fit) if fit else float('nan'):.4f}", flush=True)
            return results

        def unseen(cand: SparseCandidate, tries: int = 6) -> SparseCandidate:
            for _ in range(tries):
                if cand not in seen:
                    break
                cand = self._mutate(space, cand, rng)
            return cand

        last = evaluate([(random_candidate(space, rng, c.block_sizes, c.sparsities), "random")
                         for _ in range(c.population)], 0)
        population = _ranked([e for e in last if e.fits])[:c.population]
        generation = 0
        while used < self.budget:
            generation += 1
            slots = min(c.population, self.budget - used)
            children: list[tuple[SparseCandidate, str]] = []
            for e in [e for e in last if not e.fits][:max(1, slots // 2) if population else slots]:
                fixed = repair(space, e, rng, c.sparsities, c.block_sizes)
                if fixed is not None and fixed not in seen:
                    children.append((fixed, "repair"))
            if population:
                ranks = pareto_ranks(population)
                while len(children) < slots:
                    a = _tournament(population, ranks, rng)
                    if rng.random() < c.mutation_fraction or len(population) < 2:
                        children.append((unseen(self._mutate(space, a, rng)), "mutation"))
                    else:
                        b = _tournament(population, ranks, rng)
                        children.append((unseen(self._crossover(space, a, b, rng)), "crossover"))
            while len(children) < slots:  # nothing fits yet: keep sampling (and repairing next time)
                children.append((random_candidate(space, rng, c.block_sizes, c.sparsities), "random"))
            before = used
            last = evaluate(children, generation)
            population = _ranked(population + [e for e in last if e.fits])[:c.population]
            if used == before:  # every child was a duplicate: draw fresh randoms to keep exploring
                last = evaluate([(random_candidate(space, rng, c.block_sizes, c.sparsities), "random")
                                 for _ in range(slots)], generation)
                population = _ranked(population + [e for e in last if e.fits])[:c.population]
                if used == before:
                    break
        if best_of(all_evals) is None:
            raise NoFeasibleCandidateError(
                f"none of {used} candidates fits target {evaluator.limits.name!r}; first reason: "
                f"{next((h['reason'] for h in history if h.get('reason')), '?')}")
        result = SearchResult(strategy="sparsenas", best=best_of(all_evals), front=pareto_front(all_evals),
                              history=history, evaluations=used, limits=evaluator.limits.to_dict())
        if out_dir is not None:
            result.write(out_dir)
        return result
