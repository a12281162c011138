"""tuskml: typed registries filled by pluggy plugins, attrs configs, safetensors checkpoints.

    import tuskml
    tuskml.list_components("decoders")
    dit = tuskml.create("decoder", "mammoth2-dit", depth=2)
    tuskml.save(dit, "dit.safetensors"); same = tuskml.load("dit.safetensors")

Importing this package does not import torch; plugins import their heavy modules lazily.
"""

from tuskml._version import __version__
from tuskml.core.api import create, get_spec, list_components, resolve_config
from tuskml.core.checkpoint import load, read_metadata, save
from tuskml.core.config import (
    AlignerConfig,
    BackboneConfig,
    CodecConfig,
    ComponentConfig,
    DatasetConfig,
    DecoderConfig,
    EngineBackendConfig,
    ExpertsConfig,
    HardwareTargetConfig,
    ModelConfig,
    SearchSpaceConfig,
    SearchStrategyConfig,
    TokenizerConfig,
    config_class,
    load_config,
    save_config,
    structure_config,
    unstructure_config,
)
from tuskml.core.errors import (
    CheckpointError,
    ConfigError,
    DuplicateComponentError,
    InvalidSpecError,
    PluginError,
    TuskmlError,
    UnknownComponentError,
    UnknownKindError,
)
from tuskml.core.hookspecs import hookimpl
from tuskml.core.registry import KINDS, ComponentSpec

__all__ = [
    "KINDS", "AlignerConfig", "BackboneConfig", "CodecConfig", "CheckpointError", "ComponentConfig", "ComponentSpec",
    "ConfigError", "DatasetConfig", "DecoderConfig", "DuplicateComponentError", "EngineBackendConfig",
    "ExpertsConfig", "HardwareTargetConfig", "InvalidSpecError", "ModelConfig", "PluginError",
    "SearchSpaceConfig", "SearchStrategyConfig", "TokenizerConfig", "TuskmlError",
    "UnknownComponentError", "UnknownKindError", "__version__", "config_class", "create", "get_spec",
    "hookimpl", "list_components", "load", "load_config", "read_metadata", "resolve_config", "save",
    "save_config", "structure_config", "unstructure_config",
]
