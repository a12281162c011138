"""How fast the tiny preset's DiT learns to copy a reference latent, with and without ``reference_shortcut``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mammoth2/probe_reference_copy.py [--steps 200]

The DiT of the ``tiny`` preset alone is trained with flow matching to reproduce a shapes-world image
that it is also given as its reference latent (a slightly noised copy), with one blank condition
token: the job the plan reference gives it. Both variants (in-context references only, the baseline;
plus the patch-by-patch shortcut) get the same seed, batches, steps and optimizer in one run. After
training, each samples 16 unseen images from noise (20 Euler steps, the preset's time shift) with the
exact image as reference; the table gives the mean squared error to it (pixels in [-1, 1]).
Writes benchmarks/results/mammoth2_reference_copy.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import torch

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"


def run(shortcut: bool, steps: int, batch: int, lr: float) -> dict[str, float]:
    import attrs

    import tuskml
    from tuskml.plugins.mammoth2 import flow_matching as fm
    from tuskml.plugins.mammoth2.configs_data import ShapesWorldConfig
    from tuskml.plugins.mammoth2.pipeline import load_preset
    from tuskml.plugins.mammoth2.shapes_world import ShapesWorld, to_tensor

    preset = load_preset("tiny")
    torch.manual_seed(0)
    dit = tuskml.create("decoders", attrs.evolve(preset.decoder, in_channels=3, reference_shortcut=shortcut))
    data = ShapesWorld(ShapesWorldConfig(task="t2i"))
    opt = torch.optim.AdamW(dit.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
    cond, cond_mask = torch.zeros(batch, 1, dit.cond_dim), torch.ones(batch, 1, dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    shift = preset.fm_shift or 1.0
    t0 = time.perf_counter()
    losses = []
    for step in range(steps):
        x1 = torch.stack([to_tensor(data[step * batch + i].image) for i in range(batch)])
        ref = x1 + 0.1 * torch.randn(x1.shape, generator=g)
        noise = torch.randn(x1.shape, generator=g)
        t = fm.sample_t(batch, shift=shift, generator=g)
        loss = fm.flow_matching_loss(dit(fm.interpolate(x1, noise, t), t, cond, cond_mask, [ref]), x1, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    train_s = time.perf_counter() - t0
    test = torch.stack([to_tensor(data[len(data) - 1 - i].image) for i in range(16)])
    with torch.no_grad():
        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return dit(x, t.expand(x.shape[0]) if t.dim() == 0 else t, cond[:16], cond_mask[:16], [test])

        out = fm.sample_flow(velocity, torch.randn(test.shape, generator=g), steps=20, shift=shift)
    return {"copy_mse": float(((out - test) ** 2).mean()), "final_loss": sum(losses[-20:]) / 20,
            "train_s": train_s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = {name: run(shortcut, args.steps, args.batch, args.lr)
            for name, shortcut in (("in-context only (baseline)", False), ("with reference_shortcut", True))}
    result = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "rows": rows,
              "machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                          "loadavg_before": load_before, "loadavg_after": os.getloadavg()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mammoth2_reference_copy.json").write_text(json.dumps(result, indent=2))
    base = rows["in-context only (baseline)"]["copy_mse"]
    md = ["# mammoth2 tiny DiT: learning to copy a reference latent", "",
          f"{args.steps} steps of {args.batch} images, lr {args.lr}, {torch.get_num_threads()} thread(s); "
          "copy error = MSE of 16 sampled images to their reference (20 Euler steps).", "",
          "| variant | copy MSE | x baseline | final FM loss | train s |", "|---|---|---|---|---|"]
    md += [f"| {k} | {v['copy_mse']:.4f} | {v['copy_mse'] / base:.3f} | {v['final_loss']:.4f} | {v['train_s']:.0f} |"
           for k, v in rows.items()]
    (RESULTS / "mammoth2_reference_copy.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
