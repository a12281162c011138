"""``supernas``: pick the coarse search space (width multiplier x resolution) under the target's limits.

The TinyNAS rule (MCUNet): for each candidate space sample ``m`` subnets, keep those that fit the
target (SparseEngine's memory planner for SRAM, its footprint for flash, dense int8 weights), and
compare the FLOPs of the survivors. A space whose fitting subnets have more computation tends to give
more accurate models, so the space with the highest mean (or median) FLOPs wins. Spaces where fewer
than ``min_fit_fraction`` of the samples fit are not chosen. The FLOPs CDFs go to a PNG.
"""

from __future__ import annotations

import pathlib
import random
import statistics
from typing import Any

import attrs

from tuskml.core.errors import TuskmlError
from tuskml.plugins.tinyformer.arch import CandidateSpace, HybridArch
from tuskml.plugins.tinyformer.configs import SuperNASConfig


class NoFeasibleSpaceError(TuskmlError):
    """No candidate space has subnets that fit the target."""


@attrs.frozen(kw_only=True)
class SpaceReport:
    candidate: CandidateSpace
    sampled: int
    fitting_macs: list[int]
    all_macs: list[int]
    reasons: list[str]

    @property
    def fit_fraction(self) -> float:
        return len(self.fitting_macs) / max(1, self.sampled)

    def to_dict(self) -> dict[str, Any]:
        stats = {"mean_macs": statistics.fmean(self.fitting_macs) if self.fitting_macs else 0.0,
                 "median_macs": statistics.median(self.fitting_macs) if self.fitting_macs else 0.0}
        return {"space": self.candidate.label, "width_mult": self.candidate.width_mult,
                "resolution": self.candidate.resolution, "sampled": self.sampled,
                "fit_fraction": self.fit_fraction, **stats, "fitting_macs": self.fitting_macs,
                "first_reasons": self.reasons[:3]}


@attrs.frozen(kw_only=True)
class SuperNASResult:
    chosen: CandidateSpace
    reports: list[SpaceReport]
    plot: pathlib.Path | None

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen.label, "width_mult": self.chosen.width_mult, "resolution": self.chosen.resolution,
                "spaces": [r.to_dict() for r in self.reports], "plot": str(self.plot) if self.plot else None}


class SuperNAS:
    """The registered ``supernas`` strategy; ``run(space, evaluator, out_dir)``."""

    def __init__(self, config: SuperNASConfig | None = None):
        self.config = config or SuperNASConfig()

    def _score(self, report: SpaceReport) -> float:
        if not report.fitting_macs or report.fit_fraction < self.config.min_fit_fraction:
            return float("-inf")
        if self.config.statistic == "median":
            return float(statistics.median(report.fitting_macs))
        return statistics.fmean(report.fitting_macs)

    def run(self, space: Any, evaluator: Any, out_dir: str | pathlib.Path | None = None,
            workers: int = 1) -> SuperNASResult:
        rng = random.Random(self.config.seed)
        candidates = space.candidate_spaces()
        archs: list[tuple[CandidateSpace, HybridArch]] = []
        for cand in candidates:
            archs += [(cand, space.sample(rng, cand)) for _ in range(self.config.samples_per_space)]
        measured = evaluator.measure_archs([a for _, a in archs], workers=workers)
        reports = []
        for cand in candidates:
            rows = [(m, macs) for (c, _), (m, macs) in zip(archs, measured) if c == cand]
            reports.append(SpaceReport(candidate=cand, sampled=len(rows),
                                       fitting_macs=sorted(macs for m, macs in rows if m.fits),
                                       all_macs=sorted(macs for _, macs in rows),
                                       reasons=[m.reason for m, _ in rows if m.reason]))
        scored = [(self._score(r), r) for r in reports]
        best_score, best = max(scored, key=lambda t: (t[0], t[1].candidate.width_mult, t[1].candidate.resolution))
        if best_score == float("-inf"):
            detail = "; ".join(f"{r.candidate.label}: {r.reasons[0] if r.reasons else 'no samples'}" for r in reports[:4])
            raise NoFeasibleSpaceError(
                f"no candidate space has at least {self.config.min_fit_fraction:.0%} of {self.config.samples_per_space} "
                f"sampled subnets fitting target {evaluator.limits.name!r} (flash {evaluator.limits.flash_bytes} B, "
                f"SRAM {evaluator.limits.sram_bytes} B). Examples: {detail}")
        plot = plot_cdfs(reports, best.candidate, pathlib.Path(out_dir) / "supernas_flops_cdf.png") if out_dir else None
        return SuperNASResult(chosen=best.candidate, reports=reports, plot=plot)


def plot_cdfs(reports: list[SpaceReport], chosen: CandidateSpace, path: pathlib.Path) -> pathlib.Path:
    """Empirical CDF of MACs of the fitting subnets, one line per candidate space."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for r in reports:
        if not r.fitting_macs:
            continue
        xs = [m / 1e6 for m in r.fitting_macs]
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        style = "-" if r.candidate == chosen else "--"
        ax.step(xs, ys, style, where="post", lw=2.2 if r.candidate == chosen else 1.0,
                label=f"{r.candidate.label} (fit {r.fit_fraction:.0%})")
    ax.set_xlabel("MMACs of subnets that fit the target")
    ax.set_ylabel("CDF")
    ax.set_title(f"SuperNAS: FLOPs distribution per space (chosen {chosen.label})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
