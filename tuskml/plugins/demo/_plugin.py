"""Hookimpl of the built-in ``demo`` plugin: the ``tuskml demo`` command."""

from __future__ import annotations

import click

from tuskml.core.hookspecs import hookimpl


@hookimpl
def tuskml_cli_commands(cli: click.Group) -> None:
    @cli.command("demo")
    @click.option("--quick", is_flag=True, help="A 2-minute tour with tiny budgets (the full demo takes ~10).")
    @click.option("--out", type=click.Path(file_okay=False), default="runs/demo", show_default=True,
                  help="Folder for every output; open its index.html.")
    @click.option("--only", type=click.Choice(["mammoth2", "tinyformer"]), default=None,
                  help="Run one half only.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--threads", type=click.IntRange(min=1), default=None,
                  help="torch threads [default: OMP_NUM_THREADS, else the cores the load average leaves idle]")
    def demo(quick: bool, out: str, only: str | None, seed: int, threads: int | None) -> None:
        """Train a tiny mammoth2 on the shapes world and deploy a tinyformer model to an emulated
        Cortex-M7: sample grids, GenEvalMini report, accuracy/flash/SRAM/instructions, index.html."""
        from tuskml.plugins.demo.run import run_demo
        from tuskml.plugins.demo.timing import process_age_seconds

        run_demo(out, quick=quick, only=only, seed=seed, threads=threads, startup_seconds=process_age_seconds())
