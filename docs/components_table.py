"""Regenerate the README's table of registered components: python docs/components_table.py --write

tests/core/test_readme.py fails when the README's table is out of date.
"""

from __future__ import annotations

import pathlib
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- components:begin -->", "<!-- components:end -->"


def render() -> str:
    from tuskml.core.plugins import BUILTIN_PLUGINS, get_registries

    rows = ["| kind | name | plugin | what it is |", "|---|---|---|---|"]
    for kind, registry in get_registries().items():
        for spec in registry.specs():
            if spec.source in BUILTIN_PLUGINS:
                rows.append(f"| {kind} | `{spec.name}` | {spec.source} | {spec.description} |")
    return "\n".join(rows)


def replace_table(text: str, table: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + table + "\n" + text[end:]


if __name__ == "__main__":
    text = README.read_text()
    new = replace_table(text, render())
    if "--write" in sys.argv:
        README.write_text(new)
    else:
        print(render())
