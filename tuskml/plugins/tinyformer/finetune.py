"""Fine-tune an extracted, block-pruned subnet with its sparsity masks held fixed.

The masks are the zero pattern left by block pruning (per prunable layer); after every optimizer
step the weights are multiplied by their mask again, so pruned blocks stay exactly zero and the
encoded (sparse) size found by the search does not change. Optional knowledge distillation from a
teacher (the supernet's largest subnet) helps small models.
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


def finetune(model: nn.Module, data: ImageClassificationData, resolution: int, opts: FinetuneOptions,
             masks: dict[str, torch.Tensor], teacher: nn.Module | None = None, progress: bool = False) -> list[float]:
    """Train ``model`` in place at ``resolution``; returns the loss per step."""
    from tqdm.auto import tqdm

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
        apply_masks(model, masks)
        losses.append(float(loss.detach()))
    model.eval()
    return losses
