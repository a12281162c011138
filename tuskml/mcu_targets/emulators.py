"""The emulators in one place: unicorn (always, PyPI) and QEMU mps2-an500 (when installed).

    from tuskml.mcu_targets.emulators import run_unicorn, run_qemu
    res = run_unicorn("build/firmware.elf", outputs={"tk_test_outputs": None})
    res.exit_code, res.instructions, res.per_function["tk_layer_0"]

Neither emulator models cycles; instruction counts are exact, cycles are only an estimate.
"""

from tuskml.mcu_targets.qemu_emulator import QemuResult, qemu_available, run_qemu
from tuskml.mcu_targets.unicorn_emulator import CPU_MODELS, EmulatorResult, run_unicorn


def run_host(executable: str, *, args: tuple[str, ...] = (), timeout_s: float = 300.0) -> tuple[int, str]:
    """Run a host build; returns (exit code, stdout)."""
    import subprocess

    from tuskml.mcu_targets.errors import EmulatorError

    try:
        proc = subprocess.run([executable, *args], capture_output=True, text=True, timeout=timeout_s)
    except OSError as exc:
        raise EmulatorError(f"cannot run host program {executable}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise EmulatorError(f"host program {executable} did not exit within {timeout_s} s") from exc
    return proc.returncode, proc.stdout


def run_target(build_result, **kwargs):
    """Run a :class:`~tuskml.mcu_targets.toolchains.BuildResult` on the emulator its target needs.

    Cortex-M targets run in unicorn with the target's CPU model; the host runs natively (then only
    ``exit_code`` and ``stdout`` are filled).
    """
    from tuskml.mcu_targets.targets import get_target

    target = get_target(build_result.target)
    if target.is_host:
        code, out = run_host(str(build_result.elf))
        return EmulatorResult(exit_code=code, outputs={}, instructions=0, per_function={}, per_function_self={},
                              calls={}, stdout=out, emulator="host", cycles_estimate=0)
    return run_unicorn(build_result.elf, cpu=target.cpu.name, **kwargs)


__all__ = ["CPU_MODELS", "EmulatorResult", "QemuResult", "qemu_available", "run_host", "run_qemu", "run_target",
           "run_unicorn"]
