"""Safetensors checkpoints that know what they hold.

The string metadata carries the component's kind, registered name, config (JSON) and the tuskml
version, so :func:`load` rebuilds the module from the file alone. Writes go to a temporary file in
the same folder and are renamed into place, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

from tuskml.core.config import ComponentConfig, component_name, kind_of_config, structure_config, unstructure_config
from tuskml.core.errors import CheckpointError, TuskmlError, UnknownComponentError
from tuskml.core.registry import KINDS

FORMAT_VERSION = "1"
_PREFIX = "tuskml."


def _config_of(module: Any, config: ComponentConfig | None) -> ComponentConfig:
    for candidate in (config, getattr(module, "tuskml_config", None), getattr(module, "config", None)):
        if isinstance(candidate, ComponentConfig):
            return candidate
    raise CheckpointError(
        f"cannot tell which component {type(module).__qualname__} is: build it with tuskml.create(...) "
        f"or pass config=... to tuskml.save"
    )


def save(module: Any, path: str | os.PathLike[str], *, config: ComponentConfig | None = None,
         metadata: Mapping[str, str] | None = None) -> pathlib.Path:
    """Write ``module``'s weights and identity to a safetensors file, atomically."""
    from safetensors.torch import save_model

    from tuskml import __version__
    from tuskml.core.plugins import get_registry

    cfg = _config_of(module, config)
    kind, name = kind_of_config(cfg), component_name(cfg)
    meta = {
        f"{_PREFIX}format": FORMAT_VERSION,
        f"{_PREFIX}kind": kind,
        f"{_PREFIX}name": name,
        f"{_PREFIX}config": json.dumps(unstructure_config(cfg), sort_keys=True),
        f"{_PREFIX}version": __version__,
        f"{_PREFIX}source": get_registry(kind).get(name).source,
    }
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise CheckpointError(f"checkpoint metadata must map str to str; got {key!r}: {value!r}")
        if key.startswith(_PREFIX):
            raise CheckpointError(f"metadata key {key!r} is reserved (prefix {_PREFIX!r})")
        meta[key] = value
    p = pathlib.Path(path)
    with atomic_path(p) as tmp:
        save_model(module, tmp, metadata=meta)
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary file name next to ``path``; when the block succeeds, fsync it and rename it
    onto ``path``. A crash or an error leaves the old file (if any) untouched and no temp file."""
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(tensors: Mapping[str, Any], path: str | os.PathLike[str],
                 metadata: Mapping[str, str] | None = None) -> pathlib.Path:
    """Atomically write plain tensors (training state, optimizer moments) as safetensors."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp,
                  metadata=dict(metadata) if metadata else None)
    return pathlib.Path(path)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors file; a clear error if it is missing, truncated or foreign."""
    from safetensors import safe_open

    p = pathlib.Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    size = p.stat().st_size
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = fh.metadata() or {}
            # safetensors checks the header; make sure every tensor's bytes are really there
            for key in fh.keys():
                fh.get_slice(key)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {p} ({size} bytes) is not a readable safetensors file; it may be truncated or "
            f"corrupt: {exc}"
        ) from exc
    return meta


def load(path: str | os.PathLike[str], *, device: str = "cpu", strict: bool = True) -> Any:
    """Rebuild the component stored in ``path`` (config from the metadata, then the weights)."""
    from safetensors.torch import load_model

    from tuskml.core.api import create
    from tuskml.core.plugins import get_registry

    p = pathlib.Path(path)
    meta = read_metadata(p)
    if f"{_PREFIX}kind" not in meta or f"{_PREFIX}config" not in meta:
        found = ", ".join(sorted(meta)) or "none"
        raise CheckpointError(
            f"{p} is a safetensors file but not a tuskml checkpoint: its metadata lacks "
            f"'tuskml.kind'/'tuskml.config' (metadata keys: {found}). Load its tensors with "
            f"safetensors.torch.load_file, or build the component yourself and load_state_dict"
        )
    kind, name = meta[f"{_PREFIX}kind"], meta.get(f"{_PREFIX}name", "?")
    if kind not in KINDS:
        raise CheckpointError(f"{p} holds a component of unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    try:
        spec = get_registry(kind).get(name)
    except UnknownComponentError as exc:
        raise CheckpointError(
            f"{p} holds {KINDS[kind]} {name!r} (written by plugin {meta.get(_PREFIX + 'source', '?')!r}, "
            f"tuskml {meta.get(_PREFIX + 'version', '?')}), which no installed plugin provides. {exc}"
        ) from exc
    try:
        raw = json.loads(meta[f"{_PREFIX}config"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{p}: the stored config is not valid JSON: {exc}") from exc
    raw.pop("type", None)
    config: Any = structure_config(raw, spec.config_cls, source=f"{p} (stored config)")
    module = create(kind, config)
    try:
        missing, unexpected = load_model(module, str(p), strict=False, device=device)
    except (RuntimeError, TuskmlError) as exc:
        raise CheckpointError(f"{p}: weights do not fit {KINDS[kind]} {name!r}: {exc}") from exc
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{p}: weights do not match {KINDS[kind]} {name!r}: missing tensors {sorted(missing)[:8]}, "
            f"unexpected tensors {sorted(unexpected)[:8]}"
        )
    return module
