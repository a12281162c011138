"""The public verbs: ``create`` a component, ``list_components``, ``get_spec``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuskml.core.config import (
    ComponentConfig,
    component_name,
    kind_of_config,
    merge_overrides,
    structure_config,
)
from tuskml.core.errors import ConfigError
from tuskml.core.plugins import get_registry
from tuskml.core.registry import KINDS, ComponentSpec, normalize_kind


def get_spec(kind: str, name: str) -> ComponentSpec:
    return get_registry(kind).get(name)


def resolve_config(kind: str, name_or_config: str | Mapping[str, Any] | ComponentConfig, **overrides: Any) -> tuple[ComponentSpec, ComponentConfig]:
    """Turn a name, a ``{"type": ...}`` mapping or a config object into (spec, validated config)."""
    kind = normalize_kind(kind)
    registry = get_registry(kind)
    if isinstance(name_or_config, str):
        spec = registry.get(name_or_config)
        try:
            config = spec.config_cls()
        except TypeError as exc:
            raise ConfigError(f"{KINDS[kind]} {spec.name!r} has required config fields; pass a config: {exc}") from exc
    elif isinstance(name_or_config, ComponentConfig):
        config = name_or_config
        if kind_of_config(config) != kind:
            raise ConfigError(
                f"{type(config).__qualname__} configures a {KINDS[kind_of_config(config)]}, not a {KINDS[kind]}"
            )
        spec = registry.get(component_name(config))
    elif isinstance(name_or_config, Mapping):
        config = structure_config(name_or_config, kind)
        spec = registry.get(component_name(config))
    else:
        raise TypeError(f"expected a component name, a config mapping or a config object, got {name_or_config!r}")
    return spec, merge_overrides(config, overrides)


def create(kind: str, name_or_config: str | Mapping[str, Any] | ComponentConfig, **overrides: Any) -> Any:
    """Build a registered component.

    >>> import tuskml
    >>> target = tuskml.create("hardware_targets", "stm32f746")          # doctest: +SKIP
    >>> dit = tuskml.create("decoder", "mammoth2-dit", depth=2)          # doctest: +SKIP

    ``overrides`` are config fields (nested dicts allowed), validated like a config file.
    The built object remembers its config as ``obj.tuskml_config`` so :func:`tuskml.save` knows it.
    """
    spec, config = resolve_config(kind, name_or_config, **overrides)
    obj = spec.build(config)
    try:
        obj.tuskml_config = config
    except (AttributeError, TypeError):
        pass  # immutable results (e.g. a frozen attrs target) simply don't carry it
    return obj


def list_components(kind: str | None = None, pattern: str = "*") -> dict[str, list[str]] | list[str]:
    """Names of registered components matching a glob ``pattern``.

    With ``kind`` given, a sorted list of names; without, a dict kind -> names for every kind.
    """
    if kind is not None:
        return get_registry(kind).names(pattern)
    return {k: get_registry(k).names(pattern) for k in KINDS}
