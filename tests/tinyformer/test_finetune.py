"""Masked fine-tuning with a gradual pruning schedule (finetune.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tuskml.backends.sparse_engine.pruning import block_prune, block_sparsity
from tuskml.plugins.tinyformer.datasets import ImageClassificationData
from tuskml.plugins.tinyformer.finetune import FinetuneOptions, finetune, pruning_schedule, sparsity_masks


def test_schedule_is_cubic_and_ends_at_the_target():
    sched = pruning_schedule({"a": 0.25}, {"a": 0.75, "b": 0.5}, steps=100, fraction=0.5, stages=4)
    assert sorted(sched) == [11, 24, 37, 49]
    values = [sched[s]["a"] for s in sorted(sched)]
    assert values == sorted(values) and values[-1] == 0.75 and values[0] > 0.25
    assert sched[49]["b"] == 0.5  # a layer with no current sparsity starts from 0
    with pytest.raises(ValueError, match="prune_fraction"):
        pruning_schedule({}, {"a": 0.5}, steps=10, fraction=0.0, stages=2)


def _toy():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (96,), generator=g)
    images = torch.randn(96, 1, 8, 8, generator=g) + labels.view(-1, 1, 1, 1).float()
    return net, ImageClassificationData("toy", images, labels, 3)


def test_gradual_pruning_reaches_the_final_sparsity_and_keeps_it():
    net, data = _toy()
    block_prune(net, {"2": 0.25}, {"2": 4})
    masks = sparsity_masks(net, ["2"])
    final = {"2": 0.75, "6": 0.5}
    blocks = {"2": 4, "6": 4}
    losses = finetune(net, data, 8, FinetuneOptions(steps=12, batch_size=16, prune_stages=3), masks,
                      final_sparsity=final, blocks=blocks)
    assert len(losses) == 12
    assert block_sparsity(net[2].weight.detach(), 4) == pytest.approx(0.75)
    assert block_sparsity(net[6].weight.detach(), 4) == pytest.approx(0.5)


def test_final_sparsity_errors_name_the_problem():
    net, data = _toy()
    with pytest.raises(ValueError, match="does not have"):
        finetune(net, data, 8, FinetuneOptions(steps=2), {}, final_sparsity={"nope": 0.5}, blocks={"nope": 4})
    with pytest.raises(ValueError, match="block size"):
        finetune(net, data, 8, FinetuneOptions(steps=2), {}, final_sparsity={"2": 0.5})
