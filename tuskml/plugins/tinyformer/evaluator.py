"""Score candidates with inherited weights: block pruning, BN recalibration, accuracy, hardware fit.

For one :class:`~.candidates.SparseCandidate`: extract the subnet from the trained supernet, prune
its layers' ``1 x B`` blocks by magnitude (SparseEngine's ``block_prune``), measure it with the
engine (:mod:`.hardware_fit`); only if it fits, recalibrate the BatchNorm statistics on a few
training batches (the supernet's running statistics belong to no particular subnet) and measure
validation accuracy. Evaluations can run in a process pool (``workers > 1``, spawn start method so
OpenMP state is never forked); each worker receives the evaluator once.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from typing import Any

import attrs
import torch
from torch import nn

from tuskml.plugins.tinyformer.arch import HybridArch
from tuskml.plugins.tinyformer.candidates import SparseCandidate
from tuskml.plugins.tinyformer.hardware_fit import Measurement, TargetLimits, measure
from tuskml.plugins.tinyformer.supernet import TinyformerHybridSpace, count_macs


@attrs.frozen(kw_only=True)
class Evaluation:
    candidate: SparseCandidate
    accuracy: float | None  # None when it does not fit (never trained on)
    measurement: Measurement
    macs: int

    @property
    def fits(self) -> bool:
        return self.measurement.fits

    def to_dict(self) -> dict[str, Any]:
        return {**self.candidate.to_dict(), "accuracy": self.accuracy, "macs": self.macs, **self.measurement.to_dict()}


def recalibrate_bn(model: nn.Module, images: torch.Tensor, batches: int, batch_size: int = 128) -> None:
    """Reset BatchNorm running statistics and re-estimate them (cumulative average) on ``images``."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(batches):
            chunk = images[i * batch_size:(i + 1) * batch_size]
            if len(chunk) == 0:
                break
            model(chunk)
    for m in bns:
        m.momentum = 0.1
    model.eval()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            correct += int((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
    return correct / max(1, len(images))


class CandidateEvaluator:
    """Holds what scoring needs: the trained supernet, train/val tensors, the target limits."""

    def __init__(self, space: TinyformerHybridSpace, train_images: torch.Tensor, val_images: torch.Tensor,
                 val_labels: torch.Tensor, limits: TargetLimits, *, recalibration_batches: int = 4,
                 calibration_size: int = 32, seed: int = 0):
        self.space = space.eval()
        g = torch.Generator().manual_seed(seed)
        self.train_images = train_images[torch.randperm(len(train_images), generator=g)]
        self.val_images = val_images
        self.val_labels = val_labels
        self.limits = limits
        self.recalibration_batches = recalibration_batches
        self.calibration_size = calibration_size
        self._cache: dict[SparseCandidate, Evaluation] = {}

    def _resize(self, x: torch.Tensor, resolution: int) -> torch.Tensor:
        if x.shape[-1] == resolution:
            return x
        return torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)

    def build(self, candidate: SparseCandidate) -> nn.Module:
        """The pruned, BN-recalibrated subnet of ``candidate`` with inherited weights."""
        from tuskml.backends.sparse_engine.pruning import block_prune

        net = self.space.extract(candidate.arch)
        if candidate.layers:
            block_prune(net, candidate.sparsity, candidate.blocks)
        recalibrate_bn(net, self._resize(self.train_images[:self.recalibration_batches * 128], candidate.arch.resolution),
                       self.recalibration_batches)
        return net

    def measure_arch(self, arch: HybridArch) -> tuple[Measurement, int]:
        """Dense engine measurement and MACs of ``arch`` (what SuperNAS needs; weights do not matter)."""
        net = self.space.extract(arch)
        calib = self._resize(self.train_images[:self.calibration_size], arch.resolution)
        m, _ = measure(net, calib, self.limits)
        return m, count_macs(net)

    def evaluate(self, candidate: SparseCandidate) -> Evaluation:
        if candidate in self._cache:
            return self._cache[candidate]
        net = self.build(candidate)
        res = candidate.arch.resolution
        calib = self._resize(self.train_images[:self.calibration_size], res)
        m, _ = measure(net, calib, self.limits, sparsity=candidate.sparsity if candidate.layers else None,
                       blocks=candidate.blocks)
        acc = accuracy(net, self._resize(self.val_images, res), self.val_labels) if m.fits else None
        result = Evaluation(candidate=candidate, accuracy=acc, measurement=m, macs=count_macs(net))
        self._cache[candidate] = result
        return result

    def evaluate_many(self, candidates: list[SparseCandidate], workers: int = 1) -> list[Evaluation]:
        """Evaluate in order; with ``workers > 1`` in a spawn process pool."""
        todo = [c for c in dict.fromkeys(candidates) if c not in self._cache]
        if workers > 1 and len(todo) > 1:
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                        initargs=(self,)) as pool:
                for cand, result in zip(todo, pool.map(_worker_evaluate, todo)):
                    self._cache[cand] = result
        else:
            for cand in todo:
                self.evaluate(cand)
        return [self._cache[c] for c in candidates]

    def measure_archs(self, archs: list[HybridArch], workers: int = 1) -> list[tuple[Measurement, int]]:
        """:meth:`measure_arch` for many archs, in a spawn process pool when ``workers > 1``."""
        if workers > 1 and len(archs) > 1:
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                        initargs=(self,)) as pool:
                return list(pool.map(_worker_measure_arch, archs, chunksize=4))
        return [self.measure_arch(a) for a in archs]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state


_WORKER: CandidateEvaluator | None = None


def _worker_init(evaluator: CandidateEvaluator) -> None:
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = evaluator


def _worker_evaluate(candidate: SparseCandidate) -> Evaluation:
    assert _WORKER is not None
    return _WORKER.evaluate(candidate)


def _worker_measure_arch(arch: HybridArch) -> tuple[Measurement, int]:
    assert _WORKER is not None
    return _WORKER.measure_arch(arch)
