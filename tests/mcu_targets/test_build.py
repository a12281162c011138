from __future__ import annotations

import pytest

import tuskml
from tuskml.mcu_targets.elf import ElfFile
from tuskml.mcu_targets.errors import BuildError, LinkerOverflowError, ToolchainNotFoundError
from tuskml.mcu_targets.toolchains import available_toolchains, build, find_toolchain, parse_linker_overflow

PROGRAMS = __import__("pathlib").Path(__file__).parent / "programs"


@pytest.mark.parametrize("target", ["stm32f746", "stm32f411"])
def test_cortex_m_build_sizes_come_from_sections(build_program, target):
    res = build_program(target, "arith")
    assert res.elf.is_file() and res.target == target
    assert res.toolchain.split()[0] in ("zig-cc", "arm-none-eabi-gcc")
    s = res.sections
    t = tuskml.create("hardware_targets", target)
    assert res.flash_bytes == s[".isr_vector"] + s[".text"] + s.get(".rodata", 0) + s.get(".ARM.exidx", 0) + s.get(".data", 0)
    assert res.sram_bytes == s.get(".data", 0) + s.get(".bss", 0) + s[".stack"]
    assert s[".stack"] == t.stack_bytes
    elf = ElfFile(res.elf)
    assert elf.machine == 40 and elf.section(".isr_vector").address == t.flash_origin
    assert elf.symbol("tk_output").address >= t.sram_origin


def test_hard_float_matches_the_fpu(build_program):
    """The M7 has a double-precision FPU (no soft-float helpers); the M4F only single precision."""
    m7 = ElfFile(build_program("stm32f746", "arith").elf)
    m4 = ElfFile(build_program("stm32f411", "arith").elf)
    assert not any(s.name.startswith("__aeabi_d") for s in m7.symbols)
    assert any(s.name.startswith("__aeabi_d") for s in m4.symbols)


def test_our_memcpy_is_linked(build_program):
    elf = ElfFile(build_program("stm32f746", "arith").elf)
    memcpy = elf.symbol("memcpy")
    assert memcpy.is_function and memcpy.size > 0


def test_host_build_runs(build_program):
    from tuskml.mcu_targets.emulators import run_target

    res = build_program("host", "arith")
    out = run_target(res)
    vals = [int(v) for v in out.stdout.split()]
    inp = [1, -2, 3, -4, 5] + [0] * 59
    assert vals[0] == sum(v * v for v in inp) and vals[2] == sum(inp) and vals[3] == 3 * sum(inp)
    assert out.exit_code == sum(vals) & 0x7F


def test_ram_overflow_is_a_clear_error_with_exact_excess(build_program, tmp_path):
    t = tuskml.create("hardware_targets", "stm32f411")
    fits = build_program("stm32f411", "big_arrays", RAM_BYTES=4096)
    extra = t.sram_bytes - fits.sram_bytes + 1000  # 1000 bytes too many
    with pytest.raises(LinkerOverflowError, match=r"region RAM \(131072 B\) overflowed by 1000 bytes") as info:
        build("stm32f411", [PROGRAMS / "big_arrays.c"], out_dir=tmp_path, defines={"RAM_BYTES": 4096 + extra})
    assert info.value.region == "RAM" and info.value.bytes_over == 1000
    assert "stm32f411" in str(info.value) and "stack" in str(info.value)


def test_flash_overflow_is_a_clear_error(build_program, tmp_path):
    t = tuskml.create("hardware_targets", "stm32f746")
    fits = build_program("stm32f746", "big_arrays", FLASH_BYTES=4096)
    extra = t.flash_bytes - fits.flash_bytes + 24
    with pytest.raises(LinkerOverflowError, match="FLASH") as info:
        build("stm32f746", [PROGRAMS / "big_arrays.c"], out_dir=tmp_path, defines={"FLASH_BYTES": 4096 + extra})
    # lld reports exactly 24; GNU ld may add up to 8 bytes of section alignment padding
    assert info.value.region == "FLASH" and 24 <= info.value.bytes_over <= 32


def test_parse_linker_overflow_gnu_and_lld():
    gnu = "ld: firmware.elf section `.bss' will not fit in region `RAM'\nld: region `RAM' overflowed by 1234 bytes"
    assert parse_linker_overflow(gnu) == {"RAM": (1234, [])}
    lld = ("ld.lld: error: section '.bss' will not fit in region 'RAM': overflowed by 10 bytes\n"
           "ld.lld: error: section '.stack' will not fit in region 'RAM': overflowed by 8202 bytes")
    assert parse_linker_overflow(lld) == {"RAM": (8202, [".bss", ".stack"])}


def test_compile_error_and_missing_source(tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void) { return undefined_thing; }\n")
    with pytest.raises(BuildError, match="undefined_thing"):
        build("stm32f746", [bad], out_dir=tmp_path / "out")
    with pytest.raises(BuildError, match="not found"):
        build("stm32f746", [tmp_path / "nope.c"], out_dir=tmp_path / "out")


def test_toolchain_choice(monkeypatch):
    assert find_toolchain("host").name == "host-cc"
    names = available_toolchains("stm32f746")
    assert "zig-cc" in names  # ziglang is a dependency of tuskml[mcu]
    assert find_toolchain("stm32f746", "zig").name == "zig-cc"
    with pytest.raises(ToolchainNotFoundError, match="unknown toolchain"):
        find_toolchain("stm32f746", "msvc")
    if "arm-none-eabi-gcc" not in names:
        monkeypatch.setenv("TUSKML_TOOLCHAIN", "gcc")
        with pytest.raises(ToolchainNotFoundError, match="not installed"):
            find_toolchain("stm32f746")
