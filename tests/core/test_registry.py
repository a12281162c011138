from __future__ import annotations

import attrs
import pytest

import tuskml
from tests.core.toy_plugin import ToyDecoderConfig, ToyPlugin
from tuskml.core.registry import KINDS, ComponentSpec, Registry, normalize_kind


@pytest.fixture
def toy(fresh_plugins):
    fresh_plugins.register_plugin(ToyPlugin(), "toy")
    return fresh_plugins


def test_every_kind_has_a_registry_a_hook_and_a_base_config():
    from tuskml.core.config import KIND_BASES
    from tuskml.core.hookspecs import REGISTRY_HOOKS
    from tuskml.core.plugins import get_registries

    assert set(KINDS) == set(REGISTRY_HOOKS) == set(KIND_BASES) == set(get_registries())
    for required in ("backbones", "experts", "tokenizers", "aligners", "decoders", "datasets",
                     "search_spaces", "search_strategies", "engine_backends", "hardware_targets"):
        assert required in KINDS


def test_unknown_name_suggests_close_matches_and_lists_available(toy):
    with pytest.raises(tuskml.UnknownComponentError) as err:
        tuskml.create("decoders", "toy-ditt")
    msg = str(err.value)
    assert "No decoder named 'toy-ditt'" in msg
    assert "Did you mean 'toy-dit'?" in msg
    assert "Available: " in msg and "other-dit" in msg
    assert "tuskml plugins list" in msg


def test_unknown_kind(toy):
    with pytest.raises(tuskml.UnknownKindError, match="Did you mean 'decoders'"):
        tuskml.list_components("decoderz")


def test_kind_aliases():
    assert normalize_kind("decoder") == "decoders"
    assert normalize_kind("search-space") == "search_spaces"
    assert normalize_kind("hardware target") == "hardware_targets"


def test_duplicate_name_names_both_plugins(toy):
    class Again:
        @tuskml.hookimpl
        def tuskml_decoders(self):
            @tuskml.config_class
            class AnotherConfig(tuskml.DecoderConfig):
                pass

            yield ComponentSpec(name="toy-dit", factory=lambda c: c, config_cls=AnotherConfig, description="x")

    toy.register_plugin(Again(), "again")
    with pytest.raises(tuskml.DuplicateComponentError) as err:
        tuskml.list_components("decoders")
    assert "'toy'" in str(err.value) and "'again'" in str(err.value)


def test_shared_config_class_is_refused():
    reg: Registry = Registry("decoders")
    reg.add(ComponentSpec(name="a", factory=lambda c: c, config_cls=ToyDecoderConfig, source="p"))
    with pytest.raises(tuskml.DuplicateComponentError, match="reuses config class"):
        reg.add(ComponentSpec(name="b", factory=lambda c: c, config_cls=ToyDecoderConfig, source="q"))


@pytest.mark.parametrize("bad", ["Upper", "", "has space", "-lead"])
def test_spec_name_must_be_lowercase_identifier(bad):
    with pytest.raises(tuskml.InvalidSpecError):
        ComponentSpec(name=bad, factory=lambda c: c, config_cls=ToyDecoderConfig)


def test_spec_rejects_non_config_class_and_bad_factory():
    with pytest.raises(tuskml.InvalidSpecError, match="config_cls"):
        ComponentSpec(name="x", factory=lambda c: c, config_cls=dict)
    with pytest.raises(tuskml.InvalidSpecError, match="module:callable"):
        ComponentSpec(name="x", factory="no_colon", config_cls=ToyDecoderConfig)


def test_spec_is_frozen():
    spec = ComponentSpec(name="x", factory=lambda c: c, config_cls=ToyDecoderConfig)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        spec.name = "y"  # type: ignore[misc]


def test_list_components_with_pattern(toy):
    assert tuskml.list_components("decoders", "toy*") == ["toy-dit"]
    everything = tuskml.list_components()
    assert isinstance(everything, dict) and set(everything) == set(KINDS)
    assert "toy-board" in everything["hardware_targets"]


def test_create_with_overrides_and_lazy_factory(toy):
    dec = tuskml.create("decoder", "toy-dit", width=4, depth=1)
    assert dec.tuskml_config == ToyDecoderConfig(width=4, depth=1)
    other = tuskml.create("decoders", {"type": "other-dit", "hidden": 5})
    assert other.weight.shape == (5, 5)
    model = tuskml.create("models", "toy-model", decoder={"depth": 3})
    assert model.decoder == ToyDecoderConfig(depth=3)
    swapped = tuskml.create("models", "toy-model", decoder={"type": "other-dit"})
    assert type(swapped.decoder).__name__ == "OtherDecoderConfig"


def test_create_rejects_misspelt_override(toy):
    with pytest.raises(tuskml.ConfigError, match="widht: unknown key \\(did you mean 'width'\\?\\)"):
        tuskml.create("decoder", "toy-dit", widht=4)


def test_create_rejects_config_of_wrong_kind(toy):
    from tests.core.toy_plugin import ToyBoardConfig

    with pytest.raises(tuskml.ConfigError, match="configures a hardware target, not a decoder"):
        tuskml.create("decoders", ToyBoardConfig())
