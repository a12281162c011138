"""The example third-party package, installed with pip into a folder, found through its entry point."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "third_party_plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True)
    return target


def _env(site, **extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    env.pop("TUSKML_DISABLED_PLUGINS", None)
    env.pop("TUSKML_DISABLE_PLUGIN_AUTOLOAD", None)
    env.update(extra)
    return env


def _tuskml(site, *args, **env):
    return subprocess.run([sys.executable, "-m", "tuskml", *args], capture_output=True, text=True,
                          env=_env(site, **env))


def test_discovered_through_entry_point_and_listed(installed):
    out = _tuskml(installed, "plugins", "list", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    [plugin] = [p for p in data["plugins"] if p["name"] == "example-board"]
    assert plugin["distribution"] == "tuskml-example-board" and plugin["version"] == "0.1.0"
    assert plugin["components"] == {"decoders": ["example-mlp"], "hardware_targets": ["nucleo-h743"]}
    table = _tuskml(installed, "plugins", "list").stdout
    assert "example-board" in table and "tuskml-example-board" in table


def test_create_roundtrip_and_conformance(installed, tmp_path):
    code = """
import tuskml
from tuskml.testing import check_component
board = tuskml.create("hardware_targets", "nucleo-h743")
assert board.sram_bytes == 512 * 1024, board
check_component("hardware_targets", "nucleo-h743")
check_component("decoders", "example-mlp", {tmp!r})
dec = tuskml.create("decoder", "example-mlp", hidden=8)
assert dec.net[0].out_channels == 8
print("ok")
""".replace("{tmp!r}", repr(str(tmp_path)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(installed))
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_config_show_of_plugin_component(installed):
    out = _tuskml(installed, "config", "show", "hardware_targets", "nucleo-h743")
    assert out.returncode == 0, out.stderr
    assert 'type = "nucleo-h743"' in out.stdout and "sram_bytes = 524288" in out.stdout


def test_disabled_by_environment(installed):
    out = _tuskml(installed, "plugins", "list", "--json", TUSKML_DISABLED_PLUGINS="example-board")
    data = json.loads(out.stdout)
    assert "example-board" not in [p["name"] for p in data["plugins"]]
    assert "example-board" in data["disabled"]
    out = _tuskml(installed, "config", "show", "hardware_targets", "nucleo-h743",
                  TUSKML_DISABLE_PLUGIN_AUTOLOAD="1")
    assert out.returncode != 0 and "No hardware target named 'nucleo-h743'" in out.stderr
