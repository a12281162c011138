"""``random``: the baseline. ``budget`` random candidates (arch x per-layer block size x sparsity),
scored exactly like ``sparsenas`` (same evaluator, same constraints); the best fitting one wins."""

from __future__ import annotations

import pathlib
import random
from typing import Any

from tuskml.plugins.tinyformer.configs import RandomSearchConfig
from tuskml.plugins.tinyformer.pareto import SearchResult, best_of, pareto_front
from tuskml.plugins.tinyformer.sparsenas import NoFeasibleCandidateError, random_candidate


class RandomSearch:
    """The registered ``random`` strategy; ``run(space, evaluator, out_dir)``."""

    def __init__(self, config: RandomSearchConfig | None = None):
        self.config = config or RandomSearchConfig()

    @property
    def budget(self) -> int:
        return self.config.budget

    def run(self, space: Any, evaluator: Any, out_dir: str | pathlib.Path | None = None, workers: int = 1,
            progress: bool = False) -> SearchResult:
        c = self.config
        rng = random.Random(c.seed)
        cands = list(dict.fromkeys(random_candidate(space, rng, c.block_sizes, c.sparsities) for _ in range(c.budget)))
        evals = evaluator.evaluate_many(cands, workers=workers)
        history = [{"index": i, "generation": 0, "summary": e.candidate.arch.short(), **e.to_dict()}
                   for i, e in enumerate(evals)]
        best = best_of(evals)
        if best is None:
            raise NoFeasibleCandidateError(
                f"none of {len(evals)} random candidates fits target {evaluator.limits.name!r}; first reason: "
                f"{next((e.measurement.reason for e in evals if e.measurement.reason), '?')}")
        if progress:
            print(f"[random] {len(evals)} evaluated, {sum(e.fits for e in evals)} fit, best {best.accuracy:.4f}", flush=True)
        result = SearchResult(strategy="random", best=best, front=pareto_front(evals), history=history,
                              evaluations=len(evals), limits=evaluator.limits.to_dict())
        if out_dir is not None:
            result.write(out_dir)
        return result
