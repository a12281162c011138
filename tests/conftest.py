"""Shared fixtures. Plugins are reloaded per test where a test changes the environment."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def fresh_plugins(monkeypatch):
    """Reload plugins after the test changes env vars or registers plugins; restore afterwards."""
    from tuskml.core import plugins

    plugins.reset()
    yield plugins
    monkeypatch.undo()
    plugins.reset()
