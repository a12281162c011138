"""Hookimpls of the built-in ``mcu-targets`` plugin: hardware targets (host, stm32f746, stm32f411)."""

from __future__ import annotations

from tuskml.core.hookspecs import hookimpl
