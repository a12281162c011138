"""The whole ``tuskml tinyformer search`` run: SuperNAS -> supernet training -> SparseNAS -> masked
fine-tuning -> deployment on the emulated target, with ``result.json`` in the run folder.

Files in ``out_dir``: ``supernas.json`` + ``supernas_flops_cdf.png`` (chosen space),
``supernet.safetensors`` (resumable), ``sparsenas.json`` + ``sparsenas_pareto.png`` (and
``random.json`` / ``comparison_pareto.png`` with ``compare_random``), ``model.safetensors`` (the
fine-tuned sparse subnet's state dict), ``deploy/`` (generated C, ELF) and ``result.json``.
Every stage is deterministic given ``seed``; an interrupted run resumes supernet training from its
checkpoint.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import attrs
import torch

from tuskml.core.errors import TuskmlError


class SearchRunError(TuskmlError):
    """Bad arguments to the search run (names the option)."""


@attrs.frozen(kw_only=True)
class SearchRunOptions:
    """Budgets and choices of one run; the CLI flags map onto these one to one."""

    dataset: str = "digits"
    target: str = "stm32f746"
    out_dir: str = "runs/nas"
    flash_bytes: int | None = None  # tighter than the target's, e.g. 256 KiB
    sram_bytes: int | None = None
    max_instructions: int = 0
    space_overrides: dict[str, Any] = attrs.Factory(dict)
    dataset_overrides: dict[str, Any] = attrs.Factory(dict)
    val_fraction: float = 0.2
    supernas_samples: int = 16
    supernet_steps: int = 100
    batch_size: int = 64
    lr: float = 3e-3
    rule: str = "sandwich"
    population: int = 8
    generations: int = 2
    compare_random: bool = False
    finetune_steps: int = 100
    # raise every searched layer's block sparsity to at least this during fine-tuning (gradually,
    # finetune.pruning_schedule); 0 = deploy the sparsity SparseNAS found
    min_sparsity: float = 0.0
    device_samples: int = 0  # 0 = the whole test set
    device_chunk: int = 32
    deploy: bool = True
    workers: int = 1
    seed: int = 0
    progress: bool = True


def _log(opts: SearchRunOptions, msg: str) -> None:
    if opts.progress:
        print(f"[tinyformer search] {msg}", flush=True)


def _split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * fraction)))
    return perm[n_val:], perm[:n_val]


def run_search(opts: SearchRunOptions) -> dict[str, Any]:
    """Run every stage and write ``result.json``; returns its content."""
    import tuskml
    from tuskml.core.checkpoint import save_tensors
    from tuskml.plugins.tinyformer.arch import restrict
    from tuskml.plugins.tinyformer.candidates import SparseCandidate
    from tuskml.plugins.tinyformer.configs import TinyformerHybridConfig
    from tuskml.plugins.tinyformer.datasets import train_test
    from tuskml.plugins.tinyformer.evaluator import CandidateEvaluator, accuracy, recalibrate_bn
    from tuskml.plugins.tinyformer.finetune import FinetuneOptions, finetune, sparsity_masks
    from tuskml.plugins.tinyformer.hardware_fit import measure, target_limits
    from tuskml.plugins.tinyformer.pareto import plot_fronts, write_json_atomic
    from tuskml.plugins.tinyformer.supernet import TinyformerHybridSpace
    from tuskml.plugins.tinyformer.train_supernet import SupernetTrainingOptions, train_supernet

    if not 0.0 < opts.val_fraction < 1.0:
        raise SearchRunError(f"val_fraction must be in (0, 1), got {opts.val_fraction}")
    if not 0.0 <= opts.min_sparsity < 1.0:
        raise SearchRunError(f"min_sparsity must be in [0, 1), got {opts.min_sparsity}")
    t0 = time.time()
    torch.manual_seed(opts.seed)
    out = pathlib.Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    limits = target_limits(opts.target, flash_bytes=opts.flash_bytes, sram_bytes=opts.sram_bytes,
                           max_instructions=opts.max_instructions)

    # --- data and space -------------------------------------------------------------------------
    space_cfg = tuskml.resolve_config("search_spaces", "tinyformer-hybrid", **opts.space_overrides)[1]
    assert isinstance(space_cfg, TinyformerHybridConfig)
    data_overrides = dict(opts.dataset_overrides)
    if opts.dataset != "cifar10" and "resolution" not in data_overrides:
        data_overrides["resolution"] = max(space_cfg.resolutions)
    train_all, test = train_test(opts.dataset, **data_overrides)
    space_cfg = attrs.evolve(space_cfg, in_channels=train_all.in_channels, num_classes=train_all.num_classes)
    tr_idx, val_idx = _split(len(train_all), opts.val_fraction, opts.seed)
    train, val = train_all.subset(tr_idx, "train"), train_all.subset(val_idx, "val")
    _log(opts, f"{opts.dataset}: {len(train)} train / {len(val)} val / {len(test)} test images; target "
               f"{limits.name} flash {limits.flash_bytes} B, SRAM {limits.sram_bytes} B")

    def evaluator_for(space: TinyformerHybridSpace) -> CandidateEvaluator:
        return CandidateEvaluator(space, train.images, val.images, val.labels, limits, seed=opts.seed)

    # --- SuperNAS -------------------------------------------------------------------------------
    full_space = TinyformerHybridSpace(space_cfg)
    supernas = tuskml.create("search_strategies", "supernas", samples_per_space=opts.supernas_samples, seed=opts.seed)
    snas = supernas.run(full_space, evaluator_for(full_space), out, workers=opts.workers)
    write_json_atomic(out / "supernas.json", snas.to_dict())
    _log(opts, f"SuperNAS chose space {snas.chosen.label} ({time.time() - t0:.0f} s)")

    # --- supernet training ----------------------------------------------------------------------
    chosen_cfg = restrict(space_cfg, snas.chosen)
    space = TinyformerHybridSpace(chosen_cfg)
    train_opts = SupernetTrainingOptions(steps=opts.supernet_steps, batch_size=opts.batch_size, lr=opts.lr,
                                         rule=opts.rule, seed=opts.seed, checkpoint=str(out / "supernet.safetensors"),
                                         checkpoint_every=max(10, opts.supernet_steps // 5))
    log = train_supernet(space, train, train_opts, progress=opts.progress)
    _log(opts, f"supernet trained {log.steps} steps (resumed from {log.resumed_from}), final loss "
               f"{log.losses[-1] if log.losses else float('nan'):.3f} ({time.time() - t0:.0f} s)")

    # --- SparseNAS (and the random baseline) ----------------------------------------------------
    evaluator = evaluator_for(space)
    sparsenas = tuskml.create("search_strategies", "sparsenas", population=opts.population,
                              generations=opts.generations, seed=opts.seed)
    sres = sparsenas.run(space, evaluator, out, workers=opts.workers, progress=opts.progress)
    results = {"sparsenas": sres}
    if opts.compare_random:
        rnd = tuskml.create("search_strategies", "random", budget=sres.evaluations, seed=opts.seed + 1)
        results["random"] = rnd.run(space, evaluator, out, workers=opts.workers, progress=opts.progress)
        plot_fronts(results, out / "comparison_pareto.png", title=f"SparseNAS vs random ({sres.evaluations} evaluations each)")
    best = sres.best
    assert best is not None
    _log(opts, f"SparseNAS best: val acc {best.accuracy:.4f}, {best.measurement.instructions:,} est. instructions, "
               f"{best.measurement.flash_bytes:,} B flash ({time.time() - t0:.0f} s)")

    # --- fine-tune with the found masks ---------------------------------------------------------
    searched = best.candidate
    model = evaluator.build(searched)  # extracted, block-pruned, BN recalibrated
    masks = sparsity_masks(model, [p for p, _, s in searched.layers if s > 0])
    cand = searched
    final_sparsity = None
    if opts.min_sparsity > 0:
        cand = SparseCandidate(arch=searched.arch,
                               layers=tuple((p, b, max(s, opts.min_sparsity)) for p, b, s in searched.layers))
        final_sparsity = cand.sparsity
    teacher = space.extract(space.largest())
    recalibrate_bn(teacher, train.resized(space.largest().resolution)[:512], 4)
    res = cand.arch.resolution
    acc_before = accuracy(model, val.resized(res), val.labels)
    ft_losses = finetune(model, train, res, FinetuneOptions(steps=opts.finetune_steps, batch_size=opts.batch_size,
                                                              seed=opts.seed), masks, teacher=teacher,
                         progress=opts.progress, final_sparsity=final_sparsity, blocks=cand.blocks) \
        if opts.finetune_steps or final_sparsity else []
    recalibrate_bn(model, train.resized(res)[:512], 4)
    val_after = accuracy(model, val.resized(res), val.labels)
    float_acc = accuracy(model, test.resized(res), test.labels)
    save_tensors({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors",
                        metadata={"arch": json.dumps(cand.arch.to_dict()), "layers": json.dumps(cand.to_dict()["layers"])})
    _log(opts, f"fine-tuned: val {acc_before:.4f} -> {val_after:.4f}; float test accuracy {float_acc:.4f}")

    calib = train.resized(res)[:128]
    final_m, _ = measure(model, calib, limits, sparsity=cand.sparsity, blocks=cand.blocks)

    # --- deploy on the emulated target ----------------------------------------------------------
    device: dict[str, Any] | None = None
    dense_device: dict[str, Any] | None = None
    if opts.deploy:
        from tuskml.plugins.tinyformer.device_eval import run_on_device

        n = len(test) if opts.device_samples <= 0 else min(opts.device_samples, len(test))
        rep = run_on_device(model, calib, test.resized(res)[:n], test.labels[:n], opts.target, out / "deploy",
                            sparsity=cand.sparsity, blocks=cand.blocks, chunk=opts.device_chunk)
        device = rep.to_dict()
        dense = run_on_device(model, calib, test.resized(res)[:1], test.labels[:1], opts.target, out / "deploy_dense",
                              sparsity=cand.sparsity, blocks=cand.blocks, chunk=1, force_format="dense")
        dense_device = {"instructions": dense.instructions, "flash_bytes": dense.flash_bytes,
                        "bit_exact": dense.bit_exact}
        _log(opts, f"device ({rep.emulator}, {rep.toolchain}): accuracy {rep.device_accuracy:.4f} on {n} test images, "
                   f"bit-exact {rep.bit_exact}, {rep.instructions:,} instructions (dense {dense.instructions:,}), "
                   f"flash {rep.flash_bytes:,} B, SRAM {rep.sram_bytes:,} B")

    result = {
        "dataset": opts.dataset, "target": limits.to_dict(), "space": snas.chosen.label,
        "arch": cand.arch.to_dict(), "arch_summary": cand.arch.short(),
        "sparsity": {p: {"block": b, "sparsity": s} for p, b, s in cand.layers},
        "searched_sparsity": {p: {"block": b, "sparsity": s} for p, b, s in searched.layers},
        "min_sparsity": opts.min_sparsity,
        "float_accuracy": float_acc,
        "device_accuracy": device["device_accuracy"] if device else None,
        "bit_exact": device["bit_exact"] if device else None,
        "flash_bytes": device["flash_bytes"] if device else final_m.flash_bytes,
        "sram_bytes": device["sram_bytes"] if device else final_m.sram_bytes,
        "instructions": device["instructions"] if device else final_m.instructions,
        "dense_instructions": dense_device["instructions"] if dense_device else final_m.dense_instructions,
        "estimated": final_m.to_dict(),
        "device": device, "dense_device": dense_device,
        "search_val_accuracy": best.accuracy, "finetune": {"val_before": acc_before, "val_after": val_after,
                                                           "steps": opts.finetune_steps,
                                                           "final_loss": ft_losses[-1] if ft_losses else None},
        "supernet": {"steps": log.steps, "rule": opts.rule, "final_loss": log.losses[-1] if log.losses else None},
        "history": {"supernas": snas.to_dict(), "sparsenas": sres.history,
                    **({"random": results["random"].history} if "random" in results else {})},
        "comparison": {k: {"best_accuracy": r.best.accuracy if r.best else None,
                           "best_instructions": r.best.measurement.instructions if r.best else None,
                           "best_flash_bytes": r.best.measurement.flash_bytes if r.best else None,
                           "evaluations": r.evaluations} for k, r in results.items()},
        "wall_seconds": time.time() - t0,
        "options": attrs.asdict(opts),
    }
    write_json_atomic(out / "result.json", result)
    _log(opts, f"done in {result['wall_seconds']:.0f} s: {out / 'result.json'}")
    return result
