"""A third-party tuskml plugin: a board with its memory limits and a tiny MLP decoder."""

import attrs

import tuskml


@tuskml.config_class
class NucleoH743Config(tuskml.HardwareTargetConfig):
    """STM32H743 (Cortex-M7, 480 MHz): 2 MB flash, 1 MB SRAM (512 KB AXI usable as one arena)."""

    flash_bytes: int = 2 * 1024 * 1024
    sram_bytes: int = 512 * 1024
    clock_hz: int = 480_000_000


@tuskml.config_class
class MLPDecoderConfig(tuskml.DecoderConfig):
    channels: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    hidden: int = attrs.field(default=16, validator=attrs.validators.ge(1))


@tuskml.hookimpl
def tuskml_hardware_targets():
    yield tuskml.ComponentSpec(name="nucleo-h743", factory=lambda cfg: cfg, config_cls=NucleoH743Config,
                               description="STM32H743 Nucleo board (example plugin)")


@tuskml.hookimpl
def tuskml_decoders():
    # a lazy factory string: torch is imported only when the decoder is built
    yield tuskml.ComponentSpec(name="example-mlp", factory="tuskml_example_board.mlp:MLPDecoder",
                               config_cls=MLPDecoderConfig, description="per-pixel MLP (example plugin)")
