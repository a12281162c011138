"""Hardware targets: what a board is (memory sizes, CPU, clock) and how to compile for it.

This module is torch-free (``tuskml plugins list`` imports it). A target is described by its config
class (the fields a user may override, e.g. a board variant with more SRAM) plus fixed class-level
facts about its CPU. ``build_target(config)`` turns a config into a :class:`HardwareTarget`, the
object the toolchains, linker-script writer and emulators work with.

Memory map. Cortex-M builds link code at ``flash_origin`` (default ``0x00000000``) and data at
``sram_origin`` (``0x20000000``): that is where QEMU's ``mps2-an500`` board has RAM for code and data,
and where an STM32F4 aliases its flash when it boots from flash. To flash a real STM32 at its
native flash address set ``flash_origin=0x08000000`` (the emulators then still work with unicorn,
which maps whatever the ELF asks for, but not with QEMU's mps2 board).
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from tuskml.core.config import HardwareTargetConfig, config_class
from tuskml.mcu_targets.errors import McuTargetError

KIB = 1024


@attrs.frozen
class CortexM:
    """Fixed facts about one Cortex-M core: compiler spellings, FPU, DSP extension, emulator model."""

    name: str  #: "cortex-m7"
    gcc_flags: tuple[str, ...]  #: flags for arm-none-eabi-gcc
    zig_target: str  #: ``-target`` for ``zig cc``
    zig_cpu: str  #: ``-mcpu`` for ``zig cc`` (LLVM spelling, underscores)
    fpu: str  #: "fpv5-d16" (double precision) or "fpv4-sp-d16" (single precision)
    has_dsp: bool  #: SXTB16 / SMLAD and friends (ARMv7E-M)
    unicorn_cpu: str  #: name of the ``unicorn.arm_const.UC_CPU_ARM_*`` model


CORTEX_M7 = CortexM(
    name="cortex-m7",
    gcc_flags=("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
    zig_target="thumb-freestanding-eabihf",
    # LLVM's plain "cortex_m7" has no FPU at all (clang's driver adds one from -mfpu, zig does not)
    zig_cpu="cortex_m7+fp_armv8d16",
    fpu="fpv5-d16",
    has_dsp=True,
    unicorn_cpu="UC_CPU_ARM_CORTEX_M7",
)

CORTEX_M4F = CortexM(
    name="cortex-m4",
    gcc_flags=("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
    zig_target="thumb-freestanding-eabihf",
    zig_cpu="cortex_m4+vfp4d16sp",
    fpu="fpv4-sp-d16",
    has_dsp=True,
    unicorn_cpu="UC_CPU_ARM_CORTEX_M4",
)


def _positive(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _word_aligned(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value < 0 or value % 4 or value >= 2**32:
        raise ValueError(f"{attribute.name} must be a 4-byte-aligned 32-bit address, got {value:#x}")


@config_class
class CortexMTargetConfig(HardwareTargetConfig):
    """Fields shared by the Cortex-M boards. Not registered itself: each board subclasses it."""

    cpu: ClassVar[CortexM] = CORTEX_M7
    board: ClassVar[str] = ""

    flash_bytes: int = attrs.field(default=1024 * KIB, validator=_positive)
    sram_bytes: int = attrs.field(default=320 * KIB, validator=_positive)
    clock_hz: int = attrs.field(default=216_000_000, validator=_positive)
    #: stack reserved at the end of .bss; part of the SRAM budget, so a model that leaves less
    #: than this free fails to link
    stack_bytes: int = attrs.field(default=8 * KIB, validator=_positive)
    flash_origin: int = attrs.field(default=0x0000_0000, validator=_word_aligned)
    sram_origin: int = attrs.field(default=0x2000_0000, validator=_word_aligned)
    optimization: str = attrs.field(default="-O2", validator=attrs.validators.in_(("-O0", "-O1", "-O2", "-O3", "-Os")))


@config_class
class Stm32f746Config(CortexMTargetConfig):
    """STM32F746 (Cortex-M7 with FPv5 double-precision FPU and DSP), the TinyFormer / MCUNet board."""

    cpu: ClassVar[CortexM] = CORTEX_M7
    board: ClassVar[str] = "STM32F746 (Cortex-M7, 216 MHz)"


@config_class
class Stm32f411Config(CortexMTargetConfig):
    """STM32F411 (Cortex-M4F with single-precision FPU and DSP)."""

    cpu: ClassVar[CortexM] = CORTEX_M4F
    board: ClassVar[str] = "STM32F411 (Cortex-M4F, 100 MHz)"

    flash_bytes: int = attrs.field(default=512 * KIB, validator=_positive)
    sram_bytes: int = attrs.field(default=128 * KIB, validator=_positive)
    clock_hz: int = attrs.field(default=100_000_000, validator=_positive)


@config_class
class HostTargetConfig(HardwareTargetConfig):
    """The machine tuskml runs on, compiled with its native C compiler. No memory limits."""

    compiler: str = "cc"
    optimization: str = attrs.field(default="-O2", validator=attrs.validators.in_(("-O0", "-O1", "-O2", "-O3", "-Os")))


@attrs.frozen(kw_only=True)
class HardwareTarget:
    """A built target: the config plus what follows from it. ``cpu`` is None for the host."""

    name: str
    config: HardwareTargetConfig
    description: str
    cpu: CortexM | None = None
    flash_bytes: int | None = None
    sram_bytes: int | None = None
    clock_hz: int | None = None
    stack_bytes: int = 0
    flash_origin: int = 0
    sram_origin: int = 0x2000_0000

    @property
    def is_host(self) -> bool:
        return self.cpu is None

    @property
    def has_dsp(self) -> bool:
        return bool(self.cpu and self.cpu.has_dsp)

    def check_fits(self, flash_bytes: int, sram_bytes: int) -> None:
        """Raise :class:`McuTargetError` if a program of these sizes would not fit (host: never)."""
        if self.is_host:
            return
        over = []
        if self.flash_bytes is not None and flash_bytes > self.flash_bytes:
            over.append(f"flash {flash_bytes} B > {self.flash_bytes} B (over by {flash_bytes - self.flash_bytes} B)")
        if self.sram_bytes is not None and sram_bytes + self.stack_bytes > self.sram_bytes:
            need = sram_bytes + self.stack_bytes
            over.append(
                f"SRAM {sram_bytes} B + {self.stack_bytes} B stack > {self.sram_bytes} B "
                f"(over by {need - self.sram_bytes} B)"
            )
        if over:
            raise McuTargetError(f"does not fit target {self.name!r}: " + "; ".join(over))


_NAMES: dict[type, str] = {
    Stm32f746Config: "stm32f746",
    Stm32f411Config: "stm32f411",
    HostTargetConfig: "host",
}


def build_target(config: HardwareTargetConfig) -> HardwareTarget:
    """Factory registered for every target: config -> :class:`HardwareTarget`."""
    name = _NAMES.get(type(config))
    if isinstance(config, HostTargetConfig):
        return HardwareTarget(name=name or "host", config=config, description="native host (cc)")
    if isinstance(config, CortexMTargetConfig):
        if name is None:  # a plugin subclassed a board config: fall back to the registry
            from tuskml.core.config import component_name

            name = component_name(config)
        if config.stack_bytes >= config.sram_bytes:
            raise McuTargetError(
                f"target {name!r}: stack_bytes ({config.stack_bytes}) must be smaller than sram_bytes ({config.sram_bytes})"
            )
        return HardwareTarget(
            name=name,
            config=config,
            description=type(config).board or name,
            cpu=type(config).cpu,
            flash_bytes=config.flash_bytes,
            sram_bytes=config.sram_bytes,
            clock_hz=config.clock_hz,
            stack_bytes=config.stack_bytes,
            flash_origin=config.flash_origin,
            sram_origin=config.sram_origin,
        )
    raise McuTargetError(f"{type(config).__qualname__} is not a host or Cortex-M target config")


def get_target(name_or_target: str | HardwareTarget, **overrides: object) -> HardwareTarget:
    """A registered target by name (``"stm32f746"``), with optional config overrides."""
    if isinstance(name_or_target, HardwareTarget):
        return name_or_target
    from tuskml.core.api import create

    return create("hardware_targets", name_or_target, **overrides)
