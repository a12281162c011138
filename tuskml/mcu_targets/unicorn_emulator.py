"""Run a Cortex-M firmware ELF in unicorn and count its instructions exactly, per function.

Why this shape:
- ``Uc(UC_ARCH_ARM, UC_MODE_THUMB)`` then ``ctl_set_cpu_model(UC_CPU_ARM_CORTEX_M7)``: with
  ``UC_MODE_MCLASS`` unicorn silently ignores the model and emulates a Cortex-M33.
- Counting: a block hook adds the number of instructions of each executed basic block (counted
  once per block with capstone and cached). That is exact (every executed instruction is in
  exactly one executed block; an IT instruction and the instructions it skips count as executed,
  as on the hardware) and ~5x faster than a per-instruction hook.
- Per function: a shadow call stack follows calls (a block starting at a function's entry),
  returns (a block outside the current function) and tail calls, so ``per_function[name]`` is
  *inclusive* (the function and everything it calls) and ``per_function_self`` exclusive.
- The program ends with semihosting (``bkpt 0xAB``, SYS_EXIT / SYS_EXIT_EXTENDED) like on QEMU;
  SYS_WRITE0 / SYS_WRITEC / SYS_WRITE text is collected in ``stdout``.
- Inputs are written when execution first reaches ``main`` (after the startup code has copied
  .data and zeroed .bss, which would otherwise overwrite them); outputs are read after exit.

The emulator does not model cycles: ``EmulatorResult.cycles_estimate`` is instructions x a
documented CPI guess and nothing more.
"""

from __future__ import annotations

import os
import pathlib
import struct
from collections.abc import Mapping

import attrs

from tuskml.mcu_targets.elf import ElfFile
from tuskml.mcu_targets.errors import ElfError, EmulatorError
from tuskml.mcu_targets.function_map import FunctionMap

SEMIHOSTING_BKPT = b"\xab\xbe"  # bkpt 0xAB, Thumb encoding
SYS_WRITEC, SYS_WRITE0, SYS_WRITE, SYS_EXIT, SYS_EXIT_EXTENDED = 0x03, 0x04, 0x05, 0x18, 0x20
ADP_STOPPED_APPLICATION_EXIT = 0x20026
EXCP_BKPT = 7
PAGE = 0x1000
SCS_BASE = 0xE000E000  # System Control Space: the startup code writes CPACR there to enable the FPU
#: Cycles per instruction assumed for ``cycles_estimate`` (a Cortex-M7 dual-issues some pairs and
#: stalls on flash wait states; 1.0 is a round, documented guess, not a measurement).
ESTIMATED_CPI = 1.0

CPU_MODELS = {"cortex-m7": "UC_CPU_ARM_CORTEX_M7", "cortex-m4": "UC_CPU_ARM_CORTEX_M4",
              "cortex-m3": "UC_CPU_ARM_CORTEX_M3", "cortex-m33": "UC_CPU_ARM_CORTEX_M33"}


@attrs.frozen
class EmulatorResult:
    """What an emulated run produced.

    ``instructions``: executed instructions, exact. ``per_function``: inclusive counts by function
    name; ``per_function_self``: exclusive; ``calls``: how often each function was entered.
    """

    exit_code: int
    outputs: dict[str, bytes]
    instructions: int
    per_function: dict[str, int]
    per_function_self: dict[str, int]
    calls: dict[str, int]
    stdout: str
    emulator: str
    cycles_estimate: int

    def function(self, name: str) -> int:
        """Inclusive instructions of function ``name``; a clear error if it never ran."""
        if name not in self.per_function:
            ran = ", ".join(sorted(self.per_function)[:20])
            raise EmulatorError(f"function {name!r} did not run (or is not in the ELF); functions that ran: {ran}")
        return self.per_function[name]


def _pages(start: int, end: int) -> tuple[int, int]:
    lo = start & ~(PAGE - 1)
    hi = (end + PAGE - 1) & ~(PAGE - 1)
    return lo, hi


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


class _Run:
    """State of one emulation; ``make_block_hook`` returns the hot block hook as a closure."""

    def __init__(self, elf: ElfFile, count_functions: bool, max_instructions: int):
        import capstone

        self.elf = elf
        self.funcs = FunctionMap(elf)
        self.count_functions = count_functions
        self.max_instructions = max_instructions
        self.cs = capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_THUMB | capstone.CS_MODE_MCLASS)
        self.total = 0
        n = len(self.funcs.names)
        self.inclusive = [0] * n
        self.exclusive = [0] * n
        self.calls = [0] * n
        self.unknown = 0
        self.exit_code: int | None = None
        self.stdout: list[str] = []
        self.error: str | None = None
        self.finish_inclusive = lambda: None

    def count(self, uc, address: int, size: int) -> int:
        data = bytes(uc.mem_read(address, size))
        n = sum(1 for _ in self.cs.disasm_lite(data, address))
        if n == 0:
            raise EmulatorError(f"capstone cannot decode the block at {address:#x} ({self.funcs.name_of(address)})")
        return n

    def make_block_hook(self):
        """The block hook. Hot path: one dict lookup and a few integer operations per block.

        Inclusive counts need no per-block loop over the call stack: a frame remembers the total
        when it was pushed, and on pop its function gets ``total_now - total_at_push`` (only the
        outermost frame of a function counts, so recursion is not counted twice).
        """
        from unicorn.arm_const import UC_ARM_REG_LR, UC_ARM_REG_SP

        funcs = self.funcs
        starts, ends, entries = funcs.starts, funcs.ends, funcs.entries
        exclusive, inclusive, calls = self.exclusive, self.inclusive, self.calls
        depth = [0] * len(funcs.names)
        # frames: [function index, sp at entry, lr at entry, total at entry]
        stack: list[list[int]] = []
        blocks: dict[int, tuple[int, int, int, bool]] = {}  # address -> (size, n, function, is_entry)
        state = [0, -1]  # [total instructions, function index on top of the stack]
        limit = self.max_instructions
        count_functions = self.count_functions

        def push(fi: int, sp: int, lr: int) -> None:
            stack.append([fi, sp, lr, state[0]])
            calls[fi] += 1
            depth[fi] += 1
            state[1] = fi

        def pop() -> None:
            fi, _sp, _lr, started = stack.pop()
            depth[fi] -= 1
            if depth[fi] == 0:
                inclusive[fi] += state[0] - started
            state[1] = stack[-1][0] if stack else -1

        def finish() -> None:
            while stack:
                pop()

        self.finish_inclusive = finish

        def on_block(uc, address: int, size: int, _user) -> None:
            info = blocks.get(address)
            if info is None or info[0] != size:
                fi = funcs.index_of(address)
                info = (size, self.count(uc, address, size), fi, fi >= 0 and entries.get(address) == fi)
                blocks[address] = info
            _size, n, fi, is_entry = info
            total = state[0] + n
            state[0] = total
            if total > limit:
                self.error = (f"ran more than max_instructions={limit} instructions "
                              f"(pc {address:#x} in {funcs.name_of(address)})")
                uc.emu_stop()
                return
            if not count_functions:
                return
            if fi < 0:
                self.unknown += n
                return
            exclusive[fi] += n
            if fi == state[1] and not is_entry:
                return  # still inside the same function: the common case
            # the block's instructions were already added to `total`; frames pushed now must not
            # include them twice, and frames popped now must not include them: adjust by n
            state[0] = total - n
            if is_entry:
                sp = uc.reg_read(UC_ARM_REG_SP)
                lr = uc.reg_read(UC_ARM_REG_LR)
                top = stack[-1] if stack else None
                # a branch back to the first instruction of the current function (a loop whose
                # header is the entry block) keeps SP and LR; a call or recursion changes LR
                if not (top and top[0] == fi and top[1] == sp and top[2] == lr):
                    push(fi, sp, lr)
            else:
                while stack and not (starts[stack[-1][0]] <= address < ends[stack[-1][0]]):
                    pop()
                if not stack:
                    # entered a function not through its entry (the reset handler, or a jump
                    # into the middle of one): it becomes the root of the call stack
                    push(fi, 0, 0)
            state[0] = total

        def total() -> int:
            return state[0]

        self.get_total = total
        return on_block

    def on_interrupt(self, uc, intno: int, _user) -> None:
        from unicorn.arm_const import UC_ARM_REG_PC, UC_ARM_REG_R0, UC_ARM_REG_R1

        pc = uc.reg_read(UC_ARM_REG_PC)
        where = f"pc {pc:#x} in {self.funcs.name_of(pc)}"
        if intno != EXCP_BKPT or bytes(uc.mem_read(pc, 2)) != SEMIHOSTING_BKPT:
            self.error = f"CPU exception {intno} at {where} (not a semihosting call)"
            uc.emu_stop()
            return
        op, arg = uc.reg_read(UC_ARM_REG_R0), uc.reg_read(UC_ARM_REG_R1)
        result = 0
        if op == SYS_EXIT:
            self.exit_code = 0 if arg == ADP_STOPPED_APPLICATION_EXIT else 1
        elif op == SYS_EXIT_EXTENDED:
            reason, code = struct.unpack("<II", bytes(uc.mem_read(arg, 8)))
            self.exit_code = (code if code < 2**31 else code - 2**32) if reason == ADP_STOPPED_APPLICATION_EXIT else 1
        elif op == SYS_WRITEC:
            self.stdout.append(chr(uc.mem_read(arg, 1)[0]))
        elif op == SYS_WRITE0:
            self.stdout.append(_read_cstring(uc, arg))
        elif op == SYS_WRITE:
            _fd, ptr, length = struct.unpack("<III", bytes(uc.mem_read(arg, 12)))
            self.stdout.append(bytes(uc.mem_read(ptr, length)).decode("utf-8", "replace"))
        else:
            self.error = f"unsupported semihosting call {op:#x} at {where}"
            uc.emu_stop()
            return
        if self.exit_code is not None:
            uc.emu_stop()
            return
        uc.reg_write(UC_ARM_REG_R0, result)
        uc.reg_write(UC_ARM_REG_PC, (pc + 2) | 1)


def _read_cstring(uc, address: int, limit: int = 1 << 16) -> str:
    out = bytearray()
    while len(out) < limit:
        chunk = bytes(uc.mem_read(address + len(out), 64))
        end = chunk.find(b"\0")
        if end >= 0:
            out += chunk[:end]
            break
        out += chunk
    return out.decode("utf-8", "replace")


def _symbol_range(elf: ElfFile, name: str, nbytes: int | None, what: str) -> tuple[int, int]:
    sym = elf.symbol(name)
    size = sym.size if nbytes is None else nbytes
    if nbytes is not None and sym.size and nbytes > sym.size:
        raise ElfError(f"{what} {name!r}: asked for {nbytes} bytes but the symbol has only {sym.size}")
    return sym.address, size


def run_unicorn(elf_path: str | os.PathLike[str], *, inputs: Mapping[str, bytes] | None = None,
                outputs: Mapping[str, int | None] | None = None, count_functions: bool = True,
                max_instructions: int = 2_000_000_000, cpu: str = "cortex-m7") -> EmulatorResult:
    """Run ``elf_path`` on an emulated Cortex-M (``cpu``: cortex-m7 or cortex-m4) until it exits.

    ``inputs``: symbol -> bytes written into the program when it reaches ``main``.
    ``outputs``: symbol -> number of bytes to read back after exit (``None``: the symbol's size).
    Raises :class:`EmulatorError` if the program faults, touches unmapped memory, makes an unknown
    semihosting call, or runs more than ``max_instructions`` instructions.
    """
    import unicorn
    from unicorn import arm_const

    path = pathlib.Path(elf_path)
    elf = ElfFile(path)
    if elf.machine != 40:
        raise ElfError(f"{path} is not an ARM ELF (e_machine {elf.machine}); build it for a Cortex-M target")
    if cpu not in CPU_MODELS:
        raise EmulatorError(f"unknown cpu {cpu!r} for unicorn; use one of {', '.join(CPU_MODELS)}")
    in_ranges = {k: (_symbol_range(elf, k, len(v), "input"), bytes(v)) for k, v in (inputs or {}).items()}
    out_ranges = {k: _symbol_range(elf, k, n, "output") for k, n in (outputs or {}).items()}

    uc = unicorn.Uc(unicorn.UC_ARCH_ARM, unicorn.UC_MODE_THUMB)
    uc.ctl_set_cpu_model(getattr(arm_const, CPU_MODELS[cpu]))
    ranges = [_pages(SCS_BASE, SCS_BASE + PAGE)]
    for seg in elf.segments:
        if seg.memory_size:
            ranges.append(_pages(seg.virtual_address, seg.virtual_address + seg.memory_size))
        if seg.file_size:
            ranges.append(_pages(seg.physical_address, seg.physical_address + seg.file_size))
    for name in ("_sstack", "_estack"):
        if elf.has_symbol(name):
            addr = elf.symbol(name).value
            ranges.append(_pages(addr - 8, addr))
    for lo, hi in _merge(ranges):
        uc.mem_map(lo, hi - lo)
    for seg in elf.segments:
        if seg.file_size:
            uc.mem_write(seg.physical_address, elf.data[seg.offset : seg.offset + seg.file_size])

    vectors = elf.section(".isr_vector")
    if vectors is None:
        raise ElfError(f"{path} has no .isr_vector section: was it linked with tuskml's Cortex-M startup code?")
    sp, reset = struct.unpack("<II", bytes(uc.mem_read(vectors.address, 8)))
    uc.reg_write(arm_const.UC_ARM_REG_SP, sp)

    run = _Run(elf, count_functions, max_instructions)
    uc.hook_add(unicorn.UC_HOOK_BLOCK, run.make_block_hook())
    uc.hook_add(unicorn.UC_HOOK_INTR, run.on_interrupt)
    if in_ranges:
        main_addr = elf.symbol("main").address

        def write_inputs(uc, address, size, _user):
            if in_ranges:
                for (addr, _n), data in in_ranges.values():
                    uc.mem_write(addr, data)
                in_ranges.clear()

        uc.hook_add(unicorn.UC_HOOK_CODE, write_inputs, begin=main_addr, end=main_addr)
    try:
        uc.emu_start(reset | 1, 0xFFFFFFFF)
    except unicorn.UcError as exc:
        pc = uc.reg_read(arm_const.UC_ARM_REG_PC)
        raise EmulatorError(f"{path.name}: emulation stopped with {exc} at pc {pc:#x} in {run.funcs.name_of(pc)} "
                            f"after {run.get_total()} instructions") from exc
    run.finish_inclusive()
    run.total = run.get_total()
    if run.error:
        raise EmulatorError(f"{path.name}: {run.error}")
    if run.exit_code is None:
        pc = uc.reg_read(arm_const.UC_ARM_REG_PC)
        raise EmulatorError(f"{path.name}: stopped at pc {pc:#x} ({run.funcs.name_of(pc)}) without a semihosting exit")
    out = {k: bytes(uc.mem_read(addr, n)) for k, (addr, n) in out_ranges.items()}
    names = run.funcs.names
    per_function: dict[str, int] = {}
    per_self: dict[str, int] = {}
    calls: dict[str, int] = {}
    if count_functions:
        for i, name in enumerate(names):
            if run.inclusive[i] or run.calls[i]:
                per_function[name] = per_function.get(name, 0) + run.inclusive[i]
                per_self[name] = per_self.get(name, 0) + run.exclusive[i]
                calls[name] = calls.get(name, 0) + run.calls[i]
        if run.unknown:
            per_self["<unknown>"] = run.unknown
    return EmulatorResult(
        exit_code=run.exit_code, outputs=out, instructions=run.total, per_function=per_function,
        per_function_self=per_self, calls=calls, stdout="".join(run.stdout),
        emulator=f"unicorn {unicorn.__version__} ({cpu})", cycles_estimate=int(run.total * ESTIMATED_CPI),
    )
