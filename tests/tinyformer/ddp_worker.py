"""Run under torchrun by test_training.py: train a tiny supernet data-parallel, write this rank's
weights (so the test can check every rank ended with identical parameters)."""

import sys

import torch

import tuskml
from tuskml.plugins.tinyformer.datasets import train_test
from tuskml.plugins.tinyformer.train_supernet import (
    SupernetTrainingOptions,
    _world,
    init_distributed_from_env,
    train_supernet,
)

out = sys.argv[1]
assert init_distributed_from_env(), "expected torchrun to set WORLD_SIZE > 1"
rank, world = _world()
train, _ = train_test("digits", resolution=16)
torch.manual_seed(100 + rank)  # different initial weights per rank: training must broadcast rank 0's
space = tuskml.create("search_spaces", "tinyformer-hybrid", resolutions=(16,), width_mults=(0.5,))
log = train_supernet(space, train, SupernetTrainingOptions(steps=3, batch_size=16, checkpoint=f"{out}/ckpt.safetensors",
                                                         checkpoint_every=3), progress=False)
torch.save({"world": world, "state": space.state_dict(), "losses": log.losses}, f"{out}/rank{rank}.pt")
torch.distributed.destroy_process_group()
