"""Hardware fit (SparseEngine's own numbers), SuperNAS space selection, SparseNAS and random search."""

from __future__ import annotations

import json
import random

import attrs
import pytest
import torch

import tuskml
from tuskml.plugins.tinyformer.candidates import SparseCandidate, prunable_paths
from tuskml.plugins.tinyformer.datasets import train_test
from tuskml.plugins.tinyformer.evaluator import CandidateEvaluator
from tuskml.plugins.tinyformer.hardware_fit import HardwareFitError, Measurement, measure, target_limits
from tuskml.plugins.tinyformer.pareto import dominates
from tuskml.plugins.tinyformer.supernas import NoFeasibleSpaceError


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    train, test = train_test("digits", resolution=16)
    space = tuskml.create("search_spaces", "tinyformer-hybrid", resolutions=(16,), width_mults=(0.5,),
                          depth_choices=(1, 2), transformer_depths=(1,))
    limits = target_limits("stm32f746")
    ev = CandidateEvaluator(space, train.images[:600], train.images[600:760], train.labels[600:760], limits,
                            recalibration_batches=2)
    return space, ev, train


def _all_sparse(space, arch, s=0.75, b=8):
    return SparseCandidate(arch=arch, layers=tuple((p, b, s) for p in prunable_paths(space, arch)))


def test_limits_come_from_the_target():
    lim = target_limits("stm32f746")
    assert (lim.flash_bytes, lim.sram_bytes) == (1024 * 1024, 320 * 1024)
    assert target_limits("stm32f746", sram_bytes=65536).sram_bytes == 65536
    with pytest.raises(HardwareFitError, match="host"):
        target_limits("host")


def test_measurement_uses_encoded_sparse_flash_and_the_planner(setup):
    space, ev, train = setup
    arch = space.largest()
    dense = ev.evaluate(SparseCandidate(arch=arch, layers=()))
    sparse = ev.evaluate(_all_sparse(space, arch))
    assert dense.fits and sparse.fits
    # the encoded weights are smaller; the BRL kernel's code (~14 KB, counted once) is what a sparse
    # build adds, so on a model this small the total may not shrink
    from tuskml.backends.sparse_engine.footprint import CODE_BYTES_PER_KERNEL

    assert sparse.measurement.flash_bytes - CODE_BYTES_PER_KERNEL["brl"] < dense.measurement.flash_bytes
    assert sparse.measurement.sparse_layers > 0 and dense.measurement.sparse_layers == 0
    assert sparse.measurement.instructions < sparse.measurement.dense_instructions
    assert sparse.measurement.sram_bytes == dense.measurement.sram_bytes  # activations do not change
    # the same numbers as SparseEngine's prepare() directly
    from tuskml.backends.sparse_engine.pipeline import prepare

    net = ev.build(_all_sparse(space, arch))
    dep = prepare(net, ev.train_images[:32], sparsity={p: 0.75 for p in prunable_paths(space, arch)}, block=8)
    assert dep.footprint.flash_bytes == sparse.measurement.flash_bytes
    assert dep.plan.arena_bytes == sparse.measurement.arena_bytes


def test_too_small_targets_are_reported_not_accepted(setup):
    space, ev, train = setup
    net = space.extract(space.smallest())
    tiny = target_limits("stm32f746", sram_bytes=4096, flash_bytes=8192)
    m, _ = measure(net, train.images[:8], tiny)
    assert not m.fits and "flash" in m.reason and "SRAM" in m.reason
    small_ev = CandidateEvaluator(space, train.images[:64], train.images[64:96], train.labels[64:96], tiny)
    with pytest.raises(NoFeasibleSpaceError, match="no candidate space"):
        tuskml.create("search_strategies", "supernas", samples_per_space=1).run(space, small_ev)


class _FakeEvaluator:
    """Fits iff width * resolution <= 16; MACs grow with width and resolution."""

    limits = target_limits("stm32f746")

    def measure_archs(self, archs, workers=1):
        out = []
        for a in archs:
            fits = a.width_mult * a.resolution <= 16
            m = Measurement(flash_bytes=1, sram_bytes=1, arena_bytes=1, instructions=1, dense_instructions=1,
                            sparse_layers=0, reason=None if fits else "SRAM too big")
            out.append((m, int(a.width_mult * 1000 * a.resolution + 10 * a.resolution)))
        return out


def test_supernas_picks_the_fitting_space_with_most_flops(tmp_path):
    space = tuskml.create("search_spaces", "tinyformer-hybrid", resolutions=(16, 32), width_mults=(0.5, 1.0))
    res = tuskml.create("search_strategies", "supernas", samples_per_space=3).run(space, _FakeEvaluator(), tmp_path)
    # (1.0, 32) has the most FLOPs but nothing fits; (0.5, 32) beats (1.0, 16) on FLOPs of survivors
    assert (res.chosen.width_mult, res.chosen.resolution) == (0.5, 32)
    by_label = {r.candidate.label: r for r in res.reports}
    assert by_label["w1-r32"].fit_fraction == 0.0 and by_label["w0.5-r16"].fit_fraction == 1.0
    assert res.plot.is_file() and res.plot.stat().st_size > 1000


def test_supernas_with_the_real_engine(setup, tmp_path):
    space, ev, train = setup
    res = tuskml.create("search_strategies", "supernas", samples_per_space=2).run(space, ev, tmp_path)
    assert res.chosen in space.candidate_spaces()
    assert all(r.sampled == 2 for r in res.reports)
    assert json.dumps(res.to_dict())


def test_sparsenas_and_random_under_a_binding_limit(setup, tmp_path):
    space, ev, train = setup
    # a flash limit between the smallest and the largest half-sparse subnets (BRL kernel code included)
    # makes some candidates infeasible
    small = ev.evaluate(_all_sparse(space, space.smallest(), s=0.5)).measurement.flash_bytes
    large = ev.evaluate(_all_sparse(space, space.largest(), s=0.5)).measurement.flash_bytes
    limits = attrs.evolve(ev.limits, flash_bytes=(small + large) // 2)
    tight = CandidateEvaluator(space, ev.train_images, ev.val_images, ev.val_labels, limits, recalibration_batches=2)
    res = tuskml.create("search_strategies", "sparsenas", population=3, generations=1, seed=1).run(space, tight, tmp_path)
    assert res.evaluations <= 6 and len(res.history) == res.evaluations
    assert res.best is not None and res.best.fits and res.best.measurement.flash_bytes <= limits.flash_bytes
    fitting = [h for h in res.history if h["fits"]]
    assert all(h["accuracy"] is not None for h in fitting)
    assert all(h["accuracy"] is None for h in res.history if not h["fits"])
    assert res.best.accuracy == max(h["accuracy"] for h in fitting)
    assert not any(dominates(a, b) for a in res.front for b in res.front)
    saved = json.loads((tmp_path / "sparsenas.json").read_text())
    assert saved["best"]["accuracy"] == res.best.accuracy and (tmp_path / "sparsenas_pareto.png").is_file()
    rnd = tuskml.create("search_strategies", "random", budget=res.evaluations, seed=2).run(space, tight, tmp_path)
    assert rnd.evaluations == res.evaluations and rnd.best.fits
    assert (tmp_path / "random.json").is_file()


def test_process_pool_gives_the_same_evaluations(setup):
    space, ev, train = setup
    rng = random.Random(4)
    from tuskml.plugins.tinyformer.sparsenas import random_candidate

    cands = [random_candidate(space, rng, (4, 8), (0.0, 0.5)) for _ in range(2)]
    def fresh():
        return CandidateEvaluator(space, ev.train_images, ev.val_images, ev.val_labels, ev.limits, recalibration_batches=2)

    pooled = fresh().evaluate_many(cands, workers=2)
    serial = fresh().evaluate_many(cands, workers=1)
    for a, b in zip(pooled, serial):
        assert a.measurement == b.measurement
        assert a.accuracy == pytest.approx(b.accuracy, abs=1e-9)
