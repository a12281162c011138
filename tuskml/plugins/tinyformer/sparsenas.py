"""``sparsenas``: evolutionary search over architecture x per-layer block size x per-layer sparsity.

Inside the supernet chosen by SuperNAS (weights already trained), a population of
:class:`~.candidates.SparseCandidate` evolves: the top ``parents_fraction`` by fitness survive, half of
the children are mutations (each arch choice and each layer's block size/sparsity resampled with
``mutation_prob``), half crossovers. Fitness is validation accuracy with inherited weights after
block pruning and BN recalibration (:class:`~.evaluator.CandidateEvaluator`). Every member of the
population fits the target: a child that does not fit (flash counted on the encoded sparse size,
SRAM by the engine's planner, instructions by its cost model when capped) is discarded and
redrawn. Every evaluation, fitting or not, counts against the budget, so ``random`` can be given
the same number of evaluations.
"""

from __future__ import annotations

import pathlib
import random
from typing import Any

from tuskml.core.errors import TuskmlError
from tuskml.plugins.tinyformer.arch import crossover_arch, mutate_arch
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


def _history_row(e: Evaluation, index: int, generation: int) -> dict[str, Any]:
    return {"index": index, "generation": generation, "summary": e.candidate.arch.short(), **e.to_dict()}


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

        def evaluate(cands: list[SparseCandidate], generation: int) -> list[Evaluation]:
            nonlocal used
            fresh = [x for x in dict.fromkeys(cands) if x not in seen][: self.budget - used]
            results = evaluator.evaluate_many(fresh, workers=workers)
            for e in results:
                seen.add(e.candidate)
                all_evals.append(e)
                history.append(_history_row(e, len(history), generation))
            used += len(fresh)
            if progress:
                fit = [e.accuracy for e in results if e.fits]
                print(f"[sparsenas] generation {generation}: {len(results)} evaluated, {len(fit)} fit, "
                      f"best {max(fit) if fit else float('nan'):.4f}", flush=True)
            return [e for e in results if e.fits]

        population: list[Evaluation] = evaluate(
            [random_candidate(space, rng, c.block_sizes, c.sparsities) for _ in range(c.population)], 0)
        tries = 0
        while len(population) < c.population and used < self.budget and tries < 5:
            population += evaluate([random_candidate(space, rng, c.block_sizes, c.sparsities)
                                    for _ in range(c.population - len(population))], 0)
            tries += 1
        if not population:
            raise NoFeasibleCandidateError(
                f"none of {used} random candidates fits target {evaluator.limits.name!r}; first reason: "
                f"{next((h['reason'] for h in history if h.get('reason')), '?')}")
        generation = 0
        while used < self.budget:
            generation += 1
            population.sort(key=lambda e: (e.accuracy, -e.measurement.instructions), reverse=True)
            parents = population[:max(2, int(round(c.parents_fraction * c.population)))]
            n_children = min(c.population, self.budget - used)
            n_mut = int(round(n_children * c.mutation_fraction))
            children = [self._mutate(space, rng.choice(parents).candidate, rng) for _ in range(n_mut)]
            children += [self._crossover(space, *(p.candidate for p in rng.sample(parents, 2)), rng)
                         for _ in range(n_children - n_mut)]
            before = used
            population = (population + evaluate(children, generation))
            population = sorted(population, key=lambda e: (e.accuracy, -e.measurement.instructions), reverse=True)
            population = population[:c.population]
            if used == before:  # every child was a duplicate: draw fresh randoms to keep exploring
                population += evaluate([random_candidate(space, rng, c.block_sizes, c.sparsities)], generation)
                if used == before:
                    break
        result = SearchResult(strategy="sparsenas", best=best_of(all_evals), front=pareto_front(all_evals),
                              history=history, evaluations=used, limits=evaluator.limits.to_dict())
        if out_dir is not None:
            result.write(out_dir)
        return result
