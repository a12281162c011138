"""The deploy pipeline end to end: model -> int8 graph -> C -> firmware -> emulator -> bit-exact.

Each deploy compiles a C project and runs it in unicorn (a few seconds each), so the expensive
results are module fixtures shared by several tests.
"""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import tuskml
from tuskml.backends.sparse_engine.example_models import TinyCNN
from tuskml.core.cli import build_cli
from tuskml.plugins.tinyformer.deploy import DeployError, ModelDoesNotFitError, deploy, load_model

CNN = "tuskml.backends.sparse_engine.example_models:tiny_cnn"
MOBILEVIT = "tuskml.backends.sparse_engine.example_models:tiny_mobilevit"
JSON_KEYS = {"target", "backend", "toolchain", "emulator", "bit_exact", "flash_bytes", "sram_bytes", "arena_bytes",
             "instructions", "layers"}


def digits_cnn() -> nn.Module:
    """A TinyCNN for the 1-channel digits dataset (a factory the CLI can import as test_deploy:digits_cnn)."""
    torch.manual_seed(1)
    return TinyCNN(in_channels=1)


class WideLinear(nn.Module):
    """Flash hog: a 3072 x 256 linear layer (786 KB of int8 weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Linear(3 * 32 * 32, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.flatten(1))


@pytest.fixture(scope="module")
def cnn_m7(tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn-m7")
    return deploy(CNN, target="stm32f746", out_dir=out, input_shape=(3, 32, 32), test_samples=2,
                  calibration_samples=8)


def test_cnn_on_emulated_m7_is_bit_exact_with_per_layer_counts(cnn_m7):
    r = cnn_m7
    assert r.bit_exact and r.mismatching_bytes == 0 and r.exit_code == 0 and r.samples == 2
    assert r.target == "stm32f746" and r.backend == "c" and "cortex-m7" in r.emulator
    assert r.toolchain.split()[0] in ("zig-cc", "arm-none-eabi-gcc")
    assert 0 < r.flash_bytes <= r.flash_limit and 0 < r.sram_bytes <= r.sram_limit
    assert r.sram_bytes >= r.arena_bytes + 8192  # arena + reserved stack are in the linked SRAM
    assert r.arena_bytes < r.naive_arena_bytes and r.peak_live
    compute = [l for l in r.layers if l.kind in ("conv2d", "depthwise_conv2d", "fully_connected")]
    assert compute and all(l.instructions > 0 and l.weight_bytes > 0 for l in compute)
    layer_sum = sum(l.instructions for l in r.layers)
    # tk_invoke = the layers + copying the input in and the output out
    assert 0.95 * r.instructions <= layer_sum <= r.instructions
    assert r.instructions_total > 2 * r.instructions  # two samples plus startup and the comparison
    assert r.latency_ms_estimate == pytest.approx(r.instructions / 216e6 * 1e3)
    assert pathlib.Path(r.elf).is_file() and (pathlib.Path(r.out_dir) / "src" / "tk_model.c").is_file()
    assert r.accuracy is not None and r.accuracy["max_abs_error"] < 0.5


def test_report_json_and_table(cnn_m7):
    data = json.loads(json.dumps(cnn_m7.as_dict()))
    assert JSON_KEYS <= set(data)
    assert data["layers"][0]["function"] == "tk_layer_0" and data["layers"][0]["instructions"] > 0
    table = cnn_m7.table()
    assert "bit-exact   yes" in table and "stem.0" in table and "instructions" in table


def test_instruction_counts_are_repeatable(cnn_m7, tmp_path):
    again = deploy(CNN, target="stm32f746", out_dir=tmp_path, input_shape=(3, 32, 32), test_samples=2,
                   calibration_samples=8)
    assert again.instructions == cnn_m7.instructions
    assert [l.instructions for l in again.layers] == [l.instructions for l in cnn_m7.layers]


def test_sparse_mobilevit_on_m7_is_bit_exact_and_uses_sparse_kernels(tmp_path):
    r = deploy(MOBILEVIT, target="stm32f746", out_dir=tmp_path, input_shape=(3, 32, 32), sparsity=0.75, block=4,
               test_samples=1, calibration_samples=8, force_format="sparse")
    assert r.bit_exact, r.table()
    kinds = {l.kind for l in r.layers}
    assert {"layer_norm", "softmax", "batch_matmul", "fully_connected"} <= kinds
    sparse = [l for l in r.layers if l.format.startswith("sparse")]
    assert sparse and all(l.instructions > 0 for l in sparse)


def test_host_target_is_bit_exact_without_instruction_counts(tmp_path):
    r = deploy(CNN, target="host", out_dir=tmp_path, input_shape=(3, 16, 16), test_samples=3, calibration_samples=4)
    assert r.bit_exact and r.emulator == "host (native)" and r.samples == 3
    assert r.instructions is None and all(l.instructions is None for l in r.layers)


def test_sram_does_not_fit_is_reported_before_linking(tmp_path):
    small = tuskml.create("hardware_targets", "stm32f411", sram_bytes=16 * 1024)
    with pytest.raises(ModelDoesNotFitError) as info:
        deploy(CNN, target=small, out_dir=tmp_path, input_shape=(3, 32, 32), calibration_samples=4)
    msg = str(info.value)
    assert "stm32f411" in msg and "SRAM" in msg and "exceeds 16384 B by" in msg
    assert "live at the peak" in msg and "stem_0" in msg  # the tensors to blame
    assert "Nothing was compiled or linked" in msg
    assert not (tmp_path / "build").exists() and not (tmp_path / "src").exists()


def test_flash_does_not_fit_names_the_layer(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ModelDoesNotFitError) as info:
        deploy(WideLinear(), target="stm32f411", out_dir=tmp_path, input_shape=(3, 32, 32), calibration_samples=4)
    msg = str(info.value)
    assert "flash" in msg and "exceeds 524288 B by" in msg and "classifier" in msg
    assert not (tmp_path / "build").exists()


def test_sparsity_makes_it_fit(tmp_path):
    """The same flash hog fits the M4 once 75% of its weight blocks are pruned (encoded size counts)."""
    torch.manual_seed(0)
    r = deploy(WideLinear(), target="stm32f411", out_dir=tmp_path, input_shape=(3, 32, 32), calibration_samples=4,
               test_samples=1, sparsity=0.75, block=8)
    assert r.bit_exact and r.flash_bytes <= 512 * 1024 and "cortex-m4" in r.emulator
    assert r.layers[-1].format == "sparse(B=8)" or any(l.format.startswith("sparse") for l in r.layers)


def test_checkpoint_model(tmp_path):
    """<model> may be a tuskml checkpoint: register a model component, save it, deploy the file."""
    from tuskml.core.plugins import register_plugin, unregister_plugin

    @tuskml.config_class
    class DeployTestCNNConfig(tuskml.ModelConfig):
        width: int = 8

    class Plugin:
        @staticmethod
        @tuskml.hookimpl
        def tuskml_models():
            yield tuskml.ComponentSpec(name="deploy-test-cnn", factory=lambda cfg: TinyCNN(width=cfg.width),
                                       config_cls=DeployTestCNNConfig, description="test model")

    register_plugin(Plugin, name="deploy-test")
    try:
        model = tuskml.create("models", "deploy-test-cnn")
        ckpt = tuskml.save(model, tmp_path / "cnn.safetensors")
        loaded, name = load_model(str(ckpt))
        assert isinstance(loaded, TinyCNN) and name.endswith("cnn.safetensors")
        r = deploy(str(ckpt), target="host", out_dir=tmp_path / "out", input_shape=(3, 16, 16), test_samples=1,
                   calibration_samples=4)
        assert r.bit_exact
    finally:
        unregister_plugin("deploy-test")


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(DeployError, match="neither an existing checkpoint"):
        load_model("no/such/file.safetensors")
    with pytest.raises(DeployError, match="cannot import the factory"):
        load_model("tuskml.nope:factory")
    with pytest.raises(DeployError, match="not a torch.nn.Module"):
        load_model("tuskml.mcu_targets.targets:HostTargetConfig")
    with pytest.raises(tuskml.UnknownComponentError, match="Did you mean 'reference'"):
        deploy(CNN, backend="referense", out_dir=tmp_path)
    with pytest.raises(DeployError, match="cannot be deployed"):
        deploy(CNN, backend="reference", out_dir=tmp_path)
    with pytest.raises(DeployError, match="input shape"):
        deploy(CNN, out_dir=tmp_path)
    with pytest.raises(tuskml.UnknownComponentError, match="stm32f746"):
        deploy(CNN, target="stm32f764", out_dir=tmp_path, input_shape=(3, 8, 8))
    with pytest.raises(DeployError, match="sparsity"):
        deploy(CNN, sparsity=1.5, out_dir=tmp_path, input_shape=(3, 8, 8))


def test_cli_deploy_with_dataset_and_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "report.json"
    result = CliRunner().invoke(build_cli(), [
        "tinyformer", "deploy", "test_deploy:digits_cnn", "--target", "stm32f746", "--out", "build",
        "--dataset", "digits", "--samples", "1", "--calibration-samples", "4", "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert "bit-exact   yes" in result.output and "report written to" in result.output
    data = json.loads(report.read_text())
    assert JSON_KEYS <= set(data) and data["bit_exact"] is True and data["target"] == "stm32f746"
    assert data["instructions"] > 0 and len(data["layers"]) >= 5 and (tmp_path / "build" / "build" / "model.elf").is_file()


def test_cli_errors_are_one_line(tmp_path):
    cli = build_cli()
    result = CliRunner().invoke(cli, ["tinyformer", "deploy", "not.a.module:nothing", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "cannot import the factory" in result.output
    result = CliRunner().invoke(cli, ["tinyformer", "deploy", CNN, "--input-shape", "3,abc", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--input-shape" in result.output


def _qemu_available() -> bool:
    from tuskml.mcu_targets.emulators import qemu_available

    return qemu_available()


@pytest.mark.skipif(not _qemu_available(), reason="qemu-system-arm is not installed")
def test_qemu_agrees_with_unicorn_on_a_generated_model(tmp_path):
    """Whole generated model: same exit code and the same exact instruction counts in both emulators."""
    from tuskml.mcu_targets.emulators import run_qemu, run_unicorn

    r = deploy(CNN, target="stm32f746", out_dir=tmp_path / "u", input_shape=(3, 12, 12), test_samples=1,
               calibration_samples=4)
    assert r.bit_exact
    uc = run_unicorn(r.elf)
    qemu = run_qemu(r.elf, count_instructions=True)
    assert qemu.exit_code == uc.exit_code == 0
    assert qemu.instructions == uc.instructions == r.instructions_total
    assert qemu.per_function_self == uc.per_function_self
    via_qemu = deploy(CNN, target="stm32f746", out_dir=tmp_path / "q", input_shape=(3, 12, 12), test_samples=1,
                      calibration_samples=4, emulator="qemu")
    assert via_qemu.bit_exact and via_qemu.emulator.startswith("qemu-system-arm") and via_qemu.instructions is None


def test_linker_is_the_safety_net_when_the_estimate_is_low(cnn_m7, tmp_path, monkeypatch):
    """If the footprint estimate ever lets a too-big model through, the linker refuses and the
    error still names the biggest layers. (Simulated: the pre-link check is switched off.)"""
    import tuskml.plugins.tinyformer.deploy as deploy_module
    from tuskml.backends.sparse_engine.footprint import compute_footprint

    monkeypatch.setattr(deploy_module, "_check_fits",
                        lambda target, dep: compute_footprint(dep.graph, dep.plan, stack_bytes=target.stack_bytes))
    tight = tuskml.create("hardware_targets", "stm32f746", flash_bytes=cnn_m7.flash_bytes // 2 // 4 * 4)
    with pytest.raises(ModelDoesNotFitError, match=r"region FLASH .* overflowed by \d+ bytes") as info:
        deploy(CNN, target=tight, out_dir=tmp_path, input_shape=(3, 32, 32), test_samples=2, calibration_samples=8)
    assert "footprint estimate" in str(info.value) and "largest layers" in str(info.value)
