from __future__ import annotations

import pytest

import tuskml
from tuskml.mcu_targets.errors import McuTargetError
from tuskml.mcu_targets.linker import linker_script
from tuskml.testing import check_component


@pytest.mark.parametrize("name", ["host", "stm32f746", "stm32f411"])
def test_targets_are_registered_and_conform(name, tmp_path):
    assert name in tuskml.list_components("hardware_targets")
    check_component("hardware_targets", name, tmp_path)


def test_board_facts():
    f7 = tuskml.create("hardware_targets", "stm32f746")
    assert (f7.flash_bytes, f7.sram_bytes, f7.clock_hz) == (1024 * 1024, 320 * 1024, 216_000_000)
    assert f7.cpu.name == "cortex-m7" and f7.cpu.fpu == "fpv5-d16" and f7.has_dsp
    f4 = tuskml.create("hardware_targets", "stm32f411")
    assert (f4.flash_bytes, f4.sram_bytes, f4.clock_hz) == (512 * 1024, 128 * 1024, 100_000_000)
    assert f4.cpu.name == "cortex-m4" and f4.cpu.fpu == "fpv4-sp-d16"
    host = tuskml.create("hardware_targets", "host")
    assert host.is_host and host.flash_bytes is None


def test_overrides_and_bad_values():
    small = tuskml.create("hardware_targets", "stm32f746", sram_bytes=64 * 1024)
    assert small.sram_bytes == 64 * 1024
    with pytest.raises(tuskml.ConfigError, match="sram_bytes"):
        tuskml.create("hardware_targets", "stm32f746", sram_bytes=-1)
    with pytest.raises(tuskml.ConfigError, match="flash_origin"):
        tuskml.create("hardware_targets", "stm32f746", flash_origin=3)
    with pytest.raises(McuTargetError, match="stack_bytes"):
        tuskml.create("hardware_targets", "stm32f411", stack_bytes=128 * 1024)


def test_check_fits_names_region_and_excess():
    f4 = tuskml.create("hardware_targets", "stm32f411")
    f4.check_fits(500 * 1024, 100 * 1024)
    with pytest.raises(McuTargetError, match=r"flash 525312 B > 524288 B \(over by 1024 B\)"):
        f4.check_fits(513 * 1024, 1)
    with pytest.raises(McuTargetError, match=r"over by 1 B"):
        f4.check_fits(1, 128 * 1024 - f4.stack_bytes + 1)
    tuskml.create("hardware_targets", "host").check_fits(10**12, 10**12)


def test_linker_script_has_the_board_sizes():
    script = linker_script(tuskml.create("hardware_targets", "stm32f411", stack_bytes=4096))
    assert "LENGTH = 524288" in script and "LENGTH = 131072" in script and ". = . + 4096" in script
    with pytest.raises(McuTargetError, match="host"):
        linker_script(tuskml.create("hardware_targets", "host"))
