from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import tuskml
from tests.core.toy_plugin import ToyPlugin


def _fake_distribution(tmp_path, dist: str, ep_name: str, module: str, source: str):
    """A distribution on sys.path with an entry point of group tuskml, without pip."""
    info = tmp_path / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[tuskml]\n{ep_name} = {module}\n")
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))


def test_builtin_plugins_load():
    from tuskml.core.plugins import BUILTIN_PLUGINS, get_state

    state = get_state()
    for name in BUILTIN_PLUGINS:
        assert name in state.plugins, [f.describe() for f in state.failures]
        assert state.plugins[name].builtin and state.plugins[name].distribution == "tuskml"


def test_broken_plugin_is_reported_and_skipped(tmp_path, monkeypatch, fresh_plugins):
    _fake_distribution(tmp_path, "broken-dist", "broken", "broken_mod", "raise ImportError('needs libfoo')\n")
    _fake_distribution(tmp_path, "good-dist", "good", "good_mod", """
        import tuskml
        from tests.core.toy_plugin import ToyBoardConfig

        @tuskml.hookimpl
        def tuskml_hardware_targets():
            yield tuskml.ComponentSpec(name="good-board", factory=lambda c: c, config_cls=ToyBoardConfig,
                                       description="from an entry point")
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh_plugins.reset()
    state = fresh_plugins.get_state()
    [failure] = [f for f in state.failures if f.name == "broken"]
    assert failure.distribution == "broken-dist" and "needs libfoo" in failure.error
    assert state.plugins["good"].distribution == "good-dist" and state.plugins["good"].version == "1.2.3"
    assert "good-board" in tuskml.list_components("hardware_targets")
    # the failure shows up where a user looks for a missing component
    with pytest.raises(tuskml.UnknownComponentError, match="broken-dist"):
        tuskml.create("hardware_targets", "broken-board")


def test_hook_that_raises_is_reported(fresh_plugins):
    class Raising:
        @tuskml.hookimpl
        def tuskml_datasets(self):
            raise RuntimeError("disk on fire")

    fresh_plugins.register_plugin(Raising(), "raising")
    tuskml.list_components("datasets")
    errors = [f.error for f in fresh_plugins.get_state().failures if f.name == "raising"]
    assert errors and "disk on fire" in errors[0]


def test_hook_returning_garbage_is_reported(fresh_plugins):
    class Garbage:
        @tuskml.hookimpl
        def tuskml_decoders(self):
            return ["not a spec"]

    fresh_plugins.register_plugin(Garbage(), "garbage")
    tuskml.list_components("decoders")
    [failure] = [f for f in fresh_plugins.get_state().failures if f.name == "garbage"]
    assert "expected tuskml.ComponentSpec" in failure.error


def test_spec_with_config_of_wrong_kind_is_reported(fresh_plugins):
    from tests.core.toy_plugin import ToyBoardConfig

    class WrongKind:
        @tuskml.hookimpl
        def tuskml_decoders(self):
            yield tuskml.ComponentSpec(name="confused", factory=lambda c: c, config_cls=ToyBoardConfig,
                                       description="x")

    fresh_plugins.register_plugin(WrongKind(), "wrongkind")
    assert "confused" not in tuskml.list_components("decoders")
    [failure] = [f for f in fresh_plugins.get_state().failures if f.name == "wrongkind"]
    assert "must derive from tuskml.DecoderConfig" in failure.error


def test_unknown_hook_name_is_an_error(fresh_plugins):
    class Typo:
        @tuskml.hookimpl
        def tuskml_decoder(self):  # singular: not a hook
            return []

    with pytest.raises(Exception, match="tuskml_decoder"):
        fresh_plugins.get_plugin_manager().register(Typo(), "typo")
        fresh_plugins.get_plugin_manager().check_pending()


def test_disabled_plugins_env(monkeypatch, fresh_plugins):
    monkeypatch.setenv("TUSKML_DISABLED_PLUGINS", "mammoth2, tinyformer")
    fresh_plugins.reset()
    state = fresh_plugins.get_state()
    assert "mammoth2" not in state.plugins and "tinyformer" not in state.plugins
    assert {"mammoth2", "tinyformer"} <= set(state.disabled)


def test_disable_autoload_env(tmp_path, monkeypatch, fresh_plugins):
    _fake_distribution(tmp_path, "auto-dist", "auto", "auto_mod", "")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TUSKML_DISABLE_PLUGIN_AUTOLOAD", "1")
    fresh_plugins.reset()
    assert "auto" not in fresh_plugins.get_state().plugins
    monkeypatch.delenv("TUSKML_DISABLE_PLUGIN_AUTOLOAD")
    fresh_plugins.reset()
    assert "auto" in fresh_plugins.get_state().plugins


def test_runtime_registration_and_unregistration(fresh_plugins):
    fresh_plugins.register_plugin(ToyPlugin(), "toy")
    assert "toy-dit" in tuskml.list_components("decoders")
    fresh_plugins.unregister_plugin("toy")
    assert "toy-dit" not in tuskml.list_components("decoders")


def test_import_tuskml_and_help_do_not_import_torch():
    code = ("import sys, tuskml; from tuskml.core.cli import build_cli; build_cli();"
            "tuskml.list_components(); heavy=[m for m in ('torch','numpy','diffusers','timm') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
