from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import tuskml
from tests.core.toy_plugin import ToyPlugin
from tuskml.core.cli import build_cli


@pytest.fixture
def run(fresh_plugins):
    fresh_plugins.register_plugin(ToyPlugin(), "toy")

    def invoke(*args):
        return CliRunner().invoke(build_cli(), list(args), catch_exceptions=False)

    return invoke


def test_version(run):
    result = run("--version")
    assert result.exit_code == 0 and tuskml.__version__ in result.output


def test_help_lists_groups(run):
    result = run("--help")
    for word in ("plugins", "components", "config"):
        assert word in result.output


def test_plugins_list(run):
    result = run("plugins", "list")
    assert result.exit_code == 0
    assert "toy" in result.output and "decoders: 2" in result.output
    data = json.loads(run("plugins", "list", "--json").output)
    [toy] = [p for p in data["plugins"] if p["name"] == "toy"]
    assert toy["components"]["decoders"] == ["other-dit", "toy-dit"]


def test_components_list_kind_and_pattern(run):
    result = run("components", "list", "decoders", "toy*")
    assert "toy-dit" in result.output and "other-dit" not in result.output
    assert "toy-board" in run("components", "list").output
    bad = run("components", "list", "decoderz")
    assert bad.exit_code != 0 and "Did you mean 'decoders'" in bad.output


def test_config_show_and_check(run, tmp_path):
    result = run("config", "show", "models", "toy-model")
    assert result.exit_code == 0
    assert 'type = "toy-model"' in result.output and "[decoder]" in result.output
    path = tmp_path / "m.toml"
    path.write_text(result.output)
    assert run("config", "check", "models", str(path)).output == result.output
    as_json = json.loads(run("config", "show", "decoder", "toy-dit", "--format", "json").output)
    assert as_json["type"] == "toy-dit"
    missing = run("config", "show", "decoders", "nope")
    assert missing.exit_code != 0 and "No decoder named 'nope'" in missing.output


def test_plugin_adds_a_subcommand(fresh_plugins):
    import click

    class Cmd:
        @tuskml.hookimpl
        def tuskml_cli_commands(self, cli):
            @cli.command("hello")
            @click.argument("name")
            def hello(name):
                click.echo(f"hello {name}")

    fresh_plugins.register_plugin(Cmd(), "cmd")
    result = CliRunner().invoke(build_cli(), ["hello", "tusk"])
    assert result.output.strip() == "hello tusk"
