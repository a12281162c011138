"""``tuskml mammoth2 ...``: train, generate, edit, ask and eval on the command line.

Imports nothing heavy at module level (``tuskml --help`` must stay fast); each command imports
torch and the model when it runs.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import click


def add_commands(cli: click.Group) -> None:
    @cli.group("mammoth2")
    def mammoth2() -> None:
        """Train and use a mammoth2 model on the shapes world."""

    @mammoth2.command("train")
    @click.option("--config", "config", required=True,
                  help="A training preset name (tiny, small) or a TOML/JSON TrainConfig file.")
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="The run folder.")
    @click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
    def train_cmd(config: str, out: str, resume: bool) -> None:
        """Train the visual tokenizer, then the joint model (works under torchrun for DDP)."""
        import torch

        from tuskml.plugins.mammoth2.configs_train import load_train_config
        from tuskml.plugins.mammoth2.train import train

        try:
            result = train(load_train_config(config), out, resume=resume)
        finally:
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
        click.echo(json.dumps(result))

    @mammoth2.command("generate")
    @click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
    @click.argument("prompts", nargs=-1, required=True)
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the PNG files.")
    @click.option("--seed", default=0, show_default=True)
    @click.option("--steps", default=20, show_default=True, help="DiT sampling steps.")
    @click.option("--guidance", default=3.0, show_default=True)
    # AR sampling defaults = EvalSettings' (benchmarks/results/mammoth2_t2i_sampling_train.md)
    @click.option("--ar-guidance", default=1.5, show_default=True, help="CFG scale on the AR image tokens' logits.")
    @click.option("--temperature", default=0.7, show_default=True, help="AR sampling temperature (0: greedy).")
    @click.option("--top-k", default=8, show_default=True, help="AR sampling top_k (0: all codes).")
    def generate_cmd(run_dir: str, prompts: tuple[str, ...], out: str, seed: int, steps: int, guidance: float,
                     ar_guidance: float, temperature: float, top_k: int) -> None:
        """Text to image: one PNG per PROMPT in --out."""
        from tuskml.plugins.mammoth2.evaluate import load_run_pipeline

        pipe = load_run_pipeline(run_dir)
        images = pipe.generate(list(prompts), seed=seed, steps=steps, guidance=guidance, ar_guidance=ar_guidance,
                               temperature=temperature, top_k=top_k or None)
        folder = pathlib.Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        for i, (prompt, im) in enumerate(zip(prompts, images)):
            path = folder / f"{i:03d}-{_slug(prompt)}.png"
            im.save(path)
            click.echo(str(path))

    @mammoth2.command("edit")
    @click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
    @click.argument("image", type=click.Path(exists=True, dir_okay=False))
    @click.argument("instruction")
    @click.option("--out", required=True, type=click.Path(dir_okay=False), help="The edited PNG.")
    @click.option("--seed", default=0, show_default=True)
    @click.option("--steps", default=20, show_default=True)
    @click.option("--guidance", default=3.0, show_default=True, help="Text guidance.")
    @click.option("--image-guidance", default=1.5, show_default=True)
    @click.option("--ar-guidance", default=1.0, show_default=True, help="CFG scale on the AR plan's logits.")
    @click.option("--temperature", default=0.0, show_default=True, help="AR sampling temperature (0: greedy).")
    def edit_cmd(run_dir: str, image: str, instruction: str, out: str, seed: int, steps: int, guidance: float,
                 image_guidance: float, ar_guidance: float, temperature: float) -> None:
        """Edit IMAGE by INSTRUCTION."""
        from tuskml.plugins.mammoth2.evaluate import load_run_pipeline

        pipe = load_run_pipeline(run_dir)
        result = pipe.edit(_open_image(image), instruction, seed=seed, steps=steps, text_guidance=guidance,
                           image_guidance=image_guidance, ar_guidance=ar_guidance, temperature=temperature)
        pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
        result.save(out)
        click.echo(out)

    @mammoth2.command("ask")
    @click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
    @click.argument("image", type=click.Path(exists=True, dir_okay=False))
    @click.argument("question", default="")
    @click.option("--max-new-tokens", default=160, show_default=True)
    @click.option("--show-description", is_flag=True,
                  help="a describe_first model: print the description it wrote before the answer too")
    def ask_cmd(run_dir: str, image: str, question: str, max_new_tokens: int, show_description: bool) -> None:
        """Answer QUESTION about IMAGE (no question: a caption)."""
        from tuskml.plugins.mammoth2.evaluate import load_run_pipeline

        pipe = load_run_pipeline(run_dir)
        click.echo(pipe.ask(_open_image(image), question, max_new_tokens=max_new_tokens,
                            keep_description=show_description))

    @mammoth2.command("eval")
    @click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
    @click.option("--out", required=True, type=click.Path(file_okay=False),
                  help="Folder for report.json and the sample grids.")
    @click.option("--per-category", default=8, show_default=True, help="Samples per category / kind.")
    @click.option("--split", type=click.Choice(["heldout", "train"]), default="heldout", show_default=True)
    @click.option("--seed", default=0, show_default=True)
    @click.option("--steps", default=20, show_default=True)
    @click.option("--temperature", default=0.7, show_default=True,
                  help="AR sampling temperature of text-to-image image tokens (0: greedy).")
    @click.option("--edit-temperature", default=0.0, show_default=True,
                  help="AR sampling temperature of edit plans (0: greedy).")
    def eval_cmd(run_dir: str, out: str, per_category: int, split: str, seed: int, steps: int,
                 temperature: float, edit_temperature: float) -> None:
        """GenEvalMini per category, edit success/preservation per kind, understanding accuracy per kind."""
        from tuskml.plugins.mammoth2.evaluate import EvalSettings, evaluate_run

        report = evaluate_run(run_dir, out, EvalSettings(per_category=per_category, split=split, seed=seed,
                                                         steps=steps, temperature=temperature,
                                                         edit_temperature=edit_temperature))
        click.echo(json.dumps(_summary(report), indent=2))


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "geneval.overall": report["geneval"]["overall"],
        "edit.success": report["edit"]["success"]["overall"],
        "edit.preservation": report["edit"]["preservation"]["overall"],
        "understanding.accuracy": report["understanding"]["accuracy"].get("overall"),
    }


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower())[:40].strip("-") or "image"


def _open_image(path: str) -> Any:
    from PIL import Image

    from tuskml.core.errors import TuskmlError

    try:
        return Image.open(path).convert("RGB")
    except OSError as exc:
        raise TuskmlError(f"cannot read image {path}: {exc}") from exc
