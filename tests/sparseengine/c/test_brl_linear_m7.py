"""Block-sparse (BRL) linear layers on the emulated Cortex-M7 with the DSP path: the single-row
accumulate pass (hand-scheduled B = 16 loop, C loops for other block sizes) followed by the shared
requant row must match reference.py bit for bit, including rows with no stored block, a padded
tail block (K not a multiple of B) and an odd row count (row pairs, then one single row)."""

from __future__ import annotations

import numpy as np
import pytest

from tuskml.backends.c.codegen import generate_c_project
from tuskml.backends.sparse_engine import fixedpoint as fp
from tuskml.backends.sparse_engine.ir import Graph, Node, Tensor
from tuskml.backends.sparse_engine.memory_plan import plan_memory
from tuskml.backends.sparse_engine.reference import run_integer

TARGET = "stm32f746"


def _linear_graph(rows: int, k: int, o: int, block: int, sparsity: float, act_min: int, seed: int):
    rng = np.random.default_rng(seed)
    kp = -(-k // block) * block
    w = rng.integers(-127, 128, size=(o, kp), dtype=np.int8)
    keep = rng.random((o, kp // block)) >= sparsity
    keep[0] = False  # an output row with no stored block at all
    keep[1] = True  # and a fully dense one
    w = np.where(np.repeat(keep, block, axis=1), w, 0)[:, :k].astype(np.int8)
    g = Graph(quantized=True, name="brl_linear")
    g.add_tensor(Tensor(name="x", shape=(rows, k), dtype="int8", scale=0.02, zero_point=-3))
    g.add_tensor(Tensor(name="y", shape=(rows, o), dtype="int8", scale=0.05, zero_point=2))
    g.add_tensor(Tensor(name="w", shape=w.shape, dtype="int8", scale=np.full(o, 0.01), data=w))
    g.add_tensor(Tensor(name="b", shape=(o,), dtype="int32", scale=np.full(o, 2e-4),
                        data=rng.integers(-3000, 3000, size=o).astype(np.int32)))
    mult, shift = fp.quantize_multipliers(rng.uniform(1e-3, 4e-3, size=o))
    g.add_node(Node(name="fc", op="fully_connected", inputs=["x", "w", "b"], outputs=["y"],
                    attrs=dict(requant_multiplier=mult, requant_shift=shift, act_min=act_min, act_max=127,
                               sparse_block=block), module_path="fc"))
    g.inputs, g.outputs = ["x"], ["y"]
    return g, rng.integers(-128, 128, size=(rows, k), dtype=np.int8)


# act_min -128: the SSAT (full int8) requant loop; -100: the general clamp loop
@pytest.mark.parametrize("rows,k,o,block,sparsity,act_min", [
    (1, 256, 64, 16, 0.9, -128),
    (3, 40, 24, 16, 0.5, -100),  # K % B != 0: row pair, then the single-row path
    (1, 40, 16, 16, 0.5, -100),
    (1, 64, 20, 8, 0.75, -128),
    (1, 36, 20, 4, 0.5, -100),
    (1, 48, 20, 12, 0.5, -128),
])
def test_brl_linear_bit_exact_on_m7(tmp_path, rows, k, o, block, sparsity, act_min):
    from tuskml.mcu_targets.emulators import run_unicorn
    from tuskml.mcu_targets.toolchains import available_toolchains, build

    if not available_toolchains(TARGET):
        pytest.skip("no Cortex-M toolchain (arm-none-eabi-gcc or ziglang) installed")
    g, x = _linear_graph(rows, k, o, block, sparsity, act_min, seed=rows * 1000 + k + block)
    expected = run_integer(g, x)["y"].reshape(-1)
    project = generate_c_project(g, plan_memory(g), tmp_path / "src", use_dsp=True, test_inputs=x,
                                 expected_outputs=expected)
    result = build(TARGET, project.firmware_sources, include_dirs=project.include_dirs, out_dir=tmp_path / "fw",
                   name="brl")
    run = run_unicorn(result.elf, outputs={"tk_test_outputs": project.output_bytes}, cpu="cortex-m7")
    np.testing.assert_array_equal(np.frombuffer(run.outputs["tk_test_outputs"], dtype=np.int8), expected)
    assert run.exit_code == 0
    assert run.per_function["tk_layer_0"] > 0
