"""Conformance checks a plugin author runs on their own components.

    from tuskml.testing import check_component
    def test_my_decoder(tmp_path):
        check_component("decoders", "my-dit", tmp_path)

Each check raises ``AssertionError`` with a message naming the component and what broke.
A torch component may define ``example_inputs(self)`` returning a tuple (or dict) of inputs;
then the save/load check compares outputs too, not only weights.
"""

from __future__ import annotations

import json
import pathlib
import tempfile
from typing import Any

import attrs

from tuskml.core.api import create, get_spec
from tuskml.core.config import (
    ComponentConfig,
    component_name,
    config_to_json,
    config_to_toml,
    kind_of_config,
    parse_config_text,
)
from tuskml.core.plugins import get_registry
from tuskml.core.registry import KINDS, ComponentSpec, normalize_kind


def _label(kind: str, name: str) -> str:
    return f"{KINDS[normalize_kind(kind)]} {name!r}"


def check_spec(kind: str, name: str) -> ComponentSpec:
    """The spec is well formed: lowercase name, importable factory, config class of the right kind."""
    spec = get_spec(kind, name)
    label = _label(kind, name)
    assert spec.name == name and spec.name == spec.name.lower(), f"{label}: name must be lowercase"
    assert spec.source, f"{label}: spec has no source plugin"
    assert spec.description, f"{label}: give the spec a one-line description"
    assert callable(spec.load_factory()), f"{label}: factory is not callable"
    assert kind_of_config(spec.config_cls()) == normalize_kind(kind), f"{label}: config class is of another kind"
    assert get_registry(kind).name_of_config(spec.config_cls) == name
    return spec


def check_config_roundtrip(config: ComponentConfig) -> None:
    """The config survives TOML and JSON and back unchanged, and keeps its registered name."""
    name = component_name(config)
    for fmt, text in (("toml", config_to_toml(config)), ("json", config_to_json(config))):
        back = parse_config_text(text, fmt, kind_of_config(config), source=f"<{fmt} of {name}>")
        assert back == config, f"{name}: {fmt} round trip changed the config:\n{config}\n!=\n{back}"


def check_default_builds(kind: str, name: str) -> Any:
    """``tuskml.create(kind, name)`` works with the default config and remembers it."""
    obj = create(kind, name)
    assert obj is not None, f"{_label(kind, name)}: factory returned None"
    return obj


def _call(module: Any, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return module(**inputs)
    return module(*inputs)


def _assert_same(a: Any, b: Any, where: str) -> None:
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), f"{where}: outputs differ"
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: output lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: output keys differ"
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif attrs.has(type(a)) or hasattr(a, "__dataclass_fields__"):
        _assert_same(vars(a) if not attrs.has(type(a)) else attrs.asdict(a, recurse=False), vars(b) if not attrs.has(type(b)) else attrs.asdict(b, recurse=False), where)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def check_save_load(module: Any, directory: str | pathlib.Path) -> Any:
    """For torch modules: save, load, and get identical weights (and outputs, given example_inputs)."""
    import torch

    from tuskml.core.checkpoint import load, read_metadata, save

    name = component_name(module.tuskml_config)
    path = pathlib.Path(directory) / f"{name}.safetensors"
    save(module, path)
    meta = read_metadata(path)
    assert meta["tuskml.name"] == name and json.loads(meta["tuskml.config"])["type"] == name
    loaded = load(path)
    assert type(loaded) is type(module), f"{name}: load gave {type(loaded)}, expected {type(module)}"
    sd_a, sd_b = module.state_dict(), loaded.state_dict()
    assert sd_a.keys() == sd_b.keys(), f"{name}: state_dict keys differ after load"
    for key in sd_a:
        assert torch.equal(sd_a[key], sd_b[key]), f"{name}: tensor {key!r} differs after load"
    example = getattr(module, "example_inputs", None)
    if callable(example):
        inputs = example()
        module.eval()
        loaded.eval()
        with torch.no_grad():
            torch.manual_seed(0)
            out_a = _call(module, inputs)
            torch.manual_seed(0)
            out_b = _call(loaded, inputs)
        _assert_same(out_a, out_b, f"{name} output")
    return loaded


def check_component(kind: str, name: str, directory: str | pathlib.Path | None = None) -> None:
    """Every conformance check for one registered component."""
    spec = check_spec(kind, name)
    check_config_roundtrip(spec.config_cls())
    obj = check_default_builds(kind, name)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    if isinstance(obj, torch.nn.Module):
        if directory is None:
            with tempfile.TemporaryDirectory() as tmp:
                check_save_load(obj, tmp)
        else:
            check_save_load(obj, directory)


def all_components() -> list[tuple[str, str]]:
    """(kind, name) of every registered component: handy for ``pytest.mark.parametrize``."""
    from tuskml.core.plugins import get_registries

    return [(kind, name) for kind, registry in get_registries().items() for name in registry]


def config_strategy(config_cls: type, *, _depth: int = 0) -> Any:
    """A hypothesis strategy of valid-looking instances of an attrs config class.

    Values stay near each field's default (so validators mostly accept them); instances that a
    validator rejects are filtered out. Nested kind-base fields draw from the registered components
    of that kind.
    """
    import typing

    from hypothesis import strategies as st

    from tuskml.core.config import _BASE_TO_KIND

    def for_type(tp: Any, default: Any) -> Any:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if tp is bool:
            return st.booleans()
        if tp is int:
            hi = max(8, abs(default) * 2 if isinstance(default, int) else 8)
            lo = 0 if not isinstance(default, int) or default >= 0 else -hi
            return st.integers(lo, hi)
        if tp is float:
            d = abs(default) if isinstance(default, (int, float)) else 1.0
            return st.floats(0.0, max(2 * d, 1.0), allow_nan=False, allow_infinity=False)
        if tp is str:
            return st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=12)
        if origin is typing.Literal:
            return st.sampled_from(args)
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            non_none = [a for a in args if a is not type(None)]
            inner = st.one_of(*[for_type(a, default) for a in non_none]) if non_none else st.nothing()
            return st.one_of(st.none(), inner) if type(None) in args else inner
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                elem_default = default[0] if default else None
                n = len(default) if isinstance(default, tuple) else 2
                return st.lists(for_type(args[0], elem_default), min_size=n, max_size=n).map(tuple)
            return st.tuples(*[for_type(a, None) for a in args])
        if isinstance(tp, type) and tp in _BASE_TO_KIND:
            if _depth > 2:
                return st.just(default)
            names = get_registry(_BASE_TO_KIND[tp]).names()
            return st.sampled_from(names).flatmap(
                lambda n: config_strategy(get_registry(_BASE_TO_KIND[tp]).get(n).config_cls, _depth=_depth + 1))
        if isinstance(tp, type) and attrs.has(tp):
            return config_strategy(tp, _depth=_depth + 1)
        return st.just(default)

    hints = typing.get_type_hints(config_cls)
    fields = {}
    for field in attrs.fields(config_cls):
        if not field.init:
            continue
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory() if not default.takes_self else None
        fields[field.name] = st.one_of(st.just(default), for_type(hints.get(field.name, Any), default)) \
            if default is not attrs.NOTHING else for_type(hints.get(field.name, Any), None)

    def build(values: dict[str, Any]) -> Any:
        try:
            return config_cls(**values)
        except (ValueError, TypeError):
            return None

    return st.fixed_dictionaries(fields).map(build).filter(lambda c: c is not None)
