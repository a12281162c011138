"""Typed registries of components.

A :class:`Registry` maps lowercase names to frozen :class:`ComponentSpec` records. Registries are
filled only by :mod:`tuskml.core.plugins` from pluggy hooks, never by import side effects.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import re
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import attrs

from tuskml.core.errors import (
    DuplicateComponentError,
    InvalidSpecError,
    UnknownComponentError,
    UnknownKindError,
)

T = TypeVar("T")

#: Every registry kind, with the singular used in messages. The one place that lists them all.
KINDS: dict[str, str] = {
    "backbones": "backbone",
    "experts": "experts",
    "tokenizers": "tokenizer",
    "aligners": "aligner",
    "decoders": "decoder",
    "datasets": "dataset",
    "search_spaces": "search space",
    "search_strategies": "search strategy",
    "engine_backends": "engine backend",
    "hardware_targets": "hardware target",
    "codecs": "latent codec",
    "models": "model",
}

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


def normalize_kind(kind: str) -> str:
    """Accept ``"decoders"``, ``"decoder"`` or ``"search-space"``; return the registry key."""
    key = kind.strip().lower().replace("-", "_").replace(" ", "_")
    if key in KINDS:
        return key
    for plural, singular in KINDS.items():
        if key == singular.replace(" ", "_") or key + "s" == plural:
            return plural
    close = difflib.get_close_matches(key, list(KINDS), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownKindError(f"No registry kind {kind!r}.{hint} Kinds: {', '.join(KINDS)}.")


def resolve_object(ref: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected 'package.module:attribute', got {ref!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _check_name(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InvalidSpecError(
            f"component name {value!r} is invalid: use lowercase letters, digits, '-', '_' or '.'"
        )


def _check_factory(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, str):
        if ":" not in value:
            raise InvalidSpecError(
                f"component {instance.name!r}: factory {value!r} must be 'package.module:callable'"
            )
    elif not callable(value):
        raise InvalidSpecError(f"component {instance.name!r}: factory {value!r} is not callable")


def _check_config_cls(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    from tuskml.core.config import ComponentConfig

    if not (isinstance(value, type) and attrs.has(value) and issubclass(value, ComponentConfig)):
        raise InvalidSpecError(
            f"component {instance.name!r}: config_cls must be an attrs class deriving from "
            f"tuskml.ComponentConfig, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class ComponentSpec:
    """What a plugin tells tuskml about one component.

    ``factory`` is a callable ``factory(config) -> component`` or a lazy ``"module:callable"`` string,
    so that listing components never imports heavy modules such as torch. ``source`` is filled in by
    the plugin manager with the name of the plugin that returned the spec.
    """

    name: str = attrs.field(validator=_check_name)
    factory: Callable[[Any], Any] | str = attrs.field(validator=_check_factory)
    config_cls: type = attrs.field(validator=_check_config_cls)
    description: str = ""
    source: str = ""

    def load_factory(self) -> Callable[[Any], Any]:
        if isinstance(self.factory, str):
            try:
                return resolve_object(self.factory)
            except (ImportError, AttributeError) as exc:
                raise InvalidSpecError(
                    f"component {self.name!r} from plugin {self.source!r}: cannot import factory "
                    f"{self.factory!r}: {exc}"
                ) from exc
        return self.factory

    def build(self, config: Any) -> Any:
        return self.load_factory()(config)


class Registry(Generic[T]):
    """Name -> :class:`ComponentSpec` for one kind of component."""

    def __init__(self, kind: str, failures_hint: Callable[[], str] | None = None):
        self.kind = kind
        self.singular = KINDS[kind]
        self._specs: dict[str, ComponentSpec] = {}
        self._by_config: dict[type, str] = {}
        self._failures_hint = failures_hint

    def add(self, spec: ComponentSpec) -> None:
        old = self._specs.get(spec.name)
        if old is not None:
            raise DuplicateComponentError(
                f"{self.singular} {spec.name!r} is registered twice: by plugin {old.source!r} and by "
                f"plugin {spec.source!r}. Rename one, or disable a plugin with "
                f"TUSKML_DISABLED_PLUGINS={spec.source}"
            )
        other = self._by_config.get(spec.config_cls)
        if other is not None:
            raise DuplicateComponentError(
                f"{self.singular} {spec.name!r} (plugin {spec.source!r}) reuses config class "
                f"{spec.config_cls.__qualname__} of {other!r}; each component needs its own config "
                f"class (subclass it) so that configs name their component unambiguously"
            )
        self._specs[spec.name] = spec
        self._by_config[spec.config_cls] = spec.name

    def get(self, name: str) -> ComponentSpec:
        spec = self._specs.get(name) if isinstance(name, str) else None
        if spec is None:
            spec = self._specs.get(str(name).lower())
        if spec is not None:
            return spec
        close = difflib.get_close_matches(str(name).lower(), list(self._specs), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        available = ", ".join(sorted(self._specs)) or "(none)"
        extra = self._failures_hint() if self._failures_hint else ""
        raise UnknownComponentError(
            f"No {self.singular} named {name!r}.{hint} Available: {available}. "
            f"Run `tuskml plugins list` to see the loaded plugins.{extra}"
        )

    def name_of_config(self, config_cls: type) -> str | None:
        return self._by_config.get(config_cls)

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._specs if fnmatch.fnmatchcase(n, pattern.lower()))

    def specs(self) -> list[ComponentSpec]:
        return [self._specs[n] for n in sorted(self._specs)]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._specs))

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} components)"
