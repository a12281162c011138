"""``tuskml tinyformer search``: the command-line face of :mod:`.search_pipeline`.

Nothing heavy is imported until the command runs, so ``tuskml --help`` stays fast.
"""

from __future__ import annotations

import json
from typing import Any

import click


def _kib(value: int | None) -> int | None:
    return None if value is None else int(value) * 1024


def add_search_command(cli: click.Group) -> None:
    from tuskml.plugins.tinyformer.deploy_cli import tinyformer_group

    group = tinyformer_group(cli)

    @group.command("search")
    @click.option("--dataset", default="digits", show_default=True, help="registered dataset (digits, shapes-cls, cifar10)")
    @click.option("--dataset-root", default=None, help="folder of the dataset files (cifar10's 'root')")
    @click.option("--target", default="stm32f746", show_default=True, help="registered hardware target")
    @click.option("--out", "out_dir", default="runs/nas", show_default=True, type=click.Path(file_okay=False))
    @click.option("--flash-kb", type=click.IntRange(1), default=None, help="tighter flash limit than the target's (KiB)")
    @click.option("--sram-kb", type=click.IntRange(1), default=None, help="tighter SRAM limit than the target's (KiB)")
    @click.option("--max-instructions", type=click.IntRange(0), default=0, show_default=True,
                  help="cap on estimated instructions per inference (0 = none)")
    @click.option("--resolutions", default=None, help="comma-separated input resolutions of the space, e.g. 16,32")
    @click.option("--width-mults", default=None, help="comma-separated width multipliers of the space, e.g. 0.5,1.0")
    @click.option("--supernas-samples", type=click.IntRange(1), default=16, show_default=True,
                  help="subnets sampled per candidate space")
    @click.option("--supernet-steps", type=click.IntRange(1), default=100, show_default=True)
    @click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
    @click.option("--lr", type=float, default=3e-3, show_default=True)
    @click.option("--rule", type=click.Choice(["sandwich", "single-path"]), default="sandwich", show_default=True)
    @click.option("--population", type=click.IntRange(2), default=8, show_default=True)
    @click.option("--generations", type=click.IntRange(1), default=2, show_default=True)
    @click.option("--compare-random", is_flag=True, help="also run random search with the same budget")
    @click.option("--finetune-steps", type=click.IntRange(0), default=100, show_default=True)
    @click.option("--min-sparsity", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0, show_default=True,
                  help="raise every prunable layer's block sparsity to at least this while fine-tuning (gradually)")
    @click.option("--device-samples", type=click.IntRange(0), default=0, show_default=True,
                  help="test images run on the emulated device (0 = all)")
    @click.option("--device-chunk", type=click.IntRange(1), default=32, show_default=True,
                  help="test images compiled into the firmware per emulator run")
    @click.option("--no-deploy", is_flag=True, help="skip building and emulating the final model")
    @click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
                  help="processes for candidate evaluation")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--quiet", is_flag=True, help="no progress output")
    def search_command(**o: Any) -> None:
        """SuperNAS -> supernet training -> SparseNAS -> masked fine-tuning -> emulated deployment.

        Writes OUT/result.json (arch, sparsity per layer, float and device accuracy, flash, SRAM,
        instructions, dense instructions, search history) and the plots.
        """
        from tuskml.plugins.tinyformer.search_pipeline import SearchRunOptions, run_search

        def floats(text: str | None, name: str, cast: type) -> tuple | None:
            if text is None:
                return None
            try:
                values = tuple(cast(v) for v in text.split(",") if v.strip())
            except ValueError:
                raise click.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint=name) from None
            if not values:
                raise click.BadParameter("empty list", param_hint=name)
            return values

        space: dict[str, Any] = {}
        if (r := floats(o["resolutions"], "--resolutions", int)) is not None:
            space["resolutions"] = r
        if (w := floats(o["width_mults"], "--width-mults", float)) is not None:
            space["width_mults"] = w
        data: dict[str, Any] = {}
        if o["dataset_root"]:
            data["root"] = o["dataset_root"]
        opts = SearchRunOptions(
            dataset=o["dataset"], target=o["target"], out_dir=o["out_dir"], flash_bytes=_kib(o["flash_kb"]),
            sram_bytes=_kib(o["sram_kb"]), max_instructions=o["max_instructions"], space_overrides=space,
            dataset_overrides=data, supernas_samples=o["supernas_samples"], supernet_steps=o["supernet_steps"],
            batch_size=o["batch_size"], lr=o["lr"], rule=o["rule"], population=o["population"],
            generations=o["generations"], compare_random=o["compare_random"], finetune_steps=o["finetune_steps"],
            min_sparsity=o["min_sparsity"],
            device_samples=o["device_samples"], device_chunk=o["device_chunk"], deploy=not o["no_deploy"], workers=o["workers"], seed=o["seed"],
            progress=not o["quiet"])
        result = run_search(opts)
        keys = ("space", "arch_summary", "float_accuracy", "device_accuracy", "bit_exact", "flash_bytes", "sram_bytes",
                "instructions", "dense_instructions")
        click.echo(json.dumps({k: result[k] for k in keys}, indent=2))
