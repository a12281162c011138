"""Linker scripts for Cortex-M targets, written from the target's memory sizes.

FLASH holds the vector table, code, read-only data (the model's weights) and the initial values of
.data; RAM holds .data, .bss (the tensor arena) and a reserved stack. Because the stack is a
section inside RAM, a program whose arena leaves less than ``stack_bytes`` free fails to link with
"region RAM overflowed" instead of silently corrupting memory at run time. The same script works
with GNU ld (arm-none-eabi-gcc) and LLVM lld (zig cc).
"""

from __future__ import annotations

from tuskml.mcu_targets.errors import McuTargetError
from tuskml.mcu_targets.targets import HardwareTarget

#: Section names the size accounting (toolchains.section_sizes) knows about.
FLASH_SECTIONS = (".isr_vector", ".text", ".rodata", ".ARM.exidx")
RAM_SECTIONS = (".data", ".bss", ".stack")


def linker_script(target: HardwareTarget) -> str:
    """The GNU-ld-syntax linker script for ``target`` (a Cortex-M target)."""
    if target.is_host or target.flash_bytes is None or target.sram_bytes is None:
        raise McuTargetError(f"target {target.name!r} is the host: it is linked by the native compiler, not a script")
    return f"""/* Written by tuskml.mcu_targets.linker for {target.name}: {target.description}.
   {target.flash_bytes} B flash, {target.sram_bytes} B SRAM of which {target.stack_bytes} B stack. */
ENTRY(Reset_Handler)

MEMORY
{{
  FLASH (rx)  : ORIGIN = {target.flash_origin:#010x}, LENGTH = {target.flash_bytes}
  RAM   (rwx) : ORIGIN = {target.sram_origin:#010x}, LENGTH = {target.sram_bytes}
}}

SECTIONS
{{
  .isr_vector :
  {{
    KEEP(*(.isr_vector))
  }} > FLASH

  .text :
  {{
    *(.text .text.*)
    . = ALIGN(4);
  }} > FLASH

  .rodata :
  {{
    *(.rodata .rodata.*)
    . = ALIGN(4);
  }} > FLASH

  .ARM.exidx :
  {{
    *(.ARM.exidx .ARM.exidx.* .gnu.linkonce.armexidx.*)
  }} > FLASH

  .data :
  {{
    . = ALIGN(4);
    _sdata = .;
    *(.data .data.*)
    . = ALIGN(4);
    _edata = .;
  }} > RAM AT > FLASH
  _sidata = LOADADDR(.data);

  .bss (NOLOAD) :
  {{
    . = ALIGN(4);
    _sbss = .;
    *(.bss .bss.* COMMON)
    . = ALIGN(4);
    _ebss = .;
  }} > RAM

  .stack (NOLOAD) :
  {{
    . = ALIGN(8);
    _sstack = .;
    . = . + {target.stack_bytes};
    . = ALIGN(8);
    _estack = .;
  }} > RAM

  /DISCARD/ :
  {{
    *(.comment) *(.note*) *(.ARM.attributes.discard)
  }}
}}
"""
