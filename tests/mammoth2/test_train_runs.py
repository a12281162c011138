"""Whole training runs on a micro model: kill -9 + --resume continues exactly; 2-process DDP agrees;
the CLI's eval writes report.json and the grids."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import attrs
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

MICRO = """
batch_size = 4
task_batch = [2, 1, 2]
lr = 2e-3
warmup_steps = 2
checkpoint_every = 4
log_every = 2
progress = false
[data]
image_size = 16
length = 1000
[tokenizer]
steps = 2
batch_size = 8
warmup_steps = 1
[[stages]]
name = "frozen-backbone"
steps = 2
frozen = ["backbone"]
[[stages]]
name = "full"
steps = 12
[model]
type = "mammoth2"
image_size = 16
[model.visual_tokenizer]
type = "vq"
hidden_channels = 8
num_downsamples = 2
codebook_size = 32
code_dim = 4
[model.backbone]
type = "mammoth2-ar"
hidden_size = 32
num_layers = 2
num_heads = 2
num_kv_heads = 1
head_dim = 16
intermediate_size = 64
[model.backbone.experts]
type = "ffn"
start_layer = 1
[model.vision_encoder]
type = "timm-vit"
patch_size = 8
embed_dim = 32
depth = 1
num_heads = 2
[model.aligner]
type = "mammoth2"
layers = [-1, -2]
num_queries = 4
qformer_depth = 1
refiner_depth = 1
[model.decoder]
type = "mammoth2-dit"
patch_size = 2
hidden_size = 16
depth = 1
num_heads = 2
num_kv_heads = 1
rope_axes_dim = [2, 2, 4]
"""
TOTAL = 16
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    folder = tmp_path_factory.mktemp("micro")
    path = folder / "micro.toml"
    path.write_text(MICRO)
    return path


@pytest.fixture(scope="module")
def reference_run(micro):
    """An uninterrupted run, in process."""
    from tuskml.plugins.mammoth2.configs_train import load_train_config
    from tuskml.plugins.mammoth2.train import train

    out = micro.parent / "reference"
    # the same intra-op thread count as the subprocess runs (ENV): float sums depend on it
    threads = torch.get_num_threads()
    torch.set_num_threads(int(ENV["OMP_NUM_THREADS"]))
    try:
        result = train(load_train_config(micro), out)
    finally:
        torch.set_num_threads(threads)
    assert result["steps"] == TOTAL and result["ranks_agree"]
    return out


def _latest_step(run: pathlib.Path) -> int:
    pointer = run / "checkpoints" / "latest"
    return int(pointer.read_text().split("-")[1]) if pointer.is_file() else -1


def test_kill_9_then_resume_continues_exactly(micro, reference_run):
    run = micro.parent / "killed"
    cmd = [sys.executable, "-m", "tuskml.plugins.mammoth2.train", "--config", str(micro), "--out", str(run)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while _latest_step(run) < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _latest_step(run)
    assert 4 <= killed_at < TOTAL, f"the run was not killed mid-way (latest checkpoint {killed_at})"
    assert not (run / "pipeline").exists() and not (run / "train_summary.json").exists()
    from tuskml.plugins.mammoth2.evaluate import load_run_pipeline

    assert load_run_pipeline(run).model.config.image_size == 16  # an unfinished run loads from its checkpoint
    done = subprocess.run(cmd + ["--resume"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["steps"] == TOTAL
    # exact continuation: the resumed run ends bit-identical to the uninterrupted one
    final = f"checkpoints/step-{TOTAL:07d}"
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a, b = load_file(str(reference_run / final / name)), load_file(str(run / final / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after kill -9 + resume"


def test_prefetch_gives_the_same_run(micro, reference_run):
    """Batches built a step ahead in the background thread: bit-identical weights at the end."""
    from tuskml.plugins.mammoth2.configs_train import load_train_config
    from tuskml.plugins.mammoth2.train import Trainer

    config = load_train_config(micro)
    assert not config.prefetch
    out = micro.parent / "prefetch"
    threads = torch.get_num_threads()
    torch.set_num_threads(int(ENV["OMP_NUM_THREADS"]))
    try:
        trainer = Trainer(attrs.evolve(config, prefetch=True), out)
        submitted = []
        submit = trainer._joint_batches_no_grad
        trainer._joint_batches_no_grad = lambda step: (submitted.append(step), submit(step))[1]
        assert trainer.train()["steps"] == TOTAL
    finally:
        torch.set_num_threads(threads)
    assert submitted == list(range(1, TOTAL - 2))  # every joint step but the first came from the thread
    final = f"checkpoints/step-{TOTAL:07d}"
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a, b = load_file(str(reference_run / final / name)), load_file(str(out / final / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name} differs with prefetch"


def test_resume_refuses_a_changed_config(micro, reference_run, tmp_path):
    from tuskml.plugins.mammoth2.configs_train import load_train_config
    from tuskml.plugins.mammoth2.train import Trainer, TrainingError

    changed = tmp_path / "changed.toml"
    changed.write_text(MICRO.replace("lr = 2e-3", "lr = 1e-3"))
    with pytest.raises(TrainingError, match="config differs"):
        Trainer(load_train_config(changed), reference_run, resume=True)


def test_ddp_two_processes_agree_on_sharded_data(micro):
    import socket

    run = micro.parent / "ddp"
    with socket.socket() as sock:  # a free port, so parallel test runs do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "tuskml.plugins.mammoth2.train", "--config", str(micro), "--out", str(run)]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 2 and all(r["world_size"] == 2 and r["ranks_agree"] for r in results)
    assert results[0]["loss"] != results[1]["loss"], "both ranks saw the same batch: data is not sharded"
    assert results[0]["samples_seen"] == 2 * (2 * 8 + 14 * (2 + 1 + 2))  # tokenizer, then task_batch steps
    assert sorted(p.name for p in (run / "checkpoints" / f"step-{TOTAL:07d}").glob("rng-rank*")) == \
        ["rng-rank0.safetensors", "rng-rank1.safetensors"]


def test_cli_eval_generate_ask(reference_run, tmp_path):
    from tuskml.core.cli import build_cli
    from tuskml.plugins.mammoth2.configs_data import ShapesWorldConfig
    from tuskml.plugins.mammoth2.shapes_world import ShapesWorld

    cli = build_cli()
    runner = CliRunner()
    res = runner.invoke(cli, ["mammoth2", "eval", str(reference_run), "--out", str(tmp_path / "eval"),
                              "--per-category", "1", "--steps", "2"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    for cat in ("single_object", "two_object", "counting", "colors", "position", "color_attr", "overall"):
        assert 0.0 <= report["geneval"][cat] <= 1.0
        assert 0.0 <= report["geneval_plan"][cat] <= 1.0  # the AR plans on their own (VQ-decoded)
    for kind in ("recolour", "remove", "add", "replace"):
        assert kind in report["edit"]["success"] and kind in report["edit"]["preservation"]
        assert kind in report["edit_plan"]["success"] and kind in report["edit_plan"]["preservation"]
    for kind in ("count", "colour", "presence", "position", "caption"):
        assert kind in report["understanding"]["accuracy"]
    assert (tmp_path / "eval" / "geneval_grid.png").is_file() and (tmp_path / "eval" / "edit_grid.png").is_file()

    res = runner.invoke(cli, ["mammoth2", "generate", str(reference_run), "a red circle", "--out",
                              str(tmp_path / "gen"), "--steps", "2"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "gen").glob("*.png"))) == 1
    from PIL import Image

    img = tmp_path / "src.png"
    Image.fromarray(ShapesWorld(ShapesWorldConfig(image_size=16))[0].image).save(img)
    res = runner.invoke(cli, ["mammoth2", "ask", str(reference_run), str(img), "how many circles?",
                              "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    shown = runner.invoke(cli, ["mammoth2", "ask", str(reference_run), str(img), "how many circles?",
                                "--max-new-tokens", "4", "--show-description"])
    assert shown.exit_code == 0 and shown.output == res.output  # not describe_first: the same text
    res = runner.invoke(cli, ["mammoth2", "edit", str(reference_run), str(img), "remove the red circle",
                              "--out", str(tmp_path / "edited.png"), "--steps", "2"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "edited.png").is_file()
    res = runner.invoke(cli, ["mammoth2", "eval", str(tmp_path), "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "not a mammoth2 run folder" in res.output
