"""The plugin manager: the only place that fills the registries.

Order: built-in plugins, then entry points of group ``tuskml`` (unless
``TUSKML_DISABLE_PLUGIN_AUTOLOAD`` is set), then ``check_pending()``. Plugins named in
``TUSKML_DISABLED_PLUGINS=a,b`` are skipped, built-in or not. A plugin that fails to import, or whose
hook raises, is recorded with its distribution and error and skipped; the others still load.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata as md
import os
import traceback
from collections.abc import Iterable
from typing import Any

import attrs
import pluggy

from tuskml.core import hookspecs
from tuskml.core.errors import InvalidSpecError, TuskmlError
from tuskml.core.registry import KINDS, ComponentSpec, Registry, normalize_kind

ENTRY_POINT_GROUP = "tuskml"

#: Built-in plugins: plugin name -> module holding its hookimpls. Each loads lazily-built components.
BUILTIN_PLUGINS: dict[str, str] = {
    "mcu-targets": "tuskml.mcu_targets._plugin",
    "sparseengine": "tuskml.backends._plugin",
    "tinyformer": "tuskml.plugins.tinyformer._plugin",
    "mammoth2": "tuskml.plugins.mammoth2._plugin",
    "demo": "tuskml.plugins.demo._plugin",
}


@attrs.frozen
class PluginInfo:
    name: str
    distribution: str
    version: str
    builtin: bool


@attrs.frozen
class PluginFailure:
    name: str
    distribution: str
    error: str
    detail: str = ""

    def describe(self) -> str:
        return f"plugin {self.name!r} (distribution {self.distribution}) failed: {self.error}"


@attrs.define
class PluginState:
    pm: pluggy.PluginManager
    plugins: dict[str, PluginInfo] = attrs.Factory(dict)
    failures: list[PluginFailure] = attrs.Factory(list)
    disabled: list[str] = attrs.Factory(list)


def _disabled_names() -> set[str]:
    raw = os.environ.get("TUSKML_DISABLED_PLUGINS", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _autoload_disabled() -> bool:
    return os.environ.get("TUSKML_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() not in ("", "0", "false", "no")


def _tuskml_version() -> str:
    from tuskml import __version__

    return __version__


@functools.cache
def get_state() -> PluginState:
    pm = pluggy.PluginManager("tuskml")
    pm.add_hookspecs(hookspecs)
    state = PluginState(pm)
    disabled = _disabled_names()
    for name, module_name in BUILTIN_PLUGINS.items():
        if name in disabled:
            state.disabled.append(name)
            continue
        try:
            module = importlib.import_module(module_name)
            pm.register(module, name=name)
        except Exception as exc:  # a broken plugin must not take the others down
            state.failures.append(PluginFailure(name, "tuskml", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            continue
        state.plugins[name] = PluginInfo(name, "tuskml", _tuskml_version(), True)
    if not _autoload_disabled():
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            if ep.name in disabled:
                state.disabled.append(ep.name)
                continue
            if ep.name in state.plugins or pm.get_plugin(ep.name) is not None:
                continue  # the same distribution seen twice on sys.path
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as exc:
                state.failures.append(PluginFailure(ep.name, dist, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
                continue
            state.plugins[ep.name] = PluginInfo(ep.name, dist, version, False)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise TuskmlError(f"plugin {exc.plugin!r} implements a hook tuskml does not define: {exc}") from exc
    return state


def _failures_hint() -> str:
    failures = get_state().failures
    if not failures:
        return ""
    return " Note: " + "; ".join(f.describe() for f in failures)


def _as_specs(result: Any, plugin: str, hook: str) -> Iterable[ComponentSpec]:
    if result is None:
        return []
    if isinstance(result, ComponentSpec):
        result = [result]
    specs = list(result)
    for spec in specs:
        if not isinstance(spec, ComponentSpec):
            raise InvalidSpecError(f"plugin {plugin!r}: {hook}() returned {spec!r}, expected tuskml.ComponentSpec")
    return specs


@functools.cache
def get_registries() -> dict[str, Registry[Any]]:
    """Every registry, filled by calling each plugin's hooks (each plugin on its own)."""
    from tuskml.core.config import KIND_BASES

    state = get_state()
    registries: dict[str, Registry[Any]] = {kind: Registry(kind, _failures_hint) for kind in KINDS}
    failed: set[str] = set()
    for kind, hook_name in hookspecs.REGISTRY_HOOKS.items():
        hook = getattr(state.pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # registration order: built-ins first
            plugin = impl.plugin_name
            if plugin in failed:
                continue
            try:
                specs = _as_specs(impl.function(), plugin, hook_name)
                for spec in specs:
                    spec = attrs.evolve(spec, source=plugin)
                    base = KIND_BASES[kind]
                    if not issubclass(spec.config_cls, base):
                        raise InvalidSpecError(
                            f"plugin {plugin!r}: {KINDS[kind]} {spec.name!r} has config class "
                            f"{spec.config_cls.__qualname__}, which must derive from tuskml.{base.__name__}"
                        )
                    registries[kind].add(spec)
            except InvalidSpecError as exc:
                _record_failure(state, plugin, str(exc))
                failed.add(plugin)
            except TuskmlError:
                raise  # duplicate names: the user must choose, so this is loud
            except Exception as exc:
                _record_failure(state, plugin, f"{hook_name}() raised {type(exc).__name__}: {exc}")
                failed.add(plugin)
    return registries


def _record_failure(state: PluginState, plugin: str, error: str) -> None:
    info = state.plugins.pop(plugin, None)
    dist = info.distribution if info else "?"
    state.failures.append(PluginFailure(plugin, dist, error, traceback.format_exc()))


def get_registry(kind: str) -> Registry[Any]:
    return get_registries()[normalize_kind(kind)]


def get_plugin_manager() -> pluggy.PluginManager:
    return get_state().pm


def register_plugin(plugin: Any, name: str | None = None) -> None:
    """Register a plugin object at run time (tests, notebooks) and rebuild the registries."""
    state = get_state()
    state.pm.register(plugin, name=name)
    pname = state.pm.get_name(plugin) or repr(plugin)
    state.plugins[pname] = PluginInfo(pname, "(runtime)", "", False)
    _invalidate_registries()


def unregister_plugin(name: str) -> None:
    state = get_state()
    state.pm.unregister(name=name)
    state.plugins.pop(name, None)
    _invalidate_registries()


def _invalidate_registries() -> None:
    from tuskml.core.config import get_converter

    get_registries.cache_clear()
    get_converter.cache_clear()


def reset() -> None:
    """Forget every loaded plugin; the next use loads them again (reads the environment again)."""
    get_state.cache_clear()
    _invalidate_registries()
