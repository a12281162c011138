"""Configs: frozen keyword-only attrs classes, structured by a cattrs converter.

A field typed with a *kind base* (``DecoderConfig``, ``BackboneConfig`` ...) holds the config of any
component registered in that kind. On disk it is a tagged table, ``{"type": "mammoth2-dit", ...}``;
the converter looks ``type`` up in the registry and structures the rest into that component's config
class. Unknown keys are errors, and every error names the dotted path of the bad value.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import tempfile
import tomllib
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError

from tuskml.core.errors import ConfigError
from tuskml.core.registry import KINDS, normalize_kind

C = TypeVar("C")

#: ``@config_class`` is the decorator every component config uses.
config_class = functools.partial(attrs.frozen, kw_only=True)


@config_class
class ComponentConfig:
    """Base of every component config. Subclass one of the kind bases below, not this."""

    __tuskml_kind__: ClassVar[str] = ""


def _kind_base(kind: str, name: str) -> type:
    cls = type(name, (ComponentConfig,), {"__tuskml_kind__": kind, "__module__": __name__})
    cls.__doc__ = f"Base of every {KINDS[kind]} config; a field of this type accepts any registered {KINDS[kind]}."
    return config_class(cls)


BackboneConfig = _kind_base("backbones", "BackboneConfig")
ExpertsConfig = _kind_base("experts", "ExpertsConfig")
TokenizerConfig = _kind_base("tokenizers", "TokenizerConfig")
AlignerConfig = _kind_base("aligners", "AlignerConfig")
DecoderConfig = _kind_base("decoders", "DecoderConfig")
DatasetConfig = _kind_base("datasets", "DatasetConfig")
SearchSpaceConfig = _kind_base("search_spaces", "SearchSpaceConfig")
SearchStrategyConfig = _kind_base("search_strategies", "SearchStrategyConfig")
EngineBackendConfig = _kind_base("engine_backends", "EngineBackendConfig")
HardwareTargetConfig = _kind_base("hardware_targets", "HardwareTargetConfig")
CodecConfig = _kind_base("codecs", "CodecConfig")
ModelConfig = _kind_base("models", "ModelConfig")

KIND_BASES: dict[str, type] = {
    "backbones": BackboneConfig,
    "experts": ExpertsConfig,
    "tokenizers": TokenizerConfig,
    "aligners": AlignerConfig,
    "decoders": DecoderConfig,
    "datasets": DatasetConfig,
    "search_spaces": SearchSpaceConfig,
    "search_strategies": SearchStrategyConfig,
    "engine_backends": EngineBackendConfig,
    "hardware_targets": HardwareTargetConfig,
    "codecs": CodecConfig,
    "models": ModelConfig,
}
assert set(KIND_BASES) == set(KINDS)
_BASE_TO_KIND = {base: kind for kind, base in KIND_BASES.items()}


def kind_of_config(config: Any) -> str:
    kind = getattr(type(config), "__tuskml_kind__", "")
    if not kind:
        raise ConfigError(f"{type(config).__qualname__} does not derive from a tuskml kind base config")
    return kind


def component_name(config: Any) -> str:
    """The registered name whose config class is ``type(config)``."""
    from tuskml.core.plugins import get_registry

    kind = kind_of_config(config)
    name = get_registry(kind).name_of_config(type(config))
    if name is None:
        raise ConfigError(
            f"config class {type(config).__qualname__} is not registered in {kind!r} by any loaded plugin"
        )
    return name


# --- strict primitives: "four" is not an int, 4.7 is not an int, 1 is not a bool -------------------


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected int, got {_describe(value)}")
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected float, got {_describe(value)}")
    return float(value)


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected bool, got {_describe(value)}")
    return value


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {_describe(value)}")
    return value


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(pathlib.Path, lambda v, _: pathlib.Path(_strict_str(v, str)))
    conv.register_unstructure_hook(pathlib.Path, str)

    def structure_tagged(value: Any, cl: type) -> Any:
        kind = _BASE_TO_KIND[cl]
        if isinstance(value, ComponentConfig):
            if not isinstance(value, cl):
                raise TypeError(f"expected a {KINDS[kind]} config, got {type(value).__qualname__}")
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a table with a 'type' key naming a {KINDS[kind]}, got {_describe(value)}")
        from tuskml.core.plugins import get_registry

        if "type" not in value:
            names = ", ".join(get_registry(kind).names()) or "(none)"
            raise ValueError(f"missing key 'type' naming a {KINDS[kind]} (available: {names})")

        spec = get_registry(kind).get(value["type"])
        rest = {k: v for k, v in value.items() if k != "type"}
        return conv.structure(rest, spec.config_cls)

    def unstructure_tagged(value: Any) -> Any:
        return {"type": component_name(value), **conv.unstructure(value, type(value))}

    conv.register_structure_hook_func(lambda cl: cl in _BASE_TO_KIND, structure_tagged)
    conv.register_unstructure_hook_func(lambda cl: cl in _BASE_TO_KIND, unstructure_tagged)
    return conv


@functools.cache
def get_converter() -> cattrs.Converter:
    """The converter; built on first use, after plugins have loaded."""
    return _make_converter()


# --- error paths -------------------------------------------------------------------------------------


def _join(path: str, part: Any) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else str(part)


def _collect_problems(exc: BaseException, path: str, out: list[tuple[str, str]]) -> None:
    if isinstance(exc, ForbiddenExtraKeysError):
        import difflib

        fields = [a.name for a in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
        for key in sorted(exc.extra_fields):
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append((_join(path, key), f"unknown key{hint}; {exc.cl.__qualname__} accepts: {', '.join(fields)}"))
        return
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            sub_path = path
            for note in getattr(sub, "__notes__", []):
                if isinstance(note, cattrs.AttributeValidationNote):
                    sub_path = _join(path, note.name)
                elif isinstance(note, cattrs.IterableValidationNote):
                    sub_path = _join(path, note.index)
            _collect_problems(sub, sub_path, out)
        return
    if isinstance(exc, KeyError):
        out.append((path, "missing required value" if path else f"missing required key {exc.args[0]!r}"))
        return
    out.append((path, str(exc) or type(exc).__name__))


def structure_config(data: Any, cls: type[C] | str, *, source: str = "") -> C:
    """Turn plain data (dicts, lists, numbers) into a config object, or raise ConfigError.

    ``cls`` is a config class, a kind base, or a kind name (``"decoders"``): then ``data`` must carry
    ``type``. ``source`` (a file name) is put in front of error messages.
    """
    target: Any = KIND_BASES[normalize_kind(cls)] if isinstance(cls, str) else cls
    try:
        return get_converter().structure(data, target)
    except ConfigError:
        raise
    except Exception as exc:  # cattrs groups several problems; report them all with their paths
        problems: list[tuple[str, str]] = []
        _collect_problems(exc, "", problems)
        where = f"{source}: " if source else ""
        lines = [f"{p}: {m}" if p else m for p, m in problems]
        what = getattr(target, "__qualname__", str(target))
        if target in _BASE_TO_KIND and isinstance(data, Mapping) and "type" in data:
            what = f"{KINDS[_BASE_TO_KIND[target]]} config {data['type']!r}"
        head = f"{where}invalid {what}"
        raise ConfigError(head + ("\n  " if len(lines) > 1 else ": ") + "\n  ".join(lines), problems) from exc


def unstructure_config(config: Any) -> dict[str, Any]:
    """Config object -> plain dict; component configs carry their ``type`` name."""
    conv = get_converter()
    data = conv.unstructure(config, type(config))
    if isinstance(config, ComponentConfig) and type(config).__tuskml_kind__:
        data = {"type": component_name(config), **data}
    return data


def _drop_none(value: Any) -> Any:
    # TOML has no null: a None field is left out and comes back as its default.
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    return value


def config_to_toml(config: Any) -> str:
    import tomli_w

    return tomli_w.dumps(_drop_none(unstructure_config(config)))


def config_to_json(config: Any) -> str:
    return json.dumps(unstructure_config(config), indent=2, sort_keys=False)


def parse_config_text(text: str, fmt: str, cls: type[C] | str, *, source: str = "<string>") -> C:
    try:
        data = tomllib.loads(text) if fmt == "toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{source}: not valid {fmt.upper()}: {exc}") from exc
    return structure_config(data, cls, source=source)


def _format_of(path: pathlib.Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(f"{path}: config files must end in .toml or .json, not {suffix or '(no suffix)'!r}")
    return suffix[1:]


def load_config(path: str | os.PathLike[str], cls: type[C] | str) -> C:
    """Read a TOML or JSON config file into ``cls`` (a config class or a kind name)."""
    p = pathlib.Path(path)
    fmt = _format_of(p)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from exc
    return parse_config_text(text, fmt, cls, source=str(p))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a file so that a crash leaves either the old file or the new one, never half of one."""
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def save_config(config: Any, path: str | os.PathLike[str]) -> pathlib.Path:
    """Write ``config`` as TOML or JSON (chosen by suffix), atomically."""
    p = pathlib.Path(path)
    text = config_to_toml(config) if _format_of(p) == "toml" else config_to_json(config)
    atomic_write_bytes(p, text.encode("utf-8"))
    return p


def merge_overrides(config: C, overrides: Mapping[str, Any]) -> C:
    """Apply keyword overrides (nested dicts allowed) to a config, with full validation."""
    if not overrides:
        return config
    data = unstructure_config(config)

    def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in extra.items():
            if attrs.has(type(value)):
                value = unstructure_config(value)
            if isinstance(value, Mapping) and isinstance(out.get(key), dict) and value.get("type", out[key].get("type")) == out[key].get("type"):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out

    merged = merge(data, overrides)
    if isinstance(config, ComponentConfig) and kind_of_config(config):
        merged.pop("type", None)
    return structure_config(merged, type(config))
