"""Hookimpls of the built-in ``mcu-targets`` plugin: hardware targets (host, stm32f746, stm32f411)."""

from __future__ import annotations

from tuskml.core.hookspecs import hookimpl
from tuskml.core.registry import ComponentSpec
from tuskml.mcu_targets.targets import HostTargetConfig, Stm32f411Config, Stm32f746Config

_FACTORY = "tuskml.mcu_targets.targets:build_target"


@hookimpl
def tuskml_hardware_targets():
    yield ComponentSpec(name="host", factory=_FACTORY, config_cls=HostTargetConfig,
                        description="the machine tuskml runs on, native C compiler, no memory limits")
    yield ComponentSpec(name="stm32f746", factory=_FACTORY, config_cls=Stm32f746Config,
                        description="STM32F746: Cortex-M7 + FPv5 + DSP, 1 MB flash, 320 KB SRAM, 216 MHz")
    yield ComponentSpec(name="stm32f411", factory=_FACTORY, config_cls=Stm32f411Config,
                        description="STM32F411: Cortex-M4F + DSP, 512 KB flash, 128 KB SRAM, 100 MHz")
