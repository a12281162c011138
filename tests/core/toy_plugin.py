"""A small plugin used by the core tests: a decoder, a model holding a decoder, a hardware target."""

from __future__ import annotations

from typing import Literal

import attrs
import torch

import tuskml


@tuskml.config_class
class ToyDecoderConfig(tuskml.DecoderConfig):
    width: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    depth: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    scale: float = 0.5
    act: Literal["relu", "gelu"] = "relu"
    dims: tuple[int, ...] = (1, 2)
    note: str | None = None


@tuskml.config_class
class OtherDecoderConfig(tuskml.DecoderConfig):
    hidden: int = 3


@tuskml.config_class
class ToyModelConfig(tuskml.ModelConfig):
    decoder: tuskml.DecoderConfig = attrs.field(factory=ToyDecoderConfig)
    lr: float = 1e-3
    name: str = "toy"


@tuskml.config_class
class ToyBoardConfig(tuskml.HardwareTargetConfig):
    flash_bytes: int = 1024
    sram_bytes: int = 256


class ToyDecoder(torch.nn.Module):
    def __init__(self, cfg: ToyDecoderConfig) -> None:
        super().__init__()
        self.scale = cfg.scale
        self.width = cfg.width
        self.layers = torch.nn.Sequential(*[torch.nn.Linear(cfg.width, cfg.width) for _ in range(cfg.depth)])
        self.tied = self.layers[0]  # a shared module: checkpoints must handle it

    def forward(self, x):
        return self.layers(x) * self.scale

    def example_inputs(self):
        return (torch.ones(2, self.width),)


def build_decoder(cfg: ToyDecoderConfig) -> ToyDecoder:
    return ToyDecoder(cfg)


class ToyPlugin:
    @tuskml.hookimpl
    def tuskml_decoders(self):
        yield tuskml.ComponentSpec(name="toy-dit", factory=build_decoder, config_cls=ToyDecoderConfig,
                                   description="two linear layers")
        yield tuskml.ComponentSpec(name="other-dit", factory="tests.core.toy_plugin:build_other",
                                   config_cls=OtherDecoderConfig, description="lazy factory")

    @tuskml.hookimpl
    def tuskml_models(self):
        return [tuskml.ComponentSpec(name="toy-model", factory=lambda cfg: cfg, config_cls=ToyModelConfig,
                                     description="holds a decoder config")]

    @tuskml.hookimpl
    def tuskml_hardware_targets(self):
        yield tuskml.ComponentSpec(name="toy-board", factory=lambda cfg: cfg, config_cls=ToyBoardConfig,
                                   description="a tiny board")


def build_other(cfg: OtherDecoderConfig):
    return torch.nn.Linear(cfg.hidden, cfg.hidden)
