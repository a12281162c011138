"""``tuskml tinyformer search`` end to end with toy budgets, down to the emulated Cortex-M7."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tuskml.core.cli import build_cli


def test_search_end_to_end_on_the_emulated_target(tmp_path):
    out = tmp_path / "nas"
    args = ["tinyformer", "search", "--dataset", "digits", "--target", "stm32f746", "--out", str(out),
            "--resolutions", "16", "--width-mults", "0.5,1.0", "--supernas-samples", "2", "--supernet-steps", "4",
            "--batch-size", "32", "--population", "2", "--generations", "1", "--compare-random",
            "--finetune-steps", "4", "--min-sparsity", "0.5", "--device-samples", "3", "--device-chunk", "2", "--quiet"]
    res = CliRunner().invoke(build_cli(), args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    r = json.loads((out / "result.json").read_text())
    for key in ("arch", "sparsity", "float_accuracy", "device_accuracy", "flash_bytes", "sram_bytes", "instructions",
                "dense_instructions", "history"):
        assert r[key] is not None, key
    assert r["bit_exact"] is True and r["device"]["samples"] == 3
    # the device's own argmax matches the integer reference executor exactly (bit-exact run)
    assert r["device_accuracy"] == r["device"]["reference_accuracy"]
    assert r["flash_bytes"] <= 1024 * 1024 and r["sram_bytes"] <= 320 * 1024
    assert r["instructions"] > 0 and r["dense_instructions"] > 0
    assert r["space"] in {"w0.5-r16", "w1-r16"} and r["arch"]["resolution"] == 16
    assert set(r["history"]) == {"supernas", "sparsenas", "random"}
    assert r["comparison"]["random"]["evaluations"] == r["comparison"]["sparsenas"]["evaluations"]
    for name in ("supernas_flops_cdf.png", "sparsenas_pareto.png", "comparison_pareto.png", "supernet.safetensors",
                 "model.safetensors", "sparsenas.json", "supernas.json"):
        assert (out / name).is_file(), name

    # pruned blocks stayed zero through fine-tuning: the saved model has at least the searched sparsity
    from safetensors.torch import load_file

    from tuskml.backends.sparse_engine.pruning import block_sparsity

    weights = load_file(str(out / "model.safetensors"))
    checked = 0
    for path, choice in r["sparsity"].items():
        if choice["sparsity"] > 0:
            w = weights[f"{path}.weight"]
            assert block_sparsity(w, choice["block"]) >= choice["sparsity"] - 0.5 / (w.shape[0]), path
            checked += 1
    assert checked or all(c["sparsity"] == 0 for c in r["sparsity"].values())
    # --min-sparsity: every layer is deployed at least that sparse, and the searched plan is kept
    assert r["min_sparsity"] == 0.5 and set(r["searched_sparsity"]) == set(r["sparsity"])
    assert all(c["sparsity"] >= 0.5 for c in r["sparsity"].values())


def test_search_reports_a_target_nothing_fits(tmp_path):
    args = ["tinyformer", "search", "--out", str(tmp_path / "x"), "--resolutions", "16", "--width-mults", "0.5",
            "--sram-kb", "1", "--supernas-samples", "1", "--quiet"]
    res = CliRunner().invoke(build_cli(), args)
    assert res.exit_code != 0
    assert "no candidate space" in res.output and "SRAM" in res.output
