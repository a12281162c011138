"""Every registered component, built-in or installed, passes tuskml.testing's conformance checks."""

from __future__ import annotations

import pytest

from tuskml.testing import all_components, check_component

COMPONENTS = all_components()


def test_there_are_components_to_check():
    assert COMPONENTS, "no plugin registered any component"


@pytest.mark.parametrize("kind,name", COMPONENTS, ids=[f"{k}:{n}" for k, n in COMPONENTS])
def test_component_conforms(kind, name, tmp_path):
    check_component(kind, name, tmp_path)
