"""The generated C built for the STM32F746 (Cortex-M7, DSP asm path) and run in the unicorn emulator:
bit-exact with reference.py, exact instruction counts per layer. Skips only when no Cortex-M
toolchain (arm-none-eabi-gcc or the PyPI ziglang) is installed; CI installs ziglang."""

from __future__ import annotations

import numpy as np
import pytest
from _models import quantized_models
from test_ops_graph import build_all_ops_graph

from tuskml.backends.c.codegen import generate_c_project
from tuskml.backends.sparse_engine.memory_plan import plan_memory
from tuskml.backends.sparse_engine.reference import run_integer

TARGET = "stm32f746"


def _toolchain_or_skip():
    from tuskml.mcu_targets.toolchains import available_toolchains

    if not available_toolchains(TARGET):
        pytest.skip("no Cortex-M toolchain (arm-none-eabi-gcc or ziglang) installed")


@pytest.fixture(scope="module")
def models():
    _toolchain_or_skip()
    return quantized_models()


def _run_firmware(project, tmp_path, n_out_bytes):
    from tuskml.mcu_targets.emulators import run_unicorn
    from tuskml.mcu_targets.toolchains import build

    result = build(TARGET, project.firmware_sources, include_dirs=project.include_dirs, out_dir=tmp_path / "fw",
                   name="model")
    return run_unicorn(result.elf, outputs={"tk_test_outputs": n_out_bytes}, cpu="cortex-m7")


CASES = [("cnn-dense", False), ("cnn-dense", True), ("mobilevit-sparse", True)]


@pytest.fixture(scope="module")
def m7_runs(models, tmp_path_factory):
    """Each case generated, built and emulated once for the whole module."""
    runs = {}
    for name, use_dsp in CASES:
        graph, xq, ref = models[name]
        tmp = tmp_path_factory.mktemp(f"{name}-{use_dsp}")
        project = generate_c_project(graph, plan_memory(graph), tmp / "src", use_dsp=use_dsp, test_inputs=xq[:1],
                                     expected_outputs=ref[:1])
        runs[name, use_dsp] = (project, _run_firmware(project, tmp, project.output_bytes))
    return runs


@pytest.mark.parametrize("name,use_dsp", CASES)
def test_model_bit_exact_on_emulated_m7(models, m7_runs, name, use_dsp):
    graph, xq, ref = models[name]
    project, run = m7_runs[name, use_dsp]
    got = np.frombuffer(run.outputs["tk_test_outputs"], dtype=np.int8)
    np.testing.assert_array_equal(got, ref[:1].reshape(-1))
    assert run.exit_code == 0  # the firmware's own comparison agrees
    compute = [layer.function for layer in project.layers if layer.op in ("conv2d", "fully_connected")]
    assert all(run.per_function[f] > 0 for f in compute)
    assert run.per_function["tk_invoke"] >= sum(run.per_function.get(layer.function, 0) for layer in project.layers)


def test_dsp_path_is_cheaper_on_m7(models, m7_runs):
    graph = models["cnn-dense"][0]
    portable = m7_runs["cnn-dense", False][1].per_function
    dsp = m7_runs["cnn-dense", True][1].per_function
    dense_layers = [i for i, n in enumerate(graph.nodes) if n.op in ("conv2d", "fully_connected")]
    assert dense_layers
    for i in dense_layers:
        assert dsp[f"tk_layer_{i}"] < portable[f"tk_layer_{i}"], graph.nodes[i].name


def test_every_op_bit_exact_on_m7_with_dsp_asm(tmp_path):
    """The all-ops graph on the M7: the SXTB16/SMLAD inline asm path against reference.py."""
    _toolchain_or_skip()
    from tuskml.mcu_targets.emulators import run_unicorn
    from tuskml.mcu_targets.toolchains import build

    for seed in (11, 12):
        graph, feeds = build_all_ops_graph(seed)
        expected = run_integer(graph, feeds)
        data = np.concatenate([feeds[n].reshape(-1) for n in graph.inputs])
        project = generate_c_project(graph, plan_memory(graph), tmp_path / f"s{seed}", use_dsp=True,
                                     test_inputs=data)
        result = build(TARGET, project.firmware_sources, include_dirs=project.include_dirs,
                       out_dir=tmp_path / f"fw{seed}", name="ops")
        run = run_unicorn(result.elf, outputs={"tk_test_outputs": project.output_bytes}, cpu="cortex-m7")
        got = np.frombuffer(run.outputs["tk_test_outputs"], dtype=np.int8)
        pos = 0
        for name in graph.outputs:
            size = graph.tensors[name].size
            np.testing.assert_array_equal(got[pos:pos + size], expected[name].reshape(-1), err_msg=f"{name} seed {seed}")
            pos += size


def test_c_backend_on_emulated_cortex_m4(models):
    """The `c` engine backend with a Cortex-M4 target (stm32f411): bit-exact, per-layer counts."""
    import tuskml

    graph, xq, ref = models["mobilevit-sparse"]
    result = tuskml.create("engine_backend", "c", target="stm32f411", use_dsp=True).run(graph, xq[:1])
    np.testing.assert_array_equal(result.outputs, ref[:1])
    assert result.instructions["tk_invoke"] > 0
    assert sum(v for k, v in result.instructions.items() if k.startswith("tk_layer_")) <= result.instructions["tk_invoke"]
