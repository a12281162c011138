"""Errors of the hardware-target layer: building, linking and emulating firmware."""

from __future__ import annotations

from tuskml.core.errors import TuskmlError


class McuTargetError(TuskmlError):
    """Base of every error raised by :mod:`tuskml.mcu_targets`."""


class ToolchainNotFoundError(McuTargetError):
    """No compiler that can build for the requested target is installed."""


class BuildError(McuTargetError):
    """The compiler or linker failed; the message carries its command line and output."""


class LinkerOverflowError(BuildError):
    """The program does not fit a memory region of the target.

    ``region`` is ``"FLASH"`` or ``"RAM"`` and ``bytes_over`` how many bytes too many there are.
    """

    def __init__(self, message: str, *, region: str, bytes_over: int):
        super().__init__(message)
        self.region = region
        self.bytes_over = bytes_over


class EmulatorNotFoundError(McuTargetError):
    """The requested emulator (QEMU) is not installed."""


class EmulatorError(McuTargetError):
    """The emulated program faulted, ran too long, or never exited through semihosting."""


class ElfError(McuTargetError):
    """A file that is not the ELF we expect, or a symbol that is not in it."""
