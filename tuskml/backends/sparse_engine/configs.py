"""Torch-free config classes of the SparseEngine engine backends (imported when plugins load)."""

from __future__ import annotations

import typing

import attrs

import tuskml


@tuskml.config_class
class ReferenceBackendConfig(tuskml.EngineBackendConfig):
    """The golden numpy integer executor (no options)."""


@tuskml.config_class
class TinygradBackendConfig(tuskml.EngineBackendConfig):
    """tinygrad cross-check. ``device``: "PYTHON" (no compiler needed), "CPU" (needs clang) or
    "auto" (CPU when clang is on PATH, else PYTHON)."""

    device: typing.Literal["auto", "PYTHON", "CPU"] = attrs.field(default="auto")
