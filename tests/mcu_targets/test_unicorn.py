from __future__ import annotations

import struct

import numpy as np
import pytest

from tuskml.mcu_targets.emulators import run_target, run_unicorn
from tuskml.mcu_targets.errors import ElfError, EmulatorError


def _arith_expected(inp: np.ndarray) -> list[int]:
    x = inp.astype(np.int64)
    s = int(x.sum())
    return [int((x * x).sum()), int((x[:32] * x[32:]).sum()), s, 3 * s]


@pytest.mark.parametrize("target,cpu", [("stm32f746", "cortex-m7"), ("stm32f411", "cortex-m4")])
def test_inputs_outputs_and_exit_code(build_program, target, cpu):
    elf = build_program(target, "arith").elf
    rng = np.random.default_rng(0)
    inp = rng.integers(-128, 128, size=64, dtype=np.int8)
    res = run_unicorn(elf, inputs={"tk_input": inp.tobytes()}, outputs={"tk_output": None, "tk_input": 64}, cpu=cpu)
    got = list(struct.unpack("<4i", res.outputs["tk_output"]))
    assert got == _arith_expected(inp)
    assert res.outputs["tk_input"] == inp.tobytes()
    assert res.exit_code == sum(got) & 0x7F
    assert res.stdout == "arith done\n"
    assert res.emulator.startswith("unicorn") and cpu in res.emulator


def test_default_data_is_copied_by_startup(build_program):
    res = run_target(build_program("stm32f746", "arith"), outputs={"tk_output": 16})
    inp = np.array([1, -2, 3, -4, 5] + [0] * 59, dtype=np.int8)
    assert list(struct.unpack("<4i", res.outputs["tk_output"])) == _arith_expected(inp)


@pytest.mark.parametrize("n", [1, 10, 37])
def test_instruction_counts_are_exact(build_program, n):
    elf = build_program("stm32f746", "counting").elf
    res = run_unicorn(elf, inputs={"tk_n": struct.pack("<i", n)}, outputs={"tk_result": 12})
    assert res.exit_code == 0
    assert struct.unpack("<3i", res.outputs["tk_result"]) == (n, 2 * n, int(n >= 5) + int(n - 10 >= 5))
    # count_loop(n) is 3n+3 instructions and ran for n and 2n; pick is 5 instructions, ran twice
    assert res.calls["count_loop"] == 2 and res.calls["pick"] == 2
    assert res.per_function["count_loop"] == (3 * n + 3) + (3 * 2 * n + 3)
    assert res.per_function["pick"] == 10
    assert res.per_function_self["count_loop"] == res.per_function["count_loop"]
    run_all = res.per_function["run_all"]
    assert run_all == res.per_function_self["run_all"] + res.per_function["count_loop"] + res.per_function["pick"]
    assert res.per_function["main"] > run_all
    # every instruction is attributed exactly once, and the root (reset handler) includes them all
    assert sum(res.per_function_self.values()) == res.instructions
    assert res.per_function["Reset_Handler"] == res.instructions


def test_counts_are_repeatable_and_linear(build_program):
    elf = build_program("stm32f746", "counting").elf
    a = run_unicorn(elf, inputs={"tk_n": struct.pack("<i", 20)})
    b = run_unicorn(elf, inputs={"tk_n": struct.pack("<i", 20)})
    c = run_unicorn(elf, inputs={"tk_n": struct.pack("<i", 21)})
    assert a.instructions == b.instructions and a.per_function == b.per_function
    assert c.instructions - a.instructions == 9  # one more iteration of 3 instructions, for n and for 2n (2)
    fast = run_unicorn(elf, inputs={"tk_n": struct.pack("<i", 20)}, count_functions=False)
    assert fast.instructions == a.instructions and fast.per_function == {}


def test_m7_and_m4_models_run_the_same_code(build_program):
    elf = build_program("stm32f411", "counting").elf
    assert run_unicorn(elf, cpu="cortex-m4").instructions == run_unicorn(elf, cpu="cortex-m7").instructions


def test_unmapped_access_is_an_error_naming_the_function(build_program):
    with pytest.raises(EmulatorError, match=r"main"):
        run_unicorn(build_program("stm32f746", "misbehave", MODE=1).elf)


def test_runaway_program_stops_at_max_instructions(build_program):
    with pytest.raises(EmulatorError, match="max_instructions=5000"):
        run_unicorn(build_program("stm32f746", "misbehave", MODE=2).elf, max_instructions=5000)


def test_negative_exit_code(build_program):
    assert run_unicorn(build_program("stm32f746", "misbehave", MODE=3).elf).exit_code == -3


def test_bad_symbol_and_bad_file(build_program, tmp_path):
    elf = build_program("stm32f746", "arith").elf
    with pytest.raises(ElfError, match="tk_outptu.*tk_output"):
        run_unicorn(elf, outputs={"tk_outptu": 4})
    with pytest.raises(ElfError, match="only 64"):
        run_unicorn(elf, inputs={"tk_input": bytes(65)})
    junk = tmp_path / "junk.elf"
    junk.write_bytes(b"hello")
    with pytest.raises(ElfError, match="not an ELF"):
        run_unicorn(junk)
    host = build_program("host", "arith").elf
    with pytest.raises(ElfError, match="not an ARM ELF"):
        run_unicorn(host)
    with pytest.raises(EmulatorError, match="unknown cpu"):
        run_unicorn(elf, cpu="cortex-a53")
