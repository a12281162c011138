"""The README's component table lists exactly what the built-in plugins register."""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_component_table_is_current():
    spec = importlib.util.spec_from_file_location("components_table", ROOT / "docs" / "components_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (ROOT / "README.md").read_text()
    assert module.replace_table(text, module.render()) == text, \
        "README component table is stale: run python docs/components_table.py --write"
