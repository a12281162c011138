"""Peak memory and time of one mammoth2 training step, against its two halves run alone.

A step is forward + backward + AdamW step on one fixed batch (text-to-image samples, an edit and,
with a ViT, an understanding sample). Three scenarios, measured in one run:

* ``joint``: the whole model, loss = NTP + lambda * FM (what training runs);
* ``ar_only`` (baseline): the same token batch through the AR backbone, NTP loss only;
* ``dit_only`` (baseline): the DiT's flow-matching loss on the same latents with a random condition
  of the aligner's output shape.

``joint / (ar_only + dit_only)`` shows what the coupling costs on top of the two halves (the aligner,
the ViT and keeping every hidden state for the aligner). Times are medians of interleaved steps after
warm-up. Peak memory of one (warm) step, counting every live tensor (weights, gradients, AdamW state,
activations): ``torch.cuda.max_memory_allocated`` on a GPU, torch's memory-profiler timeline on a CPU.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mammoth2/bench_train_step.py              # tiny, CPU
    .venv/bin/python benchmarks/mammoth2/bench_train_step.py --preset small --device cuda    # on a GPU

Writes benchmarks/results/mammoth2_train_step[_<preset>_<device>].json and .md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import time

import torch
import torch.nn.functional as F

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
SCENARIOS = ("joint", "ar_only", "dit_only")


def make_step(scenario: str, preset: str, device: str, batch_size: int):
    """Build the model and a closure running one training step of ``scenario``."""
    from tuskml.plugins.mammoth2 import flow_matching as fm
    from tuskml.plugins.mammoth2.model import EditSample, Mammoth2Model, TextToImageSample, UnderstandingSample
    from tuskml.plugins.mammoth2.pipeline import load_preset
    from tuskml.plugins.mammoth2.sequence import ntp_labels, positions_from_mask

    torch.manual_seed(0)
    model = Mammoth2Model(load_preset(preset)).to(device).train()
    size = model.config.image_size
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size + 1, 3, size, size, generator=g) * 2 - 1
    plan = "a circle at top left and a square at bottom right"  # used by scene_plan models
    samples = [TextToImageSample(f"prompt number {i} with some words", images[i], plan=plan)
               for i in range(batch_size - 1)]
    samples.append(EditSample(images[-1], "make it brighter", images[0], plan=plan))
    if model.vision_encoder is not None:
        samples.append(UnderstandingSample(images[1], "what is in the picture?", "shapes and colours"))
    batch = model.make_batch(samples)

    if scenario == "joint":
        params = list(model.parameters())

        def loss_fn() -> torch.Tensor:
            return model(**batch).loss
    elif scenario == "ar_only":
        params = list(model.backbone.parameters())
        ids, mask = batch["input_ids"], batch["attention_mask"]
        labels = ntp_labels(ids, batch["roles"])

        def loss_fn() -> torch.Tensor:
            logits = model.backbone(ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
            return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    elif scenario == "dit_only":
        params = list(model.decoder.parameters())
        with torch.no_grad():
            x1 = model.encode_latents(batch["target_images"][batch["has_target"]])
            ref = model.encode_latents(batch["source_images"][batch["has_source"]])
            # the aligner's output shape for this batch (one no-grad pass)
            out = model.backbone(batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
            rows = batch["has_target"]
            cond, cond_mask = model.condition([h[rows] for h in out.hidden_states], batch["roles"][rows],
                                              batch["attention_mask"][rows])
        cond = torch.randn_like(cond)
        n_ref = ref.shape[0]

        def loss_fn() -> torch.Tensor:
            noise = torch.randn_like(x1)
            t = fm.sample_t(x1.shape[0], device=x1.device)
            x_t = fm.interpolate(x1, noise, t)
            plain = model.decoder(x_t[:-n_ref], t[:-n_ref], cond[:-n_ref], cond_mask[:-n_ref], None)
            edit = model.decoder(x_t[-n_ref:], t[-n_ref:], cond[-n_ref:], cond_mask[-n_ref:], [ref])
            return fm.flow_matching_loss(torch.cat([plain, edit]), x1, noise)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")

    opt = torch.optim.AdamW(params, lr=1e-4)
    n_params = sum(p.numel() for p in params)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step, n_params, int(batch["input_ids"].shape[1]), model.vision_encoder is not None


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_peak(step, device: str) -> float:
    """Peak tensor memory (MiB) during one step: weights, gradients, optimizer state and activations.

    GPU: ``torch.cuda.max_memory_allocated``. CPU: torch's memory profiler timeline (every tensor it
    sees alive, by category), maximum over time of the total.
    """
    if device.startswith("cuda"):
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        step()
        sync(device)
        return torch.cuda.max_memory_allocated() / 2**20
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    return max(sum(s) for s in sizes) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    steps, params, seq_len = {}, {}, 0
    for name in SCENARIOS:
        steps[name], params[name], length, has_vit = make_step(name, args.preset, args.device, args.batch_size)
        seq_len = max(seq_len, length)
        steps[name]()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in SCENARIOS}
    for _ in range(args.repeats):
        for name in SCENARIOS:  # interleaved, so load changes hit every scenario alike
            sync(args.device)
            start = time.perf_counter()
            steps[name]()
            sync(args.device)
            times[name].append((time.perf_counter() - start) * 1000)

    peaks = {name: measure_peak(steps[name], args.device) for name in SCENARIOS}

    median = {name: statistics.median(v) for name, v in times.items()}
    halves = median["ar_only"] + median["dit_only"]
    result = {
        "benchmark": "mammoth2_train_step",
        "preset": args.preset,
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "sequence_length": seq_len,
        "repeats": args.repeats,
        "parameters": params,
        "step_ms_median": median,
        "step_ms_all": times,
        "peak_mib": peaks,
        "joint_over_halves_time": median["joint"] / halves,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "peak_method": "cuda max_memory_allocated" if args.device.startswith("cuda")
        else "torch memory-profiler timeline, max over time of all live tensors (weights, grads, AdamW state, activations)",
    }
    suffix = "" if (args.preset, args.device) == ("tiny", "cpu") else f"_{args.preset}_{args.device.split(':')[0]}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"mammoth2_train_step{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = "\n".join(
        f"| {name} | {params[name]:,} | {median[name]:.1f} | {peaks[name]:.1f} |" for name in SCENARIOS
    )
    md = (
        f"# mammoth2: one training step ({args.preset} preset, {result['device']}, {result['threads']} threads)\n\n"
        f"Batch: {args.batch_size + int(has_vit)} samples ({args.batch_size - 1} text-to-image, 1 edit"
        f"{', 1 understanding' if has_vit else ''}), {seq_len} tokens per row; "
        f"forward + backward + AdamW. Median of {args.repeats} interleaved steps after one warm-up.\n\n"
        f"| scenario | parameters given to AdamW | step (ms) | peak memory (MiB) |\n|---|---|---|---|\n{rows}\n\n"
        f"joint / (ar_only + dit_only) time: {result['joint_over_halves_time']:.2f}\n\n"
        f"Peak memory: {result['peak_method']}.\n"
    )
    (RESULTS / f"mammoth2_train_step{suffix}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
