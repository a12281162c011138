"""The ``tuskml`` command line. Plugins add sub-commands through ``tuskml_cli_commands``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from tuskml._version import __version__
from tuskml.core.errors import TuskmlError


class _Group(click.Group):
    """Turns tuskml's own errors into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TuskmlError as exc:
            raise click.ClickException(str(exc)) from exc


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def build_cli() -> click.Group:
    @click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, "--version", prog_name="tuskml")
    def cli() -> None:
        """tuskml: swappable ML components from plugins (mammoth2, tinyformer, yours)."""

    @cli.group("plugins")
    def plugins_group() -> None:
        """Inspect loaded plugins."""

    @plugins_group.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    def plugins_list(as_json: bool) -> None:
        """Plugins, their distribution and version, components per registry, and load failures."""
        from tuskml.core.plugins import get_registries, get_state

        registries = get_registries()
        state = get_state()
        counts: dict[str, dict[str, list[str]]] = {name: {} for name in state.plugins}
        for kind, registry in registries.items():
            for spec in registry.specs():
                counts.setdefault(spec.source, {}).setdefault(kind, []).append(spec.name)
        if as_json:
            click.echo(json.dumps({
                "plugins": [
                    {"name": p.name, "distribution": p.distribution, "version": p.version,
                     "builtin": p.builtin, "components": counts.get(p.name, {})}
                    for p in state.plugins.values()
                ],
                "failures": [{"name": f.name, "distribution": f.distribution, "error": f.error} for f in state.failures],
                "disabled": state.disabled,
            }, indent=2))
            return
        rows = []
        for p in state.plugins.values():
            comps = counts.get(p.name, {})
            summary = ", ".join(f"{kind}: {len(names)}" for kind, names in comps.items()) or "-"
            rows.append([p.name, p.distribution, p.version, summary])
        click.echo(_table(rows, ["plugin", "distribution", "version", "components"]))
        if state.disabled:
            click.echo(f"\ndisabled: {', '.join(state.disabled)}")
        if state.failures:
            click.echo("\nload failures:")
            for f in state.failures:
                click.echo(f"  {f.name} ({f.distribution}): {f.error}")

    @cli.group("components")
    def components_group() -> None:
        """Inspect registered components."""

    @components_group.command("list")
    @click.argument("kind", required=False)
    @click.argument("pattern", required=False, default="*")
    def components_list(kind: str | None, pattern: str) -> None:
        """Registered components, optionally of one KIND and matching a glob PATTERN."""
        from tuskml.core.plugins import get_registry
        from tuskml.core.registry import KINDS

        kinds = [kind] if kind else list(KINDS)
        rows = []
        for k in kinds:
            registry = get_registry(k)
            for name in registry.names(pattern):
                spec = registry.get(name)
                rows.append([registry.kind, name, spec.source, spec.description])
        click.echo(_table(rows, ["kind", "name", "plugin", "description"]) if rows else "no components match")

    @cli.group("config")
    def config_group() -> None:
        """Show and check configs."""

    @config_group.command("show")
    @click.argument("kind")
    @click.argument("name")
    @click.option("--format", "fmt", type=click.Choice(["toml", "json"]), default="toml")
    def config_show(kind: str, name: str, fmt: str) -> None:
        """The default config of component NAME of KIND."""
        from tuskml.core.api import resolve_config
        from tuskml.core.config import config_to_json, config_to_toml

        _, config = resolve_config(kind, name)
        click.echo(config_to_toml(config) if fmt == "toml" else config_to_json(config), nl=fmt == "json")

    @config_group.command("check")
    @click.argument("kind")
    @click.argument("path", type=click.Path(dir_okay=False))
    def config_check(kind: str, path: str) -> None:
        """Validate a TOML/JSON config file of KIND; print it back normalised."""
        from tuskml.core.config import config_to_toml, load_config

        click.echo(config_to_toml(load_config(path, kind)), nl=False)

    from tuskml.core.plugins import _record_failure, get_state

    state = get_state()
    for impl in state.pm.hook.tuskml_cli_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:  # one plugin's broken CLI must not hide the rest
            _record_failure(state, impl.plugin_name, f"tuskml_cli_commands() raised {type(exc).__name__}: {exc}")
    return cli


def main(argv: list[str] | None = None) -> None:
    try:
        cli = build_cli()
    except TuskmlError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    cli.main(args=argv, prog_name="tuskml")
