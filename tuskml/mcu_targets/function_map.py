"""Address -> function lookup for an ELF, shared by the emulators' per-function counters."""

from __future__ import annotations

import bisect

from tuskml.mcu_targets.elf import ElfFile


class FunctionMap:
    """Sorted function ranges of an ELF. Index ``-1`` means "in no known function"."""

    def __init__(self, elf: ElfFile):
        funcs = elf.functions()
        # static functions of the same name in two files share one name in the counts
        self.names = [f.name for f in funcs]
        self.starts = [f.address for f in funcs]
        self.ends = [f.address + f.size for f in funcs]
        self.entries = {f.address: i for i, f in enumerate(funcs)}

    def index_of(self, address: int) -> int:
        i = bisect.bisect_right(self.starts, address) - 1
        if i >= 0 and address < self.ends[i]:
            return i
        return -1

    def name_of(self, address: int) -> str:
        i = self.index_of(address)
        return self.names[i] if i >= 0 else f"<unknown {address:#x}>"
