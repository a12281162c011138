"""Supernet training: rules, exact resume from atomic safetensors checkpoints, 2-process data parallel."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import torch

import tuskml
from tuskml.core.errors import CheckpointError
from tuskml.plugins.tinyformer.datasets import train_test
from tuskml.plugins.tinyformer.train_supernet import SupernetTrainingOptions, train_supernet

HERE = pathlib.Path(__file__).parent


@pytest.fixture(scope="module")
def digits():
    return train_test("digits", resolution=16)[0]


def _space():
    torch.manual_seed(0)
    return tuskml.create("search_spaces", "tinyformer-hybrid", resolutions=(16,), width_mults=(0.5, 1.0))


@pytest.mark.parametrize("rule", ["single-path", "sandwich"])
def test_training_lowers_the_loss(digits, rule):
    space = _space()
    before = {k: v.clone() for k, v in space.state_dict().items()}
    log = train_supernet(space, digits, SupernetTrainingOptions(steps=14, batch_size=32, rule=rule, warmup_steps=2,
                                                              max_shift=0), progress=False)
    assert len(log.losses) == 14 and all(torch.isfinite(torch.tensor(log.losses)))
    assert sum(log.losses[-4:]) < sum(log.losses[:4])
    changed = [k for k, v in space.state_dict().items() if not torch.equal(v, before[k])]
    assert any("classifier" in k for k in changed)


def test_resume_reproduces_the_uninterrupted_run(digits, tmp_path):
    opts = dict(steps=4, batch_size=16, warmup_steps=1, rule="sandwich")
    straight = _space()
    train_supernet(straight, digits, SupernetTrainingOptions(**opts), progress=False)
    ckpt = tmp_path / "supernet.safetensors"
    first = _space()
    train_supernet(first, digits, SupernetTrainingOptions(**{**opts, "steps": 2}, checkpoint=str(ckpt),
                                                          checkpoint_every=1), progress=False)
    assert ckpt.is_file() and not list(tmp_path.glob(".*.tmp"))
    resumed = _space()
    log = train_supernet(resumed, digits, SupernetTrainingOptions(**opts, checkpoint=str(ckpt), checkpoint_every=1),
                         progress=False)
    assert log.resumed_from == 2 and len(log.losses) == 4
    for k, v in straight.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k
    meta = tuskml.read_metadata(ckpt)
    assert meta["step"] == "4"


def test_bad_checkpoints_are_clear_errors(digits, tmp_path):
    ckpt = tmp_path / "s.safetensors"
    train_supernet(_space(), digits, SupernetTrainingOptions(steps=1, batch_size=8, checkpoint=str(ckpt)), progress=False)
    other = tuskml.create("search_spaces", "tinyformer-hybrid", resolutions=(32,))
    with pytest.raises(CheckpointError, match="another search space config"):
        train_supernet(other, digits, SupernetTrainingOptions(steps=2, batch_size=8, checkpoint=str(ckpt)), progress=False)
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        train_supernet(_space(), digits, SupernetTrainingOptions(steps=2, batch_size=8, checkpoint=str(ckpt)), progress=False)


def test_two_process_data_parallel_under_torchrun(tmp_path):
    torchrun = pathlib.Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29561", str(HERE / "ddp_worker.py"),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert r0["world"] == r1["world"] == 2
    for k, v in r0["state"].items():
        if "running_" in k or "num_batches" in k:
            continue  # BatchNorm statistics are per rank (each sees its own shard), as in DDP without SyncBN
        assert torch.equal(v, r1["state"][k]), f"ranks disagree on {k}"
    assert (tmp_path / "ckpt.safetensors").is_file()
