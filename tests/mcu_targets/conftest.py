"""Shared fixtures: builds of the small hand-written programs in programs/, cached per session."""

from __future__ import annotations

import pathlib

import pytest

from tuskml.mcu_targets.toolchains import build

PROGRAMS = pathlib.Path(__file__).parent / "programs"


@pytest.fixture(scope="session")
def build_program(tmp_path_factory):
    """build_program(target, program, **defines) -> BuildResult, built once per argument set."""
    cache = {}

    def _build(target: str, program: str, **defines):
        key = (target, program, tuple(sorted(defines.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"{target}-{program}")
            cache[key] = build(target, [PROGRAMS / f"{program}.c"], out_dir=out, defines=defines, name=program)
        return cache[key]

    return _build
