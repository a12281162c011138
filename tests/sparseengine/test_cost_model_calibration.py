"""The engine's instruction estimate against the exact count of the emulated Cortex-M7.

The search ranks candidates by ``cost_model``'s estimate and caps them with it, so the estimate must
track what the generated C really executes: a small block-pruned hybrid model (MBConv stages with
depthwise convs, a transformer block, dense and BRL sparse layers) is compiled for stm32f746 and run
once on unicorn; the whole-model estimate, and those of its two main kinds of work (depthwise convs,
matrix kernels dense + sparse), must be within 20% of the measured counts. No skip: the toolchain (ziglang) and unicorn are installed with the test extras.
"""

from __future__ import annotations

import random

import numpy as np
import torch

import tuskml
from tuskml.backends.c.codegen import generate_c_project
from tuskml.backends.sparse_engine.pipeline import prepare
from tuskml.backends.sparse_engine.reference import quantize_input, run
from tuskml.mcu_targets.emulators import run_unicorn
from tuskml.mcu_targets.targets import get_target
from tuskml.mcu_targets.toolchains import build
from tuskml.plugins.tinyformer.sparsenas import random_candidate


def test_estimate_within_20_percent_of_emulated_count(tmp_path):
    torch.manual_seed(0)
    space = tuskml.create("search_spaces", "tinyformer-hybrid", in_channels=1, num_classes=10, resolutions=(16,),
                          width_mults=(1.0,), depth_choices=(1,), transformer_starts=(2,), transformer_depths=(1,)).eval()
    cand = random_candidate(space, random.Random(0), (4, 8), (0.5, 0.75))
    net = space.extract(cand.arch).eval()
    tgt = get_target("stm32f746")
    x = torch.randn(4, 1, 16, 16)
    dep = prepare(net, x, sparsity=cand.sparsity, block=cand.blocks, dsp=tgt.has_dsp)
    g = dep.graph
    assert any(n.attrs.get("sparse_block") for n in g.nodes), "the test model should use the sparse kernel"
    q = np.ascontiguousarray(quantize_input(g, x[:1].numpy()))
    ref = np.ascontiguousarray(run(g, q).outputs[0]).reshape(1, -1).astype(np.int8)
    proj = generate_c_project(g, dep.plan, tmp_path / "src", use_dsp=True, test_inputs=q, expected_outputs=ref)
    elf = build(tgt, proj.firmware_sources, include_dirs=proj.include_dirs, out_dir=tmp_path / "build", name="model").elf
    res = run_unicorn(elf, outputs={"tk_test_outputs": proj.output_bytes}, cpu=tgt.cpu.name)
    assert np.array_equal(np.frombuffer(res.outputs["tk_test_outputs"], np.int8).reshape(1, -1), ref)

    measured = res.per_function["tk_invoke"]
    estimated = sum(dep.estimated_instructions.values())
    assert 0.8 <= estimated / measured <= 1.2, f"estimate {estimated:.0f} vs measured {measured}"
    per_kind: dict[str, list[float]] = {}
    for layer in proj.layers:
        op = layer.op
        kind = "matrix" if op in ("conv2d", "fully_connected") else op
        e, m = per_kind.get(kind, (0.0, 0.0))
        per_kind[kind] = [e + dep.estimated_instructions[layer.node], m + res.per_function.get(layer.function, 0)]
    table = {k: (round(e), m) for k, (e, m) in per_kind.items()}
    # the two kinds that carry most of the work: depthwise convs and the (dense + BRL) matrix kernels
    for kind in ("depthwise_conv2d", "matrix"):
        e, m = per_kind[kind]
        assert m >= 0.2 * measured, table
        assert 0.8 <= e / m <= 1.2, f"{kind}: estimate {e:.0f} vs measured {m:.0f}; all kinds {table}"
