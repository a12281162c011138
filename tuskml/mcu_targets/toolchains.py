"""C toolchains for the targets, and ``build()``: sources -> a sized, linker-checked ELF.

Cortex-M: ``arm-none-eabi-gcc`` when it is on PATH, else the PyPI ``ziglang`` package's clang
(``python -m ziglang cc -target thumb-freestanding-eabihf -mcpu=cortex_m7``), so a plain
``pip install tuskml[mcu]`` can build firmware. ``TUSKML_TOOLCHAIN=gcc|zig`` forces one. Firmware is
freestanding: no newlib, our own startup code (``runtime/startup_cortexm.c``) and weak
memcpy/memset (``runtime/tk_libc.c``). Host: the native ``cc``.

Flash and SRAM use are read from the ELF's section headers, so they are what the linker placed,
not an estimate. A program that does not fit is a :class:`LinkerOverflowError` naming the region
and by how many bytes it is over.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

import attrs

from tuskml.mcu_targets.elf import ElfFile
from tuskml.mcu_targets.errors import BuildError, LinkerOverflowError, ToolchainNotFoundError
from tuskml.mcu_targets.linker import linker_script
from tuskml.mcu_targets.targets import HardwareTarget, get_target

RUNTIME_DIR = pathlib.Path(__file__).parent / "runtime"
RUNTIME_SOURCES = (RUNTIME_DIR / "startup_cortexm.c", RUNTIME_DIR / "tk_libc.c")

# Flags every freestanding Cortex-M build gets, whichever compiler.
_FREESTANDING = (
    "-ffreestanding", "-ffunction-sections", "-fdata-sections", "-fno-unwind-tables",
    "-fno-asynchronous-unwind-tables", "-Wl,--gc-sections", "-Wl,--entry=Reset_Handler", "-g",
)


@attrs.frozen
class BuildResult:
    """What ``build()`` made. ``elf`` is the firmware ELF (or the host executable).

    ``flash_bytes``: code + read-only data + initial values of .data. ``sram_bytes``: .data + .bss +
    the reserved stack (what the linker checks against the target's SRAM). ``sections`` gives the
    size of every allocated section.
    """

    elf: pathlib.Path
    target: str
    toolchain: str
    flash_bytes: int
    sram_bytes: int
    sections: dict[str, int]
    command: tuple[str, ...]


class Toolchain:
    """A compiler driver that compiles and links C sources for one kind of target."""

    name = "?"

    def version(self) -> str:
        raise NotImplementedError

    def command(self, target: HardwareTarget, sources: Sequence[pathlib.Path], include_dirs: Sequence[pathlib.Path],
                defines: Mapping[str, object], output: pathlib.Path, script: pathlib.Path | None,
                extra_flags: Sequence[str]) -> list[str]:
        raise NotImplementedError

    @property
    def label(self) -> str:
        return f"{self.name} {self.version()}"


def _define_flags(defines: Mapping[str, object]) -> list[str]:
    return [f"-D{k}" if v is None or v is True else f"-D{k}={v}" for k, v in defines.items()]


class ArmNoneEabiGcc(Toolchain):
    """GNU Arm Embedded (Debian ``gcc-arm-none-eabi``)."""

    name = "arm-none-eabi-gcc"

    def __init__(self, executable: str = "arm-none-eabi-gcc"):
        self.executable = executable

    @functools.cache  # noqa: B019 - a handful of long-lived toolchain objects
    def version(self) -> str:
        return _run_quiet([self.executable, "-dumpversion"]) or "?"

    def command(self, target, sources, include_dirs, defines, output, script, extra_flags):
        assert target.cpu is not None
        return [
            self.executable, *target.cpu.gcc_flags, target.config.optimization, *_FREESTANDING, "-nostdlib",
            # gcc turns copy loops into memcpy calls even when freestanding; memcpy itself is such a loop
            "-fno-tree-loop-distribute-patterns",
            *(f"-I{d}" for d in include_dirs), *_define_flags(defines), *extra_flags,
            "-T", str(script), "-o", str(output), *map(str, sources), "-lgcc",
        ]


class ZigCc(Toolchain):
    """clang/lld from the PyPI ``ziglang`` package, run as ``python -m ziglang cc``."""

    name = "zig-cc"

    def __init__(self, python: str = sys.executable):
        self.python = python

    @functools.cache  # noqa: B019 - a handful of long-lived toolchain objects
    def version(self) -> str:
        return _run_quiet([self.python, "-m", "ziglang", "version"]) or "?"

    def command(self, target, sources, include_dirs, defines, output, script, extra_flags):
        assert target.cpu is not None
        return [
            self.python, "-m", "ziglang", "cc", "-target", target.cpu.zig_target, f"-mcpu={target.cpu.zig_cpu}",
            # no -nostdlib: for a freestanding target zig links only its compiler_rt (soft-float and
            # 64-bit division helpers), never a libc; our weak memcpy/memset come first
            target.config.optimization, *_FREESTANDING, "-fno-sanitize=all",
            *(f"-I{d}" for d in include_dirs), *_define_flags(defines), *extra_flags,
            "-T", str(script), "-o", str(output), *map(str, sources),
        ]


class HostCc(Toolchain):
    """The host's C compiler (``cc``), producing a normal executable."""

    name = "host-cc"

    def __init__(self, executable: str = "cc"):
        self.executable = executable

    @functools.cache  # noqa: B019 - a handful of long-lived toolchain objects
    def version(self) -> str:
        first = (_run_quiet([self.executable, "--version"]) or "?").splitlines()[0]
        return first

    def command(self, target, sources, include_dirs, defines, output, script, extra_flags):
        return [
            self.executable, target.config.optimization, "-g", "-ffunction-sections", "-fdata-sections",
            *(f"-I{d}" for d in include_dirs), *_define_flags(defines), *extra_flags,
            "-o", str(output), *map(str, sources), "-lm",
        ]


def _run_quiet(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _zig_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ziglang") is not None


def available_toolchains(target: str | HardwareTarget) -> list[str]:
    """Names of the toolchains that can build for ``target`` here, preferred first."""
    t = get_target(target)
    if t.is_host:
        return ["host-cc"] if shutil.which(t.config.compiler) else []
    names = []
    if shutil.which("arm-none-eabi-gcc"):
        names.append("arm-none-eabi-gcc")
    if _zig_available():
        names.append("zig-cc")
    return names


def find_toolchain(target: str | HardwareTarget, prefer: str | None = None) -> Toolchain:
    """The toolchain for ``target``: ``prefer`` (or ``$TUSKML_TOOLCHAIN``: gcc / zig), else the first available."""
    t = get_target(target)
    if t.is_host:
        if not shutil.which(t.config.compiler):
            raise ToolchainNotFoundError(f"target 'host': C compiler {t.config.compiler!r} is not on PATH")
        return HostCc(t.config.compiler)
    choice = (prefer or os.environ.get("TUSKML_TOOLCHAIN", "")).strip().lower()
    aliases = {"gcc": "arm-none-eabi-gcc", "arm-none-eabi-gcc": "arm-none-eabi-gcc", "zig": "zig-cc", "zig-cc": "zig-cc"}
    if choice and choice not in aliases:
        raise ToolchainNotFoundError(f"unknown toolchain {choice!r}; use one of: gcc, zig")
    available = available_toolchains(t)
    wanted = aliases.get(choice)
    if wanted and wanted not in available:
        raise ToolchainNotFoundError(
            f"toolchain {wanted!r} was requested for target {t.name!r} but is not installed "
            f"(available: {', '.join(available) or 'none'})"
        )
    pick = wanted or (available[0] if available else None)
    if pick == "arm-none-eabi-gcc":
        return ArmNoneEabiGcc()
    if pick == "zig-cc":
        return ZigCc()
    raise ToolchainNotFoundError(
        f"no compiler for target {t.name!r} ({t.cpu.name if t.cpu else '?'}): install the PyPI package "
        f"'ziglang' (pip install 'tuskml[mcu]') or Debian's gcc-arm-none-eabi"
    )


_GNU_OVERFLOW = re.compile(r"region [`'\"]?(\w+)['\"]? overflowed by (\d+) bytes")
_LLD_OVERFLOW = re.compile(r"section '([^']+)' will not fit in region '(\w+)': overflowed by (\d+) bytes")


def parse_linker_overflow(output: str) -> dict[str, tuple[int, list[str]]]:
    """region -> (bytes over, sections named) from GNU ld or lld output; empty if none overflowed."""
    found: dict[str, tuple[int, list[str]]] = {}
    for section, region, over in _LLD_OVERFLOW.findall(output):
        prev, secs = found.get(region, (0, []))
        found[region] = (max(prev, int(over)), secs + [section])
    for region, over in _GNU_OVERFLOW.findall(output):
        prev, secs = found.get(region, (0, []))
        found[region] = (max(prev, int(over)), secs)
    return found


def section_sizes(elf: ElfFile, target: HardwareTarget) -> tuple[int, int, dict[str, int]]:
    """(flash bytes, SRAM bytes, {section: size}) of a linked image, from its section headers."""
    flash = sram = 0
    sizes: dict[str, int] = {}
    for sec in elf.sections:
        if not sec.allocated or sec.size == 0:
            continue
        sizes[sec.name] = sizes.get(sec.name, 0) + sec.size
        if target.is_host:
            # host: writable data and bss count as SRAM, the rest as "flash" (code + constants)
            writable = bool(sec.flags & 0x1)
            if sec.nobits or writable:
                sram += sec.size
                if not sec.nobits:
                    flash += sec.size
            else:
                flash += sec.size
            continue
        in_ram = target.sram_origin <= sec.address < target.sram_origin + (target.sram_bytes or 0)
        if in_ram:
            sram += sec.size
            if not sec.nobits:
                flash += sec.size  # initial values of .data live in flash
        else:
            flash += sec.size
    return flash, sram, sizes


def build(target: str | HardwareTarget, sources: Sequence[str | os.PathLike[str]], *,
          include_dirs: Sequence[str | os.PathLike[str]] = (), out_dir: str | os.PathLike[str],
          defines: Mapping[str, object] | None = None, name: str = "firmware",
          extra_flags: Sequence[str] = (), toolchain: str | Toolchain | None = None) -> BuildResult:
    """Compile and link ``sources`` for ``target`` into ``out_dir/name.elf``.

    Cortex-M builds add the startup code and weak memcpy/memset and use a linker script written
    from the target's sizes (kept as ``out_dir/name.ld``). Raises :class:`LinkerOverflowError` if
    the program does not fit, :class:`BuildError` for any other compiler or linker failure.
    """
    t = get_target(target)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    srcs = [pathlib.Path(s) for s in sources]
    missing = [str(s) for s in srcs if not s.is_file()]
    if missing:
        raise BuildError(f"build for {t.name!r}: source file(s) not found: {', '.join(missing)}")
    if not srcs:
        raise BuildError(f"build for {t.name!r}: no source files given")
    tc = toolchain if isinstance(toolchain, Toolchain) else find_toolchain(t, toolchain)
    incs = [pathlib.Path(d) for d in include_dirs]
    script = None
    if t.is_host:
        output = out / name
    else:
        output = out / f"{name}.elf"
        script = out / f"{name}.ld"
        script.write_text(linker_script(t))
        srcs = [*srcs, *RUNTIME_SOURCES]
        incs = [*incs, RUNTIME_DIR, RUNTIME_DIR / "include"]
    cmd = tc.command(t, srcs, incs, dict(defines or {}), output, script, extra_flags)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except OSError as exc:
        raise BuildError(f"build for {t.name!r}: cannot run {cmd[0]!r}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"build for {t.name!r}: {tc.name} took longer than {exc.timeout} s") from exc
    log = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        overflow = parse_linker_overflow(log)
        if overflow:
            parts = []
            for region, (over, secs) in overflow.items():
                size = t.flash_bytes if region.upper() == "FLASH" else t.sram_bytes
                where = f" (sections {', '.join(dict.fromkeys(secs))})" if secs else ""
                parts.append(f"region {region} ({size} B) overflowed by {over} bytes{where}")
            region, (over, _) = max(overflow.items(), key=lambda kv: kv[1][0])
            hint = f" (the RAM region includes the reserved stack of {t.stack_bytes} B)" if "RAM" in overflow else ""
            raise LinkerOverflowError(
                f"program {name!r} does not fit target {t.name!r}: " + "; ".join(parts) + hint,
                region=region, bytes_over=over,
            )
        tail = "\n".join(log.strip().splitlines()[-40:])
        raise BuildError(f"build for {t.name!r} with {tc.name} failed (exit {proc.returncode}):\n"
                         f"$ {' '.join(cmd)}\n{tail}")
    elf = ElfFile(output)
    flash, sram, sizes = section_sizes(elf, t)
    return BuildResult(elf=output, target=t.name, toolchain=tc.label, flash_bytes=flash, sram_bytes=sram,
                       sections=sizes, command=tuple(cmd))
