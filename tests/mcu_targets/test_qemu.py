"""unicorn and QEMU mps2-an500 must agree: exit codes, instruction counts, per-function counts.

Skips only when qemu-system-arm is not installed (CI installs it for the emulator leg).
"""

from __future__ import annotations

import pytest

from tuskml.mcu_targets.emulators import qemu_available, run_qemu, run_unicorn
from tuskml.mcu_targets.errors import ElfError, EmulatorNotFoundError

needs_qemu = pytest.mark.skipif(not qemu_available(), reason="qemu-system-arm is not installed")


@needs_qemu
@pytest.mark.parametrize("target", ["stm32f746", "stm32f411"])
@pytest.mark.parametrize("program,defines", [("arith", {}), ("counting", {}), ("misbehave", {"MODE": 3})])
def test_emulators_agree(build_program, target, program, defines):
    elf = build_program(target, program, **defines).elf
    uc = run_unicorn(elf, cpu="cortex-m7")
    qemu = run_qemu(elf, count_instructions=True)
    assert qemu.exit_code == uc.exit_code & 0xFF  # a process exit status is 8 bits
    assert qemu.instructions == uc.instructions
    assert qemu.per_function_self == uc.per_function_self
    if program == "arith":
        assert qemu.stdout == "arith done\n"


@needs_qemu
def test_fault_exits_through_the_fault_handler(build_program):
    # unicorn reports the unmapped write as an error; on the board model it is a bus fault -> 0xFA
    assert run_qemu(build_program("stm32f746", "misbehave", MODE=1).elf).exit_code == 0xFA


@needs_qemu
def test_qemu_needs_flash_at_zero(tmp_path):
    import pathlib

    import tuskml
    from tuskml.mcu_targets.toolchains import build

    programs = pathlib.Path(__file__).parent / "programs"
    t = tuskml.create("hardware_targets", "stm32f746", flash_origin=0x08000000)
    res = build(t, [programs / "misbehave.c"], out_dir=tmp_path, defines={"MODE": 3})
    assert run_unicorn(res.elf).exit_code == -3  # unicorn maps whatever the ELF asks for
    with pytest.raises(ElfError, match="flash_origin=0"):
        run_qemu(res.elf)


def test_missing_qemu_is_a_clear_error(monkeypatch, build_program):
    import tuskml.mcu_targets.qemu_emulator as q

    monkeypatch.setattr(q, "QEMU", "qemu-system-arm-not-installed")
    with pytest.raises(EmulatorNotFoundError, match="apt-get install qemu-system-arm"):
        q.run_qemu(build_program("stm32f746", "counting").elf)
