"""Training mammoth2 on the shapes world: visual tokenizer first, then the joint model end to end.

Run layout (``out``)::

    train_config.toml             the TrainConfig of the run (resume checks it)
    metrics.jsonl                 one JSON line per log step (loss parts, lr, samples/s, memory)
    checkpoints/step-<N>/         model.safetensors, ema.safetensors, optimizer.safetensors,
                                  rng-rank<r>.safetensors, state.json
    checkpoints/latest            name of the newest complete checkpoint folder
    pipeline/                     the final model (EMA decoder weights) as Mammoth2Pipeline.save_pretrained

Exact resume: the batch of step ``s`` is a pure function of ``(seed, s, rank)`` and every random
draw of the model comes from the torch RNG, whose state each rank saves with the checkpoint. A
checkpoint is written to a temporary folder, fsynced and renamed into place, and only then named
in ``latest``; a crash (even ``kill -9``) loses only the steps since the last checkpoint.

Prefetch (``TrainConfig.prefetch``): one background thread builds the next joint step's batches
(scene rendering, tokenizing, the frozen VQ's codes) while this step computes. Batches depend only
on the step, so the run is the same with or without it.

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DDP (gloo on CPU, NCCL
on GPU); each rank takes its own slice of every global batch, gradients are averaged, and the run
checks at the end that all ranks hold identical parameters.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import os
import pathlib
import resource
import shutil
import sys
import time
from collections.abc import Iterator
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

import tuskml
from tuskml.core.config import atomic_write_bytes
from tuskml.core.errors import CheckpointError, ConfigError, TuskmlError
from tuskml.plugins.mammoth2.configs_model import Mammoth2Config
from tuskml.plugins.mammoth2.configs_train import TrainConfig
from tuskml.plugins.mammoth2.model import Mammoth2Model
from tuskml.plugins.mammoth2.shapes_world import TASKS, ShapesWorld

CONFIG_FILE = "train_config.toml"
METRICS_FILE = "metrics.jsonl"


class TrainingError(TuskmlError):
    """A run that cannot start or continue (bad run folder, config mismatch, diverged ranks)."""


# --- distributed helpers ------------------------------------------------------------------------------


@attrs.frozen
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def init_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size())


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device = 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


# --- schedule, EMA, data ----------------------------------------------------------------------------


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a module's parameters (the DiT), with the usual warm-up of the
    decay (``min(decay, (1 + n) / (10 + n))``) so early averages are not dominated by the init."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: p.detach().clone().float() for k, p in module.named_parameters()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, p in module.named_parameters():
            self.shadow[k].mul_(d).add_(p.detach().float(), alpha=1 - d)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for k, p in module.named_parameters():
            p.copy_(self.shadow[k].to(p.dtype))


def batch_indices(seed: int, phase: int, step: int, batch_size: int, dist: Dist, length: int) -> list[int]:
    """This rank's slice of the global batch of ``step``: a pure function, so resume is exact."""
    rng = np.random.default_rng([seed, phase, step])
    global_batch = rng.integers(0, length, size=batch_size * dist.world)
    return [int(i) for i in global_batch[dist.rank * batch_size:(dist.rank + 1) * batch_size]]


class _LossModule(nn.Module):
    """DDP needs a forward that returns tensors; this returns the loss parts as a tuple."""

    def __init__(self, model: Mammoth2Model):
        super().__init__()
        self.model = model

    def forward(self, batches: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        """Sum of the loss parts over ``batches`` (one per task group, or one mixed batch)."""
        outs = [self.model(**batch) for batch in batches]
        return tuple(torch.stack([getattr(o, name) for o in outs]).sum()
                     for name in ("loss", "ntp_loss", "fm_loss", "vq_loss"))


class _VQLossModule(nn.Module):
    def __init__(self, vq: nn.Module):
        super().__init__()
        self.vq = vq

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.vq(images)
        return out.loss, out.recon_loss, out.codebook_usage


# --- checkpoints -------------------------------------------------------------------------------------


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _save_tensors(tensors: dict[str, torch.Tensor], path: pathlib.Path, meta: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _load_tensors(path: pathlib.Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated?): {exc}") from exc


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _set_rng_state(tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(tensors["cpu"])
    if device.type == "cuda" and "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"], device)


def model_config_of(config: TrainConfig) -> Mammoth2Config:
    """The model a training config describes: its ``model`` table, else the named model preset."""
    cfg = config.model
    if cfg is None:
        from tuskml.plugins.mammoth2.pipeline import load_preset

        return load_preset(config.model_preset)
    if not isinstance(cfg, Mammoth2Config):
        raise ConfigError(f"train config 'model' must be a mammoth2 model, got {type(cfg).__qualname__}")
    return cfg


# --- the trainer ---------------------------------------------------------------------------------------


class Trainer:
    """Owns one run: model, optimizers, EMA, data, checkpoints (see the module docstring)."""

    def __init__(self, config: TrainConfig, out: str | pathlib.Path, *, resume: bool = False):
        self.config = config
        self.out = pathlib.Path(out)
        self.device = pick_device(config.device)
        self.dist = init_distributed(self.device)
        self._check_run_folder(resume)
        torch.manual_seed(config.seed)  # identical init on every rank (DDP also broadcasts rank 0's)
        self.model = Mammoth2Model(self.model_config()).to(self.device)
        torch.manual_seed(config.seed + 1000 * self.dist.rank + 1)  # per-rank stream for dropout/noise/t
        if config.data.image_size != self.model.config.image_size:
            raise ConfigError(f"data.image_size ({config.data.image_size}) differs from the model's image_size "
                              f"({self.model.config.image_size}); set them equal")
        if self.model.vision_encoder is None and config.uses_understanding():
            raise ConfigError("the model has no vision_encoder, so it cannot train on understanding samples; "
                              "set the understanding weight (data.mix's or task_batch's third entry) to 0 or "
                              "give the model a vision_encoder")
        self.data = ShapesWorld(config.data)
        # with task_batch: one stream per task, each its own forward in a step
        self.task_data = [ShapesWorld(attrs.evolve(config.data, task=task)) for task in TASKS] if config.task_batch else []
        self.joint_params = [p for n, p in self.model.named_parameters()
                             if not n.startswith(("visual_tokenizer.", "codec."))]
        self.vq_opt = torch.optim.AdamW(self.model.visual_tokenizer.parameters(), lr=config.tokenizer.lr,
                                        weight_decay=0.0, betas=(0.9, 0.99))
        decay = [p for p in self.joint_params if p.dim() >= 2]
        no_decay = [p for p in self.joint_params if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=config.lr, betas=tuple(config.betas))
        self.ema = EMA(self.model.decoder, config.ema_decay)
        self.step = 0  # global: tokenizer steps, then joint steps
        self.samples_seen = 0
        self._prefetch_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._prefetched: tuple[int, concurrent.futures.Future] | None = None  # (joint step, its batches)
        if resume:
            self._load_latest()

    # --- setup ------------------------------------------------------------------------------------

    def model_config(self) -> Mammoth2Config:
        return model_config_of(self.config)

    def _check_run_folder(self, resume: bool) -> None:
        saved = self.out / CONFIG_FILE
        text = tuskml.core.config.config_to_toml(self.config)
        if resume:
            if saved.is_file() and saved.read_text() != text:
                raise TrainingError(f"--resume: the config differs from the run's {saved}; resume with that "
                                    f"config (or start a new run folder)")
        elif (self.out / "checkpoints" / "latest").exists():
            raise TrainingError(f"{self.out} already holds a run; pass --resume to continue it or pick another --out")
        if self.dist.main:
            atomic_write_bytes(saved, text.encode())
        self.dist.barrier()

    @property
    def total_steps(self) -> int:
        return self.config.tokenizer.steps + self.config.joint_steps

    # --- checkpoints --------------------------------------------------------------------------------

    def save_checkpoint(self) -> pathlib.Path:
        ckdir = self.out / "checkpoints"
        final = ckdir / f"step-{self.step:07d}"
        tmp = ckdir / f".step-{self.step:07d}.tmp"
        if self.dist.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.dist.barrier()
        _save_tensors(_rng_state(self.device), tmp / f"rng-rank{self.dist.rank}.safetensors")
        self.dist.barrier()
        if self.dist.main:
            from safetensors.torch import save_model

            save_model(self.model, str(tmp / "model.safetensors"))
            _save_tensors(self._volatile_buffers(), tmp / "buffers.safetensors")
            _save_tensors(self.ema.shadow, tmp / "ema.safetensors", {"updates": str(self.ema.updates)})
            for name, opt in (("optimizer", self.opt), ("vq_optimizer", self.vq_opt)):
                tensors, meta = _optimizer_tensors(opt)
                _save_tensors(tensors, tmp / f"{name}.safetensors", {"meta": json.dumps(meta)})
            state = {"step": self.step, "samples_seen": self.samples_seen, "world_size": self.dist.world}
            atomic_write_bytes(tmp / "state.json", json.dumps(state).encode())
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            fd = os.open(ckdir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            atomic_write_bytes(ckdir / "latest", final.name.encode())
            old = sorted(p for p in ckdir.glob("step-*") if p.is_dir())[: -self.config.keep_checkpoints]
            for p in old:
                shutil.rmtree(p, ignore_errors=True)
        self.dist.barrier()
        return final

    def _volatile_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers left out of ``state_dict`` (e.g. the VQ's dead-code counters) that still steer
        training; saved with a checkpoint so a resumed run continues exactly."""
        persistent = set(self.model.state_dict())
        return {k: v for k, v in self.model.named_buffers() if k not in persistent}

    def _load_latest(self) -> None:
        from safetensors.torch import load_model

        ckdir = self.out / "checkpoints"
        pointer = ckdir / "latest"
        if not pointer.is_file():
            return  # nothing saved yet: --resume starts from scratch
        folder = ckdir / pointer.read_text().strip()
        state = json.loads((folder / "state.json").read_text())
        if state["world_size"] != self.dist.world:
            raise TrainingError(f"{folder} was written by {state['world_size']} processes, this run has "
                                f"{self.dist.world}; exact resume needs the same number")
        try:
            load_model(self.model, str(folder / "model.safetensors"), device=str(self.device))
        except Exception as exc:
            raise CheckpointError(f"{folder / 'model.safetensors'}: cannot load into the model: {exc}") from exc
        buffers, _ = _load_tensors(folder / "buffers.safetensors")
        live = dict(self.model.named_buffers())
        for k, v in buffers.items():
            live[k].copy_(v)
        ema, meta = _load_tensors(folder / "ema.safetensors")
        self.ema.shadow = {k: v.to(self.device) for k, v in ema.items()}
        self.ema.updates = int(meta["updates"])
        for name, opt in (("optimizer", self.opt), ("vq_optimizer", self.vq_opt)):
            tensors, meta = _load_tensors(folder / f"{name}.safetensors")
            _load_optimizer(opt, {k: v.to(self.device) for k, v in tensors.items()}, json.loads(meta["meta"]))
        rng, _ = _load_tensors(folder / f"rng-rank{self.dist.rank}.safetensors")
        _set_rng_state(rng, self.device)
        self.step = int(state["step"])
        self.samples_seen = int(state["samples_seen"])

    # --- steps ----------------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.dist.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    def _stage_at(self, joint_step: int) -> tuple[int, Any]:
        end = 0
        for i, stage in enumerate(self.config.stages):
            end += stage.steps
            if joint_step < end:
                return i, stage
        return len(self.config.stages) - 1, self.config.stages[-1]

    def _set_frozen(self, frozen: tuple[str, ...]) -> None:
        for p in self.joint_params:
            p.requires_grad_(True)
        for name in frozen:
            part = getattr(self.model, name, None)
            if part is None:
                continue  # e.g. no vision_encoder in this model
            for p in part.parameters():
                p.requires_grad_(False)
        for p in self.model.visual_tokenizer.parameters():
            p.requires_grad_(False)

    def _sync_from_rank0(self, module: nn.Module) -> None:
        """The VQ restarts dead codes from each rank's own batch, outside autograd, so DDP's gradient
        averaging cannot keep its codebook equal across ranks; rank 0's copy wins after every step."""
        if self.dist.world > 1:
            with torch.no_grad():
                for p in module.parameters():
                    torch.distributed.broadcast(p.data, src=0)

    def _clip(self, params: list[nn.Parameter]) -> float:
        live = [p for p in params if p.grad is not None]
        if not live:
            return 0.0
        if self.config.grad_clip > 0:
            return float(torch.nn.utils.clip_grad_norm_(live, self.config.grad_clip))
        return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in live])))

    def _joint_batches(self, joint_step: int) -> list[dict[str, torch.Tensor]]:
        """The model batches of one joint step: one mixed batch, or one per task with ``task_batch``."""
        cfg = self.config
        if not cfg.task_batch:
            idx = batch_indices(cfg.seed, 2, joint_step, cfg.batch_size, self.dist, len(self.data))
            return [self.model.make_batch([self.data[i].to_model_sample() for i in idx])]
        batches = []
        for task_id, (data, size) in enumerate(zip(self.task_data, cfg.task_batch)):
            if size:
                idx = batch_indices(cfg.seed, 10 + task_id, joint_step, size, self.dist, len(data))
                batches.append(self.model.make_batch([data[i].to_model_sample() for i in idx]))
        return batches

    def _batches_at(self, joint_step: int) -> list[dict[str, torch.Tensor]]:
        """This joint step's batches (prefetched when ``prefetch`` is on), and the next step's
        submitted to the background thread."""
        pending, self._prefetched = self._prefetched, None
        if pending is not None and pending[0] == joint_step:
            batches = pending[1].result()
        else:
            batches = self._joint_batches(joint_step)
        if self.config.prefetch and joint_step + 1 < self.config.joint_steps:
            if self._prefetch_pool is None:
                self._prefetch_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mammoth2-prefetch")
            self._prefetched = (joint_step + 1, self._prefetch_pool.submit(self._joint_batches_no_grad, joint_step + 1))
        return batches

    def _joint_batches_no_grad(self, joint_step: int) -> list[dict[str, torch.Tensor]]:
        with torch.no_grad():  # grad mode is per thread: the VQ's codes need no graph
            return self._joint_batches(joint_step)

    def _stop_prefetch(self) -> None:
        if self._prefetch_pool is not None:
            self._prefetch_pool.shutdown(wait=True, cancel_futures=True)
        self._prefetch_pool, self._prefetched = None, None

    def _joint_train_mode(self) -> None:
        """Everything in train mode but the frozen visual tokenizer, which is never switched (even for
        a moment: the prefetch thread may be encoding with it; in train mode it restarts dead codes)."""
        self.model.training = True
        for name, child in self.model.named_children():
            child.train(name != "visual_tokenizer")

    def _images(self, indices: list[int]) -> torch.Tensor:
        from tuskml.plugins.mammoth2.shapes_world import to_tensor

        out = []
        for i in indices:
            s = self.data[i]
            out.append(to_tensor(s.source if s.source is not None and i % 2 else s.image))
        return torch.stack(out).to(self.device)

    def train(self) -> dict[str, Any]:
        cfg = self.config
        tok_steps = cfg.tokenizer.steps
        bar = self._progress()
        window_start, window_samples = time.perf_counter(), 0
        vq_module = ddp_vq = None
        loss_module = ddp_joint = None
        stage_index = -1
        last: dict[str, float] = {}
        started = time.perf_counter()
        stopped_early = False
        try:
            while self.step < self.total_steps:
                if self.step < tok_steps:  # --- phase 1: visual tokenizer
                    if ddp_vq is None:
                        self.model.visual_tokenizer.train()
                        for p in self.model.visual_tokenizer.parameters():
                            p.requires_grad_(True)
                        vq_module = _VQLossModule(self.model.visual_tokenizer)
                        ddp_vq = self._wrap(vq_module)
                    lr = cfg.tokenizer.lr * lr_factor(self.step, tok_steps, cfg.tokenizer.warmup_steps, cfg.min_lr_ratio)
                    for g in self.vq_opt.param_groups:
                        g["lr"] = lr
                    images = self._images(batch_indices(cfg.seed, 1, self.step, cfg.tokenizer.batch_size, self.dist,
                                                        len(self.data)))
                    with self._autocast():
                        loss, recon, usage = ddp_vq(images)
                    self.vq_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    gnorm = self._clip(list(self.model.visual_tokenizer.parameters()))
                    self.vq_opt.step()
                    self._sync_from_rank0(self.model.visual_tokenizer)
                    n = images.shape[0]
                    last = {"phase": "tokenizer", "loss": loss.item(), "recon": recon.item(), "usage": float(usage.detach()),
                            "grad_norm": gnorm, "lr": lr}
                else:  # --- phase 2: joint NTP + lambda * FM
                    joint_step = self.step - tok_steps
                    si, stage = self._stage_at(joint_step)
                    if si != stage_index:
                        stage_index = si
                        self._set_frozen(stage.frozen)
                        loss_module = _LossModule(self.model)
                        ddp_joint = self._wrap(loss_module)
                    self._joint_train_mode()
                    lr = cfg.lr * lr_factor(joint_step, cfg.joint_steps, cfg.warmup_steps, cfg.min_lr_ratio)
                    for g in self.opt.param_groups:
                        g["lr"] = lr
                    batches = self._batches_at(joint_step)
                    with self._autocast():
                        loss, ntp, fmv, _ = ddp_joint(batches)
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    gnorm = self._clip(self.joint_params)
                    self.opt.step()
                    self.ema.update(self.model.decoder)
                    n = cfg.samples_per_step
                    last = {"phase": stage.name, "loss": loss.item(), "ntp": ntp.item(), "fm": fmv.item(),
                            "grad_norm": gnorm, "lr": lr}
                self.step += 1
                self.samples_seen += n * self.dist.world
                window_samples += n * self.dist.world
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    last.update(step=self.step, samples_per_s=window_samples / max(elapsed, 1e-9),
                                peak_memory_mb=peak_memory_mb(self.device))
                    self._log(last)
                    window_start, window_samples = time.perf_counter(), 0
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in last.items()
                                     if k in ("phase", "loss", "ntp", "fm", "recon", "samples_per_s")})
                if self._out_of_time(started):
                    stopped_early = self.step < self.total_steps
                    self.save_checkpoint()
                    break
                if self.step % cfg.checkpoint_every == 0 or self.step == self.total_steps:
                    self.save_checkpoint()
        finally:
            self._stop_prefetch()
        if bar is not None:
            bar.close()
        summary = self.finish(stopped_early=stopped_early, train_seconds=time.perf_counter() - started)
        return {**last, **summary}

    def _out_of_time(self, started: float) -> bool:
        """Rank 0's clock decides, so every rank stops at the same step."""
        limit = self.config.time_limit_minutes
        if limit <= 0:
            return False
        flag = torch.tensor([float(time.perf_counter() - started > 60.0 * limit)], device=self.device)
        if self.dist.world > 1:
            torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())

    def _progress(self) -> Any:
        if not (self.config.progress and self.dist.main):
            return None
        from tqdm import tqdm

        return tqdm(total=self.total_steps, initial=self.step, desc="mammoth2 train", dynamic_ncols=True)

    def _log(self, record: dict[str, Any]) -> None:
        if self.dist.main:
            with open(self.out / METRICS_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    def params_agree(self) -> bool:
        """Whether every rank holds bit-identical parameters (always True for one process)."""
        if self.dist.world == 1:
            return True
        flat = torch.cat([p.detach().float().reshape(-1) for p in self.model.parameters()]).to(self.device)
        lo, hi = flat.clone(), flat.clone()
        torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
        torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
        return bool(torch.equal(lo, hi))

    def finish(self, *, stopped_early: bool = False, train_seconds: float = 0.0) -> dict[str, Any]:
        """Check the ranks agree, then write ``pipeline/`` with the EMA weights in the DiT."""
        agree = self.params_agree()
        summary = {"ranks_agree": agree, "world_size": self.dist.world, "steps": self.step,
                   "total_steps": self.total_steps, "stopped_early": stopped_early,
                   "train_seconds": train_seconds, "samples_seen": self.samples_seen,
                   "peak_memory_mb": peak_memory_mb(self.device)}
        if self.dist.main:
            from tuskml.plugins.mammoth2.pipeline import Mammoth2Pipeline

            live = {k: v.detach().clone() for k, v in self.model.decoder.state_dict().items()}
            self.ema.copy_to(self.model.decoder)
            Mammoth2Pipeline(self.model).save_pretrained(self.out / "pipeline")
            self.model.decoder.load_state_dict(live)
            atomic_write_bytes(self.out / "train_summary.json", json.dumps(summary, indent=2).encode())
        self.dist.barrier()
        if not agree:
            raise TrainingError("DDP ranks ended with different parameters; the run is not trustworthy")
        return summary


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB -> MiB (process peak RSS)


def train(config: TrainConfig, out: str | pathlib.Path, *, resume: bool = False) -> dict[str, Any]:
    """Train (or continue, with ``resume``) a run in folder ``out``; returns the final metrics."""
    trainer = Trainer(config, out, resume=resume)
    return trainer.train()


def iter_metrics(out: str | pathlib.Path) -> Iterator[dict[str, Any]]:
    path = pathlib.Path(out) / METRICS_FILE
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                yield json.loads(line)


def main(argv: list[str] | None = None) -> None:
    """``python -m tuskml.plugins.mammoth2.train --config <toml|preset> --out <dir> [--resume]``
    (the same as ``tuskml mammoth2 train``; handy under ``torchrun``)."""
    import argparse

    from tuskml.plugins.mammoth2.configs_train import load_train_config

    parser = argparse.ArgumentParser(prog="python -m tuskml.plugins.mammoth2.train")
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = train(load_train_config(args.config), args.out, resume=args.resume)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    # one write of line + newline: under torchrun every rank shares this stdout, and a single pipe
    # write below PIPE_BUF is atomic, so ranks' result lines never interleave (print() writes twice)
    line = (json.dumps(result) + "\n").encode()
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), line)


if __name__ == "__main__":
    main()
