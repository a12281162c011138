"""Torch-free config of the ``c`` engine backend (imported when plugins load)."""

from __future__ import annotations

import attrs

import tuskml


@tuskml.config_class
class CBackendConfig(tuskml.EngineBackendConfig):
    """Generate C for the integer graph, build it and run it.

    ``use_dsp``: use the SXTB16/SMLAD kernels (on the host they run as a bit-exact C emulation).
    ``target``: a registered hardware target; ``"host"`` builds with the native ``cc`` and runs
    natively, a Cortex-M target (``stm32f746`` ...) builds firmware and runs it in the unicorn
    emulator, which also returns exact instruction counts per layer.
    """

    use_dsp: bool = attrs.field(default=True)
    target: str = attrs.field(default="host")
