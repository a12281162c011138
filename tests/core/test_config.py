from __future__ import annotations

import json

import attrs
import pytest
from hypothesis import HealthCheck, given, settings

import tuskml
from tests.core.toy_plugin import ToyDecoderConfig, ToyModelConfig, ToyPlugin
from tuskml.core.config import config_to_json, config_to_toml, load_config, parse_config_text, save_config


@pytest.fixture
def toy(fresh_plugins):
    fresh_plugins.register_plugin(ToyPlugin(), "toy")
    return fresh_plugins


def _err(data, kind="models"):
    with pytest.raises(tuskml.ConfigError) as err:
        tuskml.structure_config(data, kind)
    return err.value


def test_configs_are_frozen_and_keyword_only(toy):
    with pytest.raises(TypeError):
        ToyDecoderConfig(8)  # type: ignore[misc]
    cfg = ToyDecoderConfig()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cfg.width = 3  # type: ignore[misc]


def test_nested_tagged_union(toy):
    cfg = tuskml.structure_config({"type": "toy-model", "decoder": {"type": "other-dit", "hidden": 7}}, "models")
    assert cfg.decoder.hidden == 7
    assert tuskml.unstructure_config(cfg)["decoder"] == {"type": "other-dit", "hidden": 7}


def test_bad_value_reports_its_path(toy):
    err = _err({"type": "toy-model", "decoder": {"type": "toy-dit", "depth": "four"}})
    assert "decoder.depth: expected int, got 'four'" in str(err)
    assert err.problems == [("decoder.depth", "expected int, got 'four'")]


def test_several_problems_are_all_reported(toy):
    err = _err({"type": "toy-model", "lr": "fast", "decoder": {"type": "toy-dit", "deph": 3}})
    paths = dict(err.problems)
    assert "expected float, got 'fast'" == paths["lr"]
    assert "did you mean 'depth'" in paths["decoder.deph"]


def test_unknown_component_in_nested_config(toy):
    err = _err({"type": "toy-model", "decoder": {"type": "toy-ditt"}})
    assert "decoder: No decoder named 'toy-ditt'. Did you mean 'toy-dit'?" in str(err)


def test_missing_type(toy):
    err = _err({"type": "toy-model", "decoder": {"depth": 2}})
    assert "decoder: missing key 'type' naming a decoder" in str(err)


def test_validator_failure_is_a_config_error(toy):
    err = _err({"type": "toy-model", "decoder": {"type": "toy-dit", "depth": 0}})
    assert "'depth' must be >= 1" in str(err)


def test_strict_types(toy):
    assert "expected int, got 2.5" in str(_err({"type": "toy-dit", "width": 2.5}, "decoders"))
    assert "expected int, got True" in str(_err({"type": "toy-dit", "width": True}, "decoders"))


def test_literal_and_tuple_fields(toy):
    cfg = tuskml.structure_config({"type": "toy-dit", "act": "gelu", "dims": [3, 4, 5]}, "decoders")
    assert cfg.act == "gelu" and cfg.dims == (3, 4, 5)
    assert "act" in str(_err({"type": "toy-dit", "act": "tanh"}, "decoders"))


def test_toml_json_files_roundtrip(toy, tmp_path):
    cfg = ToyModelConfig(decoder=ToyDecoderConfig(depth=3, note=None), lr=0.25)
    for suffix in ("toml", "json"):
        path = save_config(cfg, tmp_path / f"model.{suffix}")
        assert load_config(path, "models") == cfg
    assert json.loads((tmp_path / "model.json").read_text())["decoder"]["type"] == "toy-dit"


def test_config_file_errors_name_the_file(toy, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('type = "toy-model"\n[decoder]\ntype = "toy-dit"\ndepth = "four"\n')
    with pytest.raises(tuskml.ConfigError, match=r"bad.toml: invalid .*decoder.depth: expected int"):
        load_config(bad, "models")
    broken = tmp_path / "broken.toml"
    broken.write_text("type = \n")
    with pytest.raises(tuskml.ConfigError, match="broken.toml: not valid TOML"):
        load_config(broken, "models")
    with pytest.raises(tuskml.ConfigError, match="must end in .toml or .json"):
        load_config(tmp_path / "x.yaml", "models")
    with pytest.raises(tuskml.ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml", "models")


def test_save_config_is_atomic(toy, tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    save_config(ToyModelConfig(), path)
    before = path.read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        save_config(ToyModelConfig(lr=0.5), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.toml"]  # no temp file left behind


def _all_config_classes():
    from tuskml.core.plugins import get_registries

    return [(kind, spec.name, spec.config_cls) for kind, reg in get_registries().items() for spec in reg.specs()]


def _roundtrip(cfg):
    for fmt, text in (("toml", config_to_toml(cfg)), ("json", config_to_json(cfg))):
        back = parse_config_text(text, fmt, type(cfg).__tuskml_kind__)
        assert back == cfg, (fmt, text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(data=__import__("hypothesis").strategies.data())
def test_toy_configs_roundtrip_property(data):
    from tuskml.core import plugins
    from tuskml.testing import config_strategy

    plugins.reset()
    plugins.register_plugin(ToyPlugin(), "toy")
    try:
        for cls in (ToyDecoderConfig, ToyModelConfig):
            _roundtrip(data.draw(config_strategy(cls)))
    finally:
        plugins.reset()


@pytest.mark.parametrize("kind,name,cls", _all_config_classes(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_registered_config_roundtrips(kind, name, cls):
    """Property-based TOML/JSON round trip for each config class that the installed plugins register."""
    from tuskml.testing import config_strategy

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(cfg=config_strategy(cls))
    def run(cfg):
        _roundtrip(cfg)

    run()
