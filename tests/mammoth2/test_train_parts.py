"""Trainer parts: schedule, EMA, sharded deterministic batches, configs and their errors."""

from __future__ import annotations

import attrs
import pytest
import torch

import tuskml
from tuskml.plugins.mammoth2.configs_train import StageConfig, TrainConfig, load_train_config, train_preset_names
from tuskml.plugins.mammoth2.train import EMA, Dist, batch_indices, lr_factor


def test_lr_warms_up_then_decays_to_the_floor():
    f = [lr_factor(s, 100, 10, 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] == pytest.approx(0.1, abs=1e-3)


def test_ema_tracks_parameters():
    lin = torch.nn.Linear(2, 2)
    ema = EMA(lin, decay=0.9)
    with torch.no_grad():
        lin.weight.add_(1.0)
    for _ in range(200):
        ema.update(lin)
    assert torch.allclose(ema.shadow["weight"], lin.weight, atol=1e-4)
    target = torch.nn.Linear(2, 2)
    ema.copy_to(target)
    assert torch.allclose(target.weight, lin.weight, atol=1e-4)


def test_batches_are_deterministic_and_sharded():
    a = batch_indices(0, 2, 5, 8, Dist(0, 2), 1000)
    b = batch_indices(0, 2, 5, 8, Dist(1, 2), 1000)
    assert a == batch_indices(0, 2, 5, 8, Dist(0, 2), 1000) and len(a) == len(b) == 8 and a != b
    assert a + b == batch_indices(0, 2, 5, 16, Dist(0, 1), 1000)  # ranks split one global batch
    assert a != batch_indices(0, 2, 6, 8, Dist(0, 2), 1000)


def test_presets_load_and_round_trip():
    assert {"tiny", "small"} <= set(train_preset_names())
    for name in ("tiny", "small"):
        cfg = load_train_config(name)
        text = tuskml.core.config.config_to_toml(cfg)
        assert tuskml.core.config.parse_config_text(text, "toml", TrainConfig) == cfg
        assert cfg.joint_steps > 0 and cfg.stages[0].frozen == ("backbone",)


def test_bad_configs_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown model parts"):
        StageConfig(frozen=("backbnoe",))
    path = tmp_path / "bad.toml"
    path.write_text("batch_size = 4\n[[stages]]\nname='x'\nsteps=1\nfrozen=['decoderr']\n")
    with pytest.raises(tuskml.ConfigError, match="stages"):
        load_train_config(path)
    with pytest.raises(tuskml.ConfigError, match="no mammoth2 training preset"):
        load_train_config("huge")


def test_image_size_mismatch_and_existing_run_are_refused(tmp_path):
    from tuskml.plugins.mammoth2.train import Trainer, TrainingError

    cfg = TrainConfig(data=attrs.evolve(TrainConfig().data, image_size=64))  # tiny model is 32 px
    with pytest.raises(tuskml.ConfigError, match="image_size"):
        Trainer(cfg, tmp_path / "a")
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    (tmp_path / "b" / "checkpoints" / "latest").write_text("step-0000001")
    with pytest.raises(TrainingError, match="--resume"):
        Trainer(TrainConfig(), tmp_path / "b")


def test_task_batch_draws_each_task_in_its_own_forward(tmp_path):
    from tuskml.plugins.mammoth2.sequence import Role
    from tuskml.plugins.mammoth2.train import Trainer

    with pytest.raises(ValueError, match="task_batch"):
        TrainConfig(task_batch=(4, 4))
    with pytest.raises(ValueError, match="task_batch"):
        TrainConfig(task_batch=(0, 0, 0))
    with pytest.raises(ValueError, match="data.task must be 'mixed'"):
        TrainConfig(task_batch=(1, 1, 1), data=attrs.evolve(TrainConfig().data, task="t2i"))
    cfg = TrainConfig(task_batch=(3, 2, 5))
    assert cfg.samples_per_step == 10 and cfg.uses_understanding()
    assert not TrainConfig(task_batch=(3, 2, 0)).uses_understanding()
    trainer = Trainer(cfg, tmp_path / "run")
    t2i, edit, und = trainer._joint_batches(0)
    assert [b["input_ids"].shape[0] for b in (t2i, edit, und)] == [3, 2, 5]
    assert bool(t2i["has_target"].all()) and not bool(t2i["has_source"].any())
    assert bool(edit["has_source"].all()) and bool((edit["roles"] == int(Role.SOURCE_IMAGE)).any(-1).all())
    assert bool(und["has_understanding"].all()) and not bool(und["has_target"].any())
    # the step's batches are a pure function of the step (exact resume), and differ between steps
    again = trainer._joint_batches(0)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip((t2i, edit, und), again))
    assert not torch.equal(trainer._joint_batches(1)[2]["input_ids"], und["input_ids"])
    # the loss module sums the groups' losses
    from tuskml.plugins.mammoth2.train import _LossModule

    model = trainer.model.eval()
    torch.manual_seed(0)  # the flow-matching loss draws noise and t
    total = _LossModule(model)([t2i, und])[0]
    torch.manual_seed(0)
    assert torch.allclose(total, model(**t2i).loss + model(**und).loss)
    mixed = Trainer(TrainConfig(batch_size=6), tmp_path / "mixed")._joint_batches(0)
    assert len(mixed) == 1 and mixed[0]["input_ids"].shape[0] == 6
