"""Weight-sharing supernet training: single-path sampling or the sandwich rule with in-place distillation.

* ``single-path`` (SPOS): each step trains one uniformly sampled subnet on the labels.
* ``sandwich`` (BigNAS/OFA): each step trains the largest subnet on the labels, then the smallest
  and ``num_random`` random subnets; with ``distill`` they learn from the largest subnet's soft
  predictions of the same batch (in-place distillation), otherwise from the labels.

Data parallel under ``torchrun``: when ``WORLD_SIZE > 1`` a gloo process group is used; every rank
draws the same archs and the same global batch (the RNG depends only on seed and step), trains on
its own shard, and the gradients are all-reduced (averaged) once per step in one flat buffer. This is
what ``DistributedDataParallel`` does, written out because the active parameters change every
step (DDP's bucketing assumes a fixed set of used parameters). Rank 0 writes the checkpoints.

Checkpoints are safetensors files (model and AdamW state as tensors, step and options in the
metadata), written to a temporary file and renamed, so a crash never leaves a half-written file.
Resuming reproduces the uninterrupted run exactly, because batches and archs depend only on the step.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import random
from typing import Any, Literal

import attrs
import torch
import torch.distributed as dist
import torch.nn.functional as F

from tuskml.core.checkpoint import save_tensors
from tuskml.core.errors import CheckpointError, TuskmlError
from tuskml.plugins.tinyformer.arch import CandidateSpace, HybridArch, extreme_arch, sample_arch
from tuskml.plugins.tinyformer.datasets import ImageClassificationData
from tuskml.plugins.tinyformer.supernet import TinyformerHybridSpace


class TrainingError(TuskmlError):
    """Bad training options or a checkpoint that does not belong to this run."""


@attrs.frozen(kw_only=True)
class SupernetTrainingOptions:
    """How to train the supernet. ``steps`` counts optimizer steps; ``batch_size`` is the global batch."""

    steps: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    batch_size: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 10
    rule: Literal["single-path", "sandwich"] = attrs.field(
        default="sandwich", validator=attrs.validators.in_(("single-path", "sandwich")))
    num_random: int = 2
    distill: bool = True
    max_shift: int = 1  # random translation augmentation, pixels at the training resolution
    seed: int = 0
    checkpoint: str | None = None
    checkpoint_every: int = 50
    resume: bool = True


@attrs.frozen(kw_only=True)
class TrainingLog:
    steps: int
    losses: list[float]
    resumed_from: int


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed_from_env() -> bool:
    """Join the torchrun process group (gloo, CPU) when ``WORLD_SIZE > 1``; True if distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return True


def _step_rng(seed: int, step: int) -> random.Random:
    return random.Random(seed * 1_000_003 + step)


def _archs_for_step(space: TinyformerHybridSpace, opts: SupernetTrainingOptions, rng: random.Random,
                    candidate: CandidateSpace | None) -> list[tuple[HybridArch, bool]]:
    """(arch, learns from the teacher) pairs trained in this step."""
    cfg = space.config
    if opts.rule == "single-path":
        return [(sample_arch(cfg, rng, candidate), False)]
    archs = [(extreme_arch(cfg, True, candidate), False), (extreme_arch(cfg, False, candidate), opts.distill)]
    archs += [(sample_arch(cfg, rng, candidate), opts.distill) for _ in range(opts.num_random)]
    return archs


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    if max_shift <= 0:
        return x
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def _lr(opts: SupernetTrainingOptions, step: int) -> float:
    if step < opts.warmup_steps:
        return opts.lr * (step + 1) / opts.warmup_steps
    t = (step - opts.warmup_steps) / max(1, opts.steps - opts.warmup_steps)
    return opts.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _allreduce_grads(params: list[torch.nn.Parameter], world: int) -> None:
    # every rank trained the same archs, so the same parameters have gradients on every rank
    params = [p for p in params if p.grad is not None]
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


# --- checkpoints ---------------------------------------------------------------------------------


def save_checkpoint(path: str | os.PathLike[str], space: TinyformerHybridSpace, optimizer: torch.optim.Optimizer,
                    step: int, opts: SupernetTrainingOptions, losses: list[float]) -> pathlib.Path:
    """Model + AdamW state as safetensors, atomically (temp file in the same folder, then rename)."""
    from tuskml.core.config import config_to_json

    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in space.state_dict().items()}
    names = {id(p): n for n, p in space.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{names[id(p)]}.{key}"] = value.detach().reshape(value.shape).contiguous().clone()
    meta = {"tuskml.tinyformer.kind": "supernet-training", "step": str(step),
            "space_config": config_to_json(space.config), "options": json.dumps(attrs.asdict(opts)),
            "losses": json.dumps(losses)}
    return save_tensors(tensors, path, meta)


def load_checkpoint(path: str | os.PathLike[str], space: TinyformerHybridSpace,
                    optimizer: torch.optim.Optimizer | None = None) -> tuple[int, list[float]]:
    """Load weights (and optimizer state) into ``space``; return (step, losses so far)."""
    from safetensors import safe_open

    from tuskml.core.config import config_to_json

    p = pathlib.Path(path)
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:
        raise CheckpointError(f"supernet checkpoint {p} is not a readable safetensors file (truncated?): {exc}") from exc
    if meta.get("tuskml.tinyformer.kind") != "supernet-training":
        raise CheckpointError(f"{p} is not a tinyformer supernet training checkpoint")
    if meta.get("space_config") != config_to_json(space.config):
        raise CheckpointError(f"{p} was written for another search space config; use another checkpoint path "
                              f"or delete it to start fresh")
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    space.load_state_dict(model_sd)
    step = int(meta["step"])
    if optimizer is not None:
        params = dict(space.named_parameters())
        for key, value in tensors.items():
            if not key.startswith("optim."):
                continue
            name, _, field = key[len("optim."):].rpartition(".")
            state = optimizer.state[params[name]]
            state[field] = value.reshape(()) if field == "step" else value
    return step, json.loads(meta.get("losses", "[]"))


# --- the loop ------------------------------------------------------------------------------------


def train_supernet(space: TinyformerHybridSpace, data: ImageClassificationData, opts: SupernetTrainingOptions, *,
                   candidate: CandidateSpace | None = None, progress: bool = True) -> TrainingLog:
    """Train ``space`` in place on ``data``; see the module docstring for the rules and parallelism."""
    rank, world = _world()
    if opts.batch_size < world:
        raise TrainingError(f"batch_size {opts.batch_size} is smaller than the number of processes {world}")
    params = [p for p in space.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": opts.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=opts.lr)
    start, losses = 0, []
    if opts.checkpoint and opts.resume and pathlib.Path(opts.checkpoint).is_file():
        start, losses = load_checkpoint(opts.checkpoint, space, optimizer)
    if world > 1:
        for t in list(space.parameters()) + list(space.buffers()):
            dist.broadcast(t.data, 0)
    space.train()
    n = len(data)
    from tqdm.auto import tqdm

    bar = tqdm(range(start, opts.steps), initial=start, total=opts.steps, disable=not progress or rank != 0,
               desc=f"supernet ({opts.rule})", unit="step")
    for step in bar:
        rng = _step_rng(opts.seed, step)
        gen = torch.Generator().manual_seed(opts.seed * 7919 + step)
        batch = torch.randint(0, n, (opts.batch_size,), generator=gen)
        shard = batch[rank::world]
        for group in optimizer.param_groups:
            group["lr"] = _lr(opts, step)
        optimizer.zero_grad(set_to_none=True)
        teacher: dict[int, torch.Tensor] = {}
        step_loss = 0.0
        archs = _archs_for_step(space, opts, rng, candidate)
        for arch, from_teacher in archs:
            x = _shift(data.resized(arch.resolution)[shard], opts.max_shift, gen)
            y = data.labels[shard]
            logits = space(x, arch)
            if from_teacher and arch.resolution in teacher:
                soft = F.softmax(teacher[arch.resolution], dim=-1)
                loss = F.kl_div(F.log_softmax(logits, dim=-1), soft, reduction="batchmean")
            else:
                loss = F.cross_entropy(logits, y)
                teacher.setdefault(arch.resolution, logits.detach())
            (loss / len(archs)).backward()
            step_loss += float(loss.detach()) / len(archs)
        if world > 1:
            _allreduce_grads(params, world)
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        losses.append(step_loss)
        bar.set_postfix(loss=f"{step_loss:.3f}")
        done = step + 1
        if opts.checkpoint and rank == 0 and (done % opts.checkpoint_every == 0 or done == opts.steps):
            save_checkpoint(opts.checkpoint, space, optimizer, done, opts, losses)
    bar.close()
    if world > 1:
        dist.barrier()
    space.eval()
    return TrainingLog(steps=opts.steps, losses=losses, resumed_from=start)


def main(argv: list[str] | None = None) -> int:
    """``torchrun --nproc_per_node 2 -m tuskml.plugins.tinyformer.train_supernet --out runs/nas``.

    Trains the supernet data-parallel and writes ``OUT/supernet.safetensors``. If ``OUT/supernas.json``
    exists (written by ``tuskml tinyformer search``), the space SuperNAS chose is trained, so the
    search then resumes from this checkpoint instead of training again.
    """
    import argparse

    import tuskml
    from tuskml.plugins.tinyformer.arch import restrict
    from tuskml.plugins.tinyformer.datasets import train_test

    ap = argparse.ArgumentParser(prog="python -m tuskml.plugins.tinyformer.train_supernet")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--out", default="runs/nas")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--rule", choices=["sandwich", "single-path"], default="sandwich")
    ap.add_argument("--resolutions", default=None, help="comma-separated, e.g. 16,32")
    ap.add_argument("--width-mults", default=None, help="comma-separated, e.g. 0.5,1.0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-every", type=int, default=20)
    args = ap.parse_args(argv)
    init_distributed_from_env()
    overrides: dict[str, Any] = {}
    if args.resolutions:
        overrides["resolutions"] = tuple(int(v) for v in args.resolutions.split(","))
    if args.width_mults:
        overrides["width_mults"] = tuple(float(v) for v in args.width_mults.split(","))
    cfg = tuskml.resolve_config("search_spaces", "tinyformer-hybrid", **overrides)[1]
    train, _ = train_test(args.dataset, **({"resolution": max(cfg.resolutions)} if args.dataset != "cifar10" else {}))
    cfg = attrs.evolve(cfg, in_channels=train.in_channels, num_classes=train.num_classes)
    chosen = pathlib.Path(args.out) / "supernas.json"
    if chosen.is_file():
        info = json.loads(chosen.read_text())
        cfg = restrict(cfg, CandidateSpace(float(info["width_mult"]), int(info["resolution"])))
    torch.manual_seed(args.seed)
    space = TinyformerHybridSpace(cfg)
    opts = SupernetTrainingOptions(steps=args.steps, batch_size=args.batch_size, lr=args.lr, rule=args.rule,
                                   seed=args.seed, checkpoint=str(pathlib.Path(args.out) / "supernet.safetensors"),
                                   checkpoint_every=args.checkpoint_every)
    log = train_supernet(space, train, opts)
    rank, world = _world()
    if rank == 0:
        print(json.dumps({"world_size": world, "steps": log.steps, "resumed_from": log.resumed_from,
                          "final_loss": log.losses[-1] if log.losses else None}), flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
