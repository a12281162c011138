"""A small ELF reader: sections, loadable segments and symbols of 32- and 64-bit little-endian ELF.

Enough to size a firmware image, load it into an emulator and find symbols by name; written here
so the mcu layer needs no extra dependency.
"""

from __future__ import annotations

import os
import pathlib
import struct

import attrs

from tuskml.mcu_targets.errors import ElfError

SHF_ALLOC = 0x2
SHT_NOBITS = 8
SHT_SYMTAB = 2
PT_LOAD = 1
STT_OBJECT = 1
STT_FUNC = 2


@attrs.frozen
class Section:
    name: str
    type: int
    flags: int
    address: int
    offset: int
    size: int

    @property
    def allocated(self) -> bool:
        return bool(self.flags & SHF_ALLOC)

    @property
    def nobits(self) -> bool:
        return self.type == SHT_NOBITS


@attrs.frozen
class Segment:
    """A PT_LOAD program header: ``file_size`` bytes at ``offset`` go to ``physical_address``."""

    virtual_address: int
    physical_address: int
    offset: int
    file_size: int
    memory_size: int
    flags: int


@attrs.frozen
class Symbol:
    name: str
    value: int
    size: int
    type: int
    section_index: int

    @property
    def is_function(self) -> bool:
        return self.type == STT_FUNC

    @property
    def address(self) -> int:
        """The symbol's address without the Thumb bit (bit 0 of a Thumb function's value)."""
        return self.value & ~1 if self.is_function else self.value


class ElfFile:
    """A parsed ELF file; ``data`` keeps the raw bytes for reading segment contents."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = pathlib.Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as exc:
            raise ElfError(f"cannot read ELF file {self.path}: {exc.strerror}") from exc
        d = self.data
        if len(d) < 52 or d[:4] != b"\x7fELF":
            raise ElfError(f"{self.path} is not an ELF file")
        if d[5] != 1:
            raise ElfError(f"{self.path} is big-endian; only little-endian ELF is supported")
        self.is_64 = d[4] == 2
        if self.is_64:
            (self.machine,) = struct.unpack_from("<H", d, 18)
            self.entry, phoff, shoff = struct.unpack_from("<QQQ", d, 24)
            phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", d, 54)
        else:
            (self.machine,) = struct.unpack_from("<H", d, 18)
            self.entry, phoff, shoff = struct.unpack_from("<III", d, 24)
            phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", d, 42)
        self.sections = self._read_sections(shoff, shentsize, shnum, shstrndx)
        self.segments = self._read_segments(phoff, phentsize, phnum)
        self.symbols = self._read_symbols()
        self._by_name = {s.name: s for s in self.symbols if s.name}

    def _read_sections(self, shoff: int, shentsize: int, shnum: int, shstrndx: int) -> list[Section]:
        raw = []
        for i in range(shnum):
            base = shoff + i * shentsize
            if self.is_64:
                name, typ, flags, addr, off, size = struct.unpack_from("<IIQQQQ", self.data, base)
            else:
                name, typ, flags, addr, off, size = struct.unpack_from("<IIIIII", self.data, base)
            raw.append((name, typ, flags, addr, off, size))
        if not raw:
            return []
        strtab_off, strtab_size = raw[shstrndx][4], raw[shstrndx][5]
        strtab = self.data[strtab_off : strtab_off + strtab_size]
        return [Section(_cstr(strtab, n), t, f, a, o, s) for n, t, f, a, o, s in raw]

    def _read_segments(self, phoff: int, phentsize: int, phnum: int) -> list[Segment]:
        out = []
        for i in range(phnum):
            base = phoff + i * phentsize
            if self.is_64:
                typ, flags, off, vaddr, paddr, filesz, memsz = struct.unpack_from("<IIQQQQQ", self.data, base)
            else:
                typ, off, vaddr, paddr, filesz, memsz, flags = struct.unpack_from("<IIIIIII", self.data, base)
            if typ == PT_LOAD:
                out.append(Segment(vaddr, paddr, off, filesz, memsz, flags))
        return out

    def _read_symbols(self) -> list[Symbol]:
        symtab = next((s for s in self.sections if s.type == SHT_SYMTAB), None)
        if symtab is None:
            return []
        index = self.sections.index(symtab)
        # sh_link of the symtab is its string table; re-read it from the header
        strtab = self._linked_strtab(index)
        out = []
        entsize = 24 if self.is_64 else 16
        for base in range(symtab.offset, symtab.offset + symtab.size, entsize):
            if self.is_64:
                name, info, _other, shndx, value, size = struct.unpack_from("<IBBHQQ", self.data, base)
            else:
                name, value, size, info, _other, shndx = struct.unpack_from("<IIIBBH", self.data, base)
            out.append(Symbol(_cstr(strtab, name), value, size, info & 0xF, shndx))
        return out

    def _linked_strtab(self, section_index: int) -> bytes:
        d = self.data
        if self.is_64:
            shoff = struct.unpack_from("<Q", d, 40)[0]
            shentsize = struct.unpack_from("<H", d, 58)[0]
            link = struct.unpack_from("<I", d, shoff + section_index * shentsize + 40)[0]
        else:
            shoff = struct.unpack_from("<I", d, 32)[0]
            shentsize = struct.unpack_from("<H", d, 46)[0]
            link = struct.unpack_from("<I", d, shoff + section_index * shentsize + 24)[0]
        sec = self.sections[link]
        return d[sec.offset : sec.offset + sec.size]

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def symbol(self, name: str) -> Symbol:
        sym = self._by_name.get(name)
        if sym is None:
            import difflib

            close = difflib.get_close_matches(name, list(self._by_name), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ElfError(f"symbol {name!r} is not in {self.path.name}.{hint} (is it static or optimised away?)")
        return sym

    def has_symbol(self, name: str) -> bool:
        return name in self._by_name

    def functions(self) -> list[Symbol]:
        """Function symbols with a size, sorted by address."""
        return sorted((s for s in self.symbols if s.is_function and s.size > 0), key=lambda s: s.address)


def _cstr(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    return table[offset : end if end >= 0 else len(table)].decode("utf-8", "replace")
