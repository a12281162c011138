"""AR backbone speed: KV-cached vs uncached decoding, and mammoth2-ar vs transformers' Qwen3.

Run: OMP_NUM_THREADS=1 python benchmarks/mammoth2/bench_ar.py [--sizes toy,100m] [--threads 1]
Writes benchmarks/results/bench_ar.json and bench_ar.md.

1. Greedy decoding of generation tokens with ``mammoth2-ar`` (ffn experts in the upper half of the
   layers), tokens/s with the KV cache vs recomputing the whole sequence each step; both produce the
   same tokens (checked).
2. ``mammoth2-ar`` vs ``transformers.Qwen3ForCausalLM`` of the same config with the same weights
   (copied; checked to give the same logits): one forward over a batch, and cached greedy decoding.
   For a like-for-like comparison the mammoth2-ar here has ``experts=none`` and a 1-entry generation
   vocabulary (the extra head is then negligible); a second row shows the default with experts.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import time

import torch

import tuskml

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"

SIZES = {
    # the default toy backbone
    "toy": dict(text_vocab_size=264, gen_vocab_size=64, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                head_dim=16, intermediate_size=128),
    # ~100M parameters (with experts in layers 4..7)
    "100m": dict(text_vocab_size=16384, gen_vocab_size=4096, hidden_size=768, num_layers=8, num_heads=12,
                 num_kv_heads=4, head_dim=64, intermediate_size=2048),
}
DECODE = {"toy": dict(prompt=32, new=128, batch=1), "100m": dict(prompt=32, new=48, batch=1)}
FORWARD = {"toy": dict(batch=4, seq=128), "100m": dict(batch=2, seq=256)}


def timed(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, run round-robin so that load from other processes
    on a shared machine hits every contender alike (instead of whichever ran during a busy spell)."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def gen_prompt(model, batch: int, length: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, model.text_vocab_size, (batch, length), generator=g)


@torch.no_grad()
def decode_cached(model, prompt: torch.Tensor, new: int) -> torch.Tensor:
    out = model(prompt, use_cache=True)
    cache, tokens = out.past_key_values, []
    for _ in range(new):
        nxt = out.logits[:, -1, model.gen_vocab_start:].argmax(-1, keepdim=True) + model.gen_vocab_start
        tokens.append(nxt)
        out = model(nxt, past_key_values=cache, use_cache=True)
    return torch.cat(tokens, 1)


@torch.no_grad()
def decode_uncached(model, prompt: torch.Tensor, new: int) -> torch.Tensor:
    seq = prompt
    for _ in range(new):
        logits = model(seq).logits
        nxt = logits[:, -1, model.gen_vocab_start:].argmax(-1, keepdim=True) + model.gen_vocab_start
        seq = torch.cat((seq, nxt), 1)
    return seq[:, prompt.shape[1]:]


@torch.no_grad()
def decode_hf_cached(model, prompt: torch.Tensor, new: int) -> torch.Tensor:
    out = model(prompt, use_cache=True)
    cache, tokens = out.past_key_values, []
    for _ in range(new):
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(nxt)
        out = model(nxt, past_key_values=cache, use_cache=True)
    return torch.cat(tokens, 1)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def bench_cache(size: str, repeats: int) -> dict:
    torch.manual_seed(0)
    model = tuskml.create("backbone", "mammoth2-ar", **SIZES[size],
                          experts={"type": "ffn", "start_layer": SIZES[size]["num_layers"] // 2}).eval()
    d = DECODE[size]
    prompt = gen_prompt(model, d["batch"], d["prompt"])
    same = torch.equal(decode_cached(model, prompt, d["new"]), decode_uncached(model, prompt, d["new"]))
    t = timed({"cached": lambda: decode_cached(model, prompt, d["new"]),
               "uncached": lambda: decode_uncached(model, prompt, d["new"])}, repeats)
    t_cached, t_uncached = t["cached"], t["uncached"]
    tokens = d["batch"] * d["new"]
    return {"size": size, "params": n_params(model), **d, "same_tokens": same,
            "cached_tokens_per_s": tokens / t_cached, "uncached_tokens_per_s": tokens / t_uncached,
            "speedup_cache": t_uncached / t_cached}


def bench_vs_qwen3(size: str, repeats: int) -> list[dict]:
    import transformers

    cfg = SIZES[size]
    qcfg = transformers.Qwen3Config(vocab_size=cfg["text_vocab_size"], hidden_size=cfg["hidden_size"],
                                    intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_layers"],
                                    num_attention_heads=cfg["num_heads"], num_key_value_heads=cfg["num_kv_heads"],
                                    head_dim=cfg["head_dim"], rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                                    tie_word_embeddings=False, max_position_embeddings=4096,
                                    attn_implementation="sdpa")
    torch.manual_seed(0)
    qwen = transformers.Qwen3ForCausalLM(qcfg).eval()
    rows = []
    variants = {
        "mammoth2-ar (experts=none, gen vocab 1)": dict(cfg, gen_vocab_size=1, experts={"type": "none"}),
        "mammoth2-ar (ffn experts upper half, gen vocab as configured)":
            dict(cfg, experts={"type": "ffn", "init": "copy", "start_layer": cfg["num_layers"] // 2}),
    }
    f, d = FORWARD[size], DECODE[size]
    ids = torch.randint(0, cfg["text_vocab_size"], (f["batch"], f["seq"]), generator=torch.Generator().manual_seed(1))
    prompt = ids[: d["batch"], : d["prompt"]]
    def dec_text(model):  # greedy over the text vocabulary, like the Qwen3 loop
        out = model(prompt, use_cache=True)
        cache = out.past_key_values
        for _ in range(d["new"]):
            nxt = out.logits[:, -1, : cfg["text_vocab_size"]].argmax(-1, keepdim=True)
            out = model(nxt, past_key_values=cache, use_cache=True)

    models, diffs = {}, {}
    with torch.no_grad():
        ref_logits = qwen(ids).logits
        for label, overrides in variants.items():
            torch.manual_seed(0)
            ours = tuskml.create("backbone", "mammoth2-ar", **overrides).eval()
            ours.load_qwen3_state_dict(qwen.state_dict())
            models[label] = ours
            diffs[label] = float((ours(ids).logits[..., : cfg["text_vocab_size"]] - ref_logits).abs().max())
        fwd = timed({"qwen3": lambda: qwen(ids), **{k: (lambda m=m: m(ids)) for k, m in models.items()}}, repeats)
        dec = timed({"qwen3": lambda: decode_hf_cached(qwen, prompt, d["new"]),
                     **{k: (lambda m=m: dec_text(m)) for k, m in models.items()}}, repeats)
    for label, ours in models.items():
        t_fwd, t_dec, t_q_fwd, t_q_dec = fwd[label], dec[label], fwd["qwen3"], dec["qwen3"]
        rows.append({"size": size, "variant": label, "params_ours": n_params(ours), "params_qwen3": n_params(qwen),
                     "forward_batch": f["batch"], "forward_seq": f["seq"], "max_abs_logit_diff": diffs[label],
                     "forward_s_ours": t_fwd, "forward_s_qwen3": t_q_fwd, "forward_speed_ratio": t_q_fwd / t_fwd,
                     "decode_new_tokens": d["new"],
                     "decode_tokens_per_s_ours": d["batch"] * d["new"] / t_dec,
                     "decode_tokens_per_s_qwen3": d["batch"] * d["new"] / t_q_dec,
                     "decode_speed_ratio": t_q_dec / t_dec})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="toy,100m")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--markdown-only", action="store_true", help="re-render bench_ar.md from bench_ar.json")
    args = parser.parse_args()
    if args.markdown_only:
        write_markdown(json.loads((RESULTS / "bench_ar.json").read_text()))
        return
    torch.set_num_threads(args.threads)
    sizes = [s for s in args.sizes.split(",") if s]
    import transformers

    result = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "transformers": transformers.__version__, "threads": args.threads, "repeats": args.repeats,
              "kv_cache": [], "vs_qwen3": []}
    for size in sizes:
        result["kv_cache"].append(bench_cache(size, args.repeats))
        print(result["kv_cache"][-1], flush=True)
        result["vs_qwen3"].extend(bench_vs_qwen3(size, args.repeats))
        print(result["vs_qwen3"][-2:], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_ar.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result)


def write_markdown(result: dict) -> None:
    md = [f"# AR backbone benchmarks (CPU, {result['threads']} thread(s), torch {result['torch']}, "
          f"transformers {result['transformers']}; median of {result['repeats']})", "",
          "## KV-cached vs uncached greedy decoding (mammoth2-ar, ffn experts in the upper half)", "",
          "| size | params | prompt | new tokens | cached tok/s | uncached tok/s | speed-up | same tokens |",
          "|---|---|---|---|---|---|---|---|"]
    for r in result["kv_cache"]:
        md.append(f"| {r['size']} | {r['params'] / 1e6:.1f}M | {r['prompt']} | {r['new']} | {r['cached_tokens_per_s']:.1f} | "
                  f"{r['uncached_tokens_per_s']:.1f} | {r['speedup_cache']:.2f}x | {r['same_tokens']} |")
    md += ["", "## mammoth2-ar vs transformers Qwen3ForCausalLM (same config, same weights)", "",
           "| size | variant | params ours / qwen3 | max logit diff | forward s ours / qwen3 | forward ratio | "
           "decode tok/s ours / qwen3 | decode ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in result["vs_qwen3"]:
        md.append(f"| {r['size']} | {r['variant']} | {r['params_ours'] / 1e6:.1f}M / {r['params_qwen3'] / 1e6:.1f}M | "
                  f"{r['max_abs_logit_diff']:.1e} | {r['forward_s_ours']:.4f} / {r['forward_s_qwen3']:.4f} | "
                  f"{r['forward_speed_ratio']:.2f}x | {r['decode_tokens_per_s_ours']:.1f} / "
                  f"{r['decode_tokens_per_s_qwen3']:.1f} | {r['decode_speed_ratio']:.2f}x |")
    md += ["", "Ratios > 1 mean mammoth2-ar is faster (qwen3 time / ours). Timings alternate between the "
           "contenders (round-robin) on a 2-core machine shared with other jobs; repeated runs of this script "
           "moved the ratios by up to ~20%, so only larger differences mean anything.",
           "", "Where mammoth2-ar can be slower: the variant with experts computes a generation head (64 entries "
           "at toy size, 4096 at 100m) at every position and concatenates text and generation logits, which "
           "Qwen3 does not; the like-for-like variant (experts=none, 1 generation entry) measures the decoder "
           "itself. Both use the same matmuls (profiled: >85% of forward time in aten::mm for either model), so "
           "at equal work the two should tie. At toy size per-call Python overhead dominates, so the KV cache "
           "gains only ~2x there."]
    (RESULTS / "bench_ar.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))




if __name__ == "__main__":
    main()
