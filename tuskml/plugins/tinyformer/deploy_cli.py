"""``tuskml tinyformer deploy``: the command-line face of :mod:`tuskml.plugins.tinyformer.deploy`.

Kept apart from ``_plugin.py`` so the plugin module stays small and torch-free: nothing heavy is
imported until the command runs.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import click


def tinyformer_group(cli: click.Group) -> click.Group:
    """The ``tinyformer`` sub-command group (created once, shared by every tinyformer command)."""
    group = cli.commands.get("tinyformer")
    if isinstance(group, click.Group):
        return group

    @cli.group("tinyformer")
    def tinyformer() -> None:
        """TinyFormer: search sparse hybrid models under MCU limits and deploy them (SparseEngine)."""

    return tinyformer


def _shape(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(v) for v in value.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 3,32,32, got {value!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise click.BadParameter(f"expected positive integers such as 3,32,32, got {value!r}")
    return shape


def add_deploy_command(cli: click.Group) -> None:
    group = tinyformer_group(cli)

    @group.command("deploy")
    @click.argument("model")
    @click.option("--target", default="stm32f746", show_default=True, help="registered hardware target")
    @click.option("--backend", default="c", show_default=True, help="engine backend that generates the code")
    @click.option("--out", "out_dir", default="build", show_default=True, type=click.Path(file_okay=False),
                  help="folder for the generated C project and the build")
    @click.option("--dataset", default=None, help="registered dataset for calibration and test inputs (default: random)")
    @click.option("--sparsity", default=None, type=click.FloatRange(0.0, 1.0, max_open=True),
                  help="block-prune prunable layers to this block sparsity first")
    @click.option("--block", default=4, show_default=True, type=click.IntRange(1), help="pruning block size")
    @click.option("--input-shape", default=None, callback=_shape,
                  help="input shape without batch, e.g. 3,32,32 (when the model has no example_inputs)")
    @click.option("--calibration-samples", default=16, show_default=True, type=click.IntRange(1))
    @click.option("--samples", "test_samples", default=2, show_default=True, type=click.IntRange(1),
                  help="test inputs run on the target and compared with the reference")
    @click.option("--emulator", default="unicorn", show_default=True, type=click.Choice(["unicorn", "qemu"]),
                  help="unicorn: outputs read back + exact per-layer instructions; qemu (mps2-an500): the firmware's "
                       "own byte comparison (exit code) only")
    @click.option("--toolchain", default=None, type=click.Choice(["gcc", "zig"]), help="force a cross compiler")
    @click.option("--dsp/--no-dsp", "use_dsp", default=None, help="DSP (SXTB16/SMLAD) kernels (default: if the target has them)")
    @click.option("--seed", default=0, show_default=True, type=int)
    @click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="also write the report as JSON")
    def deploy_command(model: str, json_path: str | None, **options: Any) -> None:
        """Quantize MODEL to int8, plan memory, check it fits, generate C, build, run on the target
        (emulated), compare bit-exact with the reference, print a per-layer table.

        MODEL is a tuskml checkpoint (.safetensors) or 'package.module:factory' returning a torch
        module. Exits with status 1 if the target's outputs differ from the reference.
        """
        from tuskml.plugins.tinyformer.deploy import deploy

        report = deploy(model, **options)
        click.echo(report.table())
        if json_path:
            path = pathlib.Path(json_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
            click.echo(f"report written to {path}")
        if not report.bit_exact:
            raise click.ClickException(
                f"outputs on {report.target} differ from the reference ({report.mismatching_bytes} bytes, "
                f"exit code {report.exit_code})")
