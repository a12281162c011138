"""Fixtures of the C-engine tests: the kernel library is compiled once per session (and cached across
sessions by content hash, see tuskml.backends.c.host)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _kernels_ctypes import Kernels  # noqa: E402


@pytest.fixture(scope="session")
def kernels() -> Kernels:
    from tuskml.backends.c.host import build_kernel_library

    return Kernels(str(build_kernel_library()))
