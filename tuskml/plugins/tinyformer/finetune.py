"""Fine-tune an extracted, block-pruned subnet with its sparsity masks held fixed.

The masks are the zero pattern left by block pruning (per prunable layer); after every optimizer
step the weights are multiplied by their mask again, so pruned blocks stay exactly zero and the
encoded (sparse) size found by the search does not change. Optional knowledge distillation from a
teacher (the supernet's largest subnet) helps small models.

With ``final_sparsity`` (module path -> block sparsity, at least the current one) the sparsity is
raised gradually during the first ``prune_fraction`` of the steps (``prune_stages`` magnitude
re-prunings on a cubic schedule, Zhu & Gupta 2017), the masks following each re-pruning: one-shot
pruning of an already-pruned small model to a much higher sparsity loses most of its accuracy.
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from tuskml.plugins.tinyformer.datasets import ImageClassificationData


@attrs.frozen(kw_only=True)
class FinetuneOptions:
    steps: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_shift: int = 1
    distill_weight: float = 0.5  # weight of the teacher KL term when a teacher is given
    prune_fraction: float = 0.5  # share of the steps over which final_sparsity is reached
    prune_stages: int = 4
    seed: int = 0


def sparsity_masks(model: nn.Module, paths: list[str] | None = None) -> dict[str, torch.Tensor]:
    """``module_path -> (weight != 0)`` for the prunable layers (all, or ``paths``)."""
    from tuskml.backends.sparse_engine.pruning import prunable_layers

    layers = prunable_layers(model)
    return {p: (w.detach() != 0) for p, w in layers.items() if paths is None or p in paths}


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    from tuskml.backends.sparse_engine.pruning import prunable_layers

    layers = prunable_layers(model)
    with torch.no_grad():
        for p, m in masks.items():
            layers[p].mul_(m.to(layers[p].dtype))


def pruning_schedule(start: dict[str, float], final: dict[str, float], steps: int, fraction: float,
                     stages: int) -> dict[int, dict[str, float]]:
    """``step -> sparsity per layer`` for the re-prunings: ``s_i = f + (s0 - f) * (1 - i/stages)**3``,
    at steps ``round(i * fraction * steps / stages)``, i = 1..stages (the last one reaches ``final``)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"prune_fraction must be in (0, 1], got {fraction}")
    if stages < 1:
        raise ValueError(f"prune_stages must be >= 1, got {stages}")
    out: dict[int, dict[str, float]] = {}
    for i in range(1, stages + 1):
        step = min(steps - 1, max(0, int(round(i * fraction * steps / stages)) - 1))
        k = (1.0 - i / stages) ** 3
        out[step] = {p: f + (start.get(p, 0.0) - f) * k for p, f in final.items()}
    return out


def finetune(model: nn.Module, data: ImageClassificationData, resolution: int, opts: FinetuneOptions,
             masks: dict[str, torch.Tensor], teacher: nn.Module | None = None, progress: bool = False, *,
             final_sparsity: dict[str, float] | None = None, blocks: dict[str, int] | None = None) -> list[float]:
    """Train ``model`` in place at ``resolution``; returns the loss per step.

    ``final_sparsity``/``blocks`` (module path -> block sparsity / block size): prune gradually up to
    these during training (see the module docstring); ``masks`` is then rebuilt for those layers.
    """
    from tqdm.auto import tqdm

    from tuskml.backends.sparse_engine.pruning import block_prune, block_sparsity, prunable_layers

    schedule: dict[int, dict[str, float]] = {}
    if final_sparsity:
        layers = prunable_layers(model)
        missing = sorted(set(final_sparsity) - set(layers))
        if missing:
            raise ValueError(f"final_sparsity names layers the model does not have: {missing}")
        if blocks is None or set(final_sparsity) - set(blocks):
            raise ValueError("final_sparsity needs a block size for every layer it names (blocks)")
        masks = dict(masks)
        if opts.steps == 0:  # nothing to train: prune to the final sparsity at once
            block_prune(model, dict(final_sparsity), {p: blocks[p] for p in final_sparsity})
            masks.update(sparsity_masks(model, list(final_sparsity)))
        else:
            start = {p: block_sparsity(layers[p].detach(), blocks[p]) for p in final_sparsity}
            schedule = pruning_schedule(start, dict(final_sparsity), opts.steps, opts.prune_fraction,
                                        opts.prune_stages)

    gen = torch.Generator().manual_seed(opts.seed)
    images = data.resized(resolution)
    teacher_images = None
    if teacher is not None:
        teacher.eval()
        teacher_images = data.resized(getattr(teacher, "resolution", resolution))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    losses = []
    model.train()
    for step in tqdm(range(opts.steps), disable=not progress, desc="fine-tune (masked)", unit="step"):
        lr = opts.lr * 0.5 * (1 + math.cos(math.pi * step / max(1, opts.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(images), (opts.batch_size,), generator=gen)
        x = images[idx]
        if opts.max_shift:
            dy, dx = (int(v) for v in torch.randint(-opts.max_shift, opts.max_shift + 1, (2,), generator=gen))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        else:
            dy = dx = 0
        logits = model(x)
        loss = F.cross_entropy(logits, data.labels[idx])
        if teacher is not None and opts.distill_weight > 0:
            with torch.no_grad():
                tx = torch.roll(teacher_images[idx], shifts=(dy, dx), dims=(2, 3)) if teacher_images.shape[-1] == x.shape[-1] \
                    else teacher_images[idx]
                soft = F.softmax(teacher(tx), dim=-1)
            kd = F.kl_div(F.log_softmax(logits, dim=-1), soft, reduction="batchmean")
            loss = (1 - opts.distill_weight) * loss + opts.distill_weight * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in schedule:
            block_prune(model, schedule[step], {p: blocks[p] for p in schedule[step]})
            masks.update(sparsity_masks(model, list(schedule[step])))
        apply_masks(model, masks)
        losses.append(float(loss.detach()))
    model.eval()
    return losses
