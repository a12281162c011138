"""The whole plugin contract of tuskml: one hook per registry, plus one for CLI commands.

A plugin is any module or object with functions marked ``@tuskml.hookimpl`` whose names match the
hooks below. Installed packages expose plugins through the entry-point group ``tuskml``::

    [project.entry-points.tuskml]
    my_plugin = "my_package.plugin"

Built-in plugins (mammoth2, tinyformer, ...) use exactly the same hooks. Each registry hook returns
(or yields) :class:`tuskml.ComponentSpec` records; the factory may be a lazy ``"module:callable"``
string so listing components imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from tuskml.core.registry import ComponentSpec

hookspec = pluggy.HookspecMarker("tuskml")
hookimpl = pluggy.HookimplMarker("tuskml")


@hookspec
def tuskml_backbones() -> Iterable[ComponentSpec]:
    """Register backbones (AR language models, vision encoders).

    Example::

        import attrs, torch, tuskml

        @tuskml.config_class
        class TinyMLPConfig(tuskml.BackboneConfig):
            width: int = 16

        def build(cfg: TinyMLPConfig) -> torch.nn.Module:
            return torch.nn.Linear(cfg.width, cfg.width)

        @tuskml.hookimpl
        def tuskml_backbones():
            yield tuskml.ComponentSpec(name="tiny-mlp", factory=build, config_cls=TinyMLPConfig,
                                       description="one linear layer")
    """
    return []


@hookspec
def tuskml_experts() -> Iterable[ComponentSpec]:
    """Register expert layouts (which layers get generation experts, and of what kind).

    Example::

        @tuskml.hookimpl
        def tuskml_experts():
            return [tuskml.ComponentSpec(name="my-experts", factory="my_pkg.experts:build",
                                         config_cls=MyExpertsConfig)]
    """
    return []


@hookspec
def tuskml_tokenizers() -> Iterable[ComponentSpec]:
    """Register tokenizers (text tokenizers and discrete visual tokenizers).

    Example::

        @tuskml.hookimpl
        def tuskml_tokenizers():
            yield tuskml.ComponentSpec(name="my-bytes", factory="my_pkg.tok:ByteTokenizer",
                                       config_cls=MyBytesConfig, description="bytes + 3 specials")
    """
    return []


@hookspec
def tuskml_aligners() -> Iterable[ComponentSpec]:
    """Register aligners, which turn AR hidden states into decoder condition tokens.

    Example::

        @tuskml.hookimpl
        def tuskml_aligners():
            yield tuskml.ComponentSpec(name="my-aligner", factory="my_pkg.align:build",
                                       config_cls=MyAlignerConfig)
    """
    return []


@hookspec
def tuskml_decoders() -> Iterable[ComponentSpec]:
    """Register image decoders (diffusion transformers).

    Example::

        @tuskml.hookimpl
        def tuskml_decoders():
            yield tuskml.ComponentSpec(name="my-dit", factory="my_pkg.dit:MyDiT",
                                       config_cls=MyDiTConfig, description="a tiny DiT")
    """
    return []


@hookspec
def tuskml_datasets() -> Iterable[ComponentSpec]:
    """Register datasets. The factory returns an object with ``__len__`` and ``__getitem__``.

    Example::

        @tuskml.hookimpl
        def tuskml_datasets():
            yield tuskml.ComponentSpec(name="my-data", factory="my_pkg.data:load",
                                       config_cls=MyDataConfig)
    """
    return []


@hookspec
def tuskml_search_spaces() -> Iterable[ComponentSpec]:
    """Register NAS search spaces (supernets).

    Example::

        @tuskml.hookimpl
        def tuskml_search_spaces():
            yield tuskml.ComponentSpec(name="my-space", factory="my_pkg.space:build",
                                       config_cls=MySpaceConfig)
    """
    return []


@hookspec
def tuskml_search_strategies() -> Iterable[ComponentSpec]:
    """Register NAS search strategies.

    Example::

        @tuskml.hookimpl
        def tuskml_search_strategies():
            yield tuskml.ComponentSpec(name="my-search", factory="my_pkg.search:build",
                                       config_cls=MySearchConfig)
    """
    return []


@hookspec
def tuskml_engine_backends() -> Iterable[ComponentSpec]:
    """Register inference-engine backends (reference executor, C code generator ...).

    Example::

        @tuskml.hookimpl
        def tuskml_engine_backends():
            yield tuskml.ComponentSpec(name="my-backend", factory="my_pkg.engine:build",
                                       config_cls=MyBackendConfig)
    """
    return []


@hookspec
def tuskml_hardware_targets() -> Iterable[ComponentSpec]:
    """Register hardware targets (microcontrollers, host).

    Example::

        @tuskml.config_class
        class MyBoardConfig(tuskml.HardwareTargetConfig):
            flash_bytes: int = 2 * 1024 * 1024
            sram_bytes: int = 512 * 1024

        @tuskml.hookimpl
        def tuskml_hardware_targets():
            yield tuskml.ComponentSpec(name="my-board", factory=lambda cfg: cfg,
                                       config_cls=MyBoardConfig)
    """
    return []


@hookspec
def tuskml_codecs() -> Iterable[ComponentSpec]:
    """Register latent codecs (image <-> latent tensor: identity patches, a VAE ...).

    Example::

        @tuskml.hookimpl
        def tuskml_codecs():
            yield tuskml.ComponentSpec(name="my-vae", factory="my_pkg.vae:MyVAE",
                                       config_cls=MyVAEConfig)
    """
    return []


@hookspec
def tuskml_models() -> Iterable[ComponentSpec]:
    """Register whole models composed of other components (e.g. ``mammoth2``).

    Example::

        @tuskml.hookimpl
        def tuskml_models():
            yield tuskml.ComponentSpec(name="my-model", factory="my_pkg.model:MyModel",
                                       config_cls=MyModelConfig)
    """
    return []


@hookspec
def tuskml_cli_commands(cli: Any) -> None:
    """Add sub-commands to the ``tuskml`` command line (``cli`` is a ``click.Group``).

    Import heavy modules inside the command function, not at module level, so ``tuskml --help``
    stays fast.

    Example::

        import click

        @tuskml.hookimpl
        def tuskml_cli_commands(cli):
            @cli.command("hello")
            @click.argument("name")
            def hello(name):
                click.echo(f"hello {name}")
    """
    return None


#: registry kind -> hook name
REGISTRY_HOOKS: dict[str, str] = {
    "backbones": "tuskml_backbones",
    "experts": "tuskml_experts",
    "tokenizers": "tuskml_tokenizers",
    "aligners": "tuskml_aligners",
    "decoders": "tuskml_decoders",
    "datasets": "tuskml_datasets",
    "search_spaces": "tuskml_search_spaces",
    "search_strategies": "tuskml_search_strategies",
    "engine_backends": "tuskml_engine_backends",
    "hardware_targets": "tuskml_hardware_targets",
    "codecs": "tuskml_codecs",
    "models": "tuskml_models",
}
