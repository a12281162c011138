"""Hookimpls of the built-in ``sparseengine`` plugin: engine backends (reference, c, tinygrad)."""

from __future__ import annotations

from tuskml.core.hookspecs import hookimpl
