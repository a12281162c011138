"""Run a Cortex-M firmware ELF on QEMU's ``mps2-an500`` board (a Cortex-M7), when QEMU is installed.

QEMU is the second, independent emulator: the exit code comes from semihosting
(SYS_EXIT_EXTENDED), exactly as with unicorn. With ``count_instructions=True`` QEMU translates one
instruction per block and logs every block it executes (``-d exec,nochain``); the log lines are
counted as they stream through a FIFO, giving the executed-instruction count and exclusive counts
per function to compare with unicorn's. That is slow (a log line per instruction): use it for
test programs, not whole models.

The mps2-an500 board has RAM at 0x00000000 (4 MB, code) and 0x20000000 (4 MB, data) and boots from
the vector table at 0x00000000, so the ELF must be linked with ``flash_origin=0`` (the default).
QEMU does not let us read memory back after exit; programs compare their own outputs and return
the verdict as exit code.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import threading

import attrs

from tuskml.mcu_targets.elf import ElfFile
from tuskml.mcu_targets.errors import ElfError, EmulatorError, EmulatorNotFoundError
from tuskml.mcu_targets.function_map import FunctionMap

QEMU = "qemu-system-arm"
MACHINE = "mps2-an500"
_TRACE_PC = re.compile(rb"^Trace \d+: \S+ \[[0-9a-f]+/([0-9a-f]+)/")


@attrs.frozen
class QemuResult:
    exit_code: int
    instructions: int | None
    per_function_self: dict[str, int] | None
    stdout: str
    emulator: str


def qemu_available() -> bool:
    return shutil.which(QEMU) is not None


@functools.cache
def qemu_version() -> tuple[int, int]:
    out = subprocess.run([QEMU, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"version (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def run_qemu(elf_path: str | os.PathLike[str], *, count_instructions: bool = False,
             timeout_s: float = 300.0) -> QemuResult:
    """Run ``elf_path`` on ``qemu-system-arm -M mps2-an500``; the exit code is the program's.

    Raises :class:`EmulatorNotFoundError` if QEMU is not installed (Debian: qemu-system-arm).
    """
    if not qemu_available():
        raise EmulatorNotFoundError(f"{QEMU} is not installed (Debian/Ubuntu: apt-get install qemu-system-arm)")
    path = pathlib.Path(elf_path)
    elf = ElfFile(path)
    vectors = elf.section(".isr_vector")
    if vectors is None or vectors.address != 0:
        where = "missing" if vectors is None else f"at {vectors.address:#x}"
        raise ElfError(f"{path.name}: the vector table is {where}; the {MACHINE} board boots from 0x0, "
                       f"so link with flash_origin=0")
    with tempfile.TemporaryDirectory(prefix="tk-qemu-") as tmp:
        stdout_path = pathlib.Path(tmp) / "stdout"
        # semihosting console text goes to a file chardev: with -nographic it would go to the
        # terminal, which is not there when stdout is not a tty
        cmd = [QEMU, "-M", MACHINE, "-nographic", "-monitor", "none", "-serial", "none",
               "-chardev", f"file,id=semihosting,path={stdout_path}",
               "-semihosting-config", "enable=on,target=native,chardev=semihosting", "-kernel", str(path)]
        counter: dict[str, object] = {}
        reader = None
        if count_instructions:
            fifo = pathlib.Path(tmp) / "exec.log"
            os.mkfifo(fifo)
            one_insn = ["-accel", "tcg,one-insn-per-tb=on"] if qemu_version() >= (8, 1) else ["-singlestep"]
            cmd[1:1] = [*one_insn, "-d", "exec,nochain", "-D", str(fifo)]
            reader = threading.Thread(target=_count_trace, args=(fifo, FunctionMap(elf), counter), daemon=True)
            reader.start()
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise EmulatorError(f"{path.name}: QEMU did not exit within {timeout_s} s") from exc
        finally:
            if reader is not None:
                # if QEMU never opened the FIFO, open it ourselves so the reader unblocks
                if reader.is_alive() and not counter.get("opened"):
                    with open(fifo, "wb"):
                        pass
                reader.join(timeout=60)
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        if stderr and proc.returncode != 0 and not counter.get("total"):
            raise EmulatorError(f"{path.name}: QEMU failed (exit {proc.returncode}): {stderr[-2000:]}")
        stdout = stdout_path.read_bytes().decode("utf-8", "replace") if stdout_path.exists() else ""
    return QemuResult(
        exit_code=proc.returncode,
        instructions=counter.get("total") if count_instructions else None,  # type: ignore[arg-type]
        per_function_self=counter.get("per_function") if count_instructions else None,  # type: ignore[arg-type]
        stdout=stdout,
        emulator=f"qemu-system-arm {'.'.join(map(str, qemu_version()))} ({MACHINE})",
    )


def _count_trace(fifo: pathlib.Path, funcs: FunctionMap, counter: dict[str, object]) -> None:
    per_pc: dict[bytes, int] = {}
    with open(fifo, "rb") as fh:
        counter["opened"] = True
        for line in fh:
            m = _TRACE_PC.match(line)
            if m:
                key = m.group(1)
                per_pc[key] = per_pc.get(key, 0) + 1
    per_function: dict[str, int] = {}
    for pc, n in per_pc.items():
        name = funcs.name_of(int(pc, 16))
        if name.startswith("<unknown"):
            name = "<unknown>"
        per_function[name] = per_function.get(name, 0) + n
    counter["total"] = sum(per_pc.values())
    counter["per_function"] = per_function
