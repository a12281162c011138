"""`tuskml demo --quick` end to end through the installed command line: every file the demo
promises, the numbers in them, the printed summary table and the progress bars of both halves.

One run (about 1-2 minutes on a 2-core machine) is shared by the tests of this module.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from PIL import Image

STM32F746_FLASH, STM32F746_SRAM = 1_048_576, 327_680


def _tuskml_command() -> list[str]:
    script = pathlib.Path(sys.executable).parent / "tuskml"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tuskml"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "120"}
    proc = subprocess.run([*_tuskml_command(), "demo", "--quick", "--out", str(out), "--threads", "1"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, f"tuskml demo --quick failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out, proc.stdout, proc.stderr


def _json(path: pathlib.Path) -> dict:
    assert path.is_file(), f"{path} is missing"
    return json.loads(path.read_text())


def test_index_html_shows_the_sample_grids_and_links_the_reports(demo):
    out, _, _ = demo
    page = (out / "index.html").read_text()
    shown = re.findall(r'<img src="([^"]+)"', page)
    assert {"mammoth2/eval/geneval_grid.png", "mammoth2/eval/edit_grid.png"} <= set(shown)
    for rel in shown:
        with Image.open(out / rel) as im:  # every picture the page shows exists and is a real image
            assert im.width >= 32 and im.height >= 32
    links = set(re.findall(r'<a href="([^"]+)"', page))
    assert {"mammoth2/eval/report.json", "tinyformer/result.json", "summary.json"} <= links
    assert all((out / rel).is_file() for rel in links)
    assert "int8 accuracy on the emulated Cortex-M7" in page and "answers" in page


def test_geneval_mini_report_scores_every_category_and_task(demo):
    out, _, _ = demo
    report = _json(out / "mammoth2" / "eval" / "report.json")
    geneval = report["geneval"]
    for cat in ("single_object", "two_object", "counting", "colors", "position", "color_attr", "overall"):
        assert 0.0 <= geneval[cat] <= 1.0, cat
    assert 0.0 <= report["edit"]["success"]["overall"] <= 1.0
    assert 0.0 <= report["understanding"]["accuracy"]["overall"] <= 1.0
    assert report["understanding"]["examples"], "no question/answer examples"
    summary = _json(out / "mammoth2" / "run" / "train_summary.json")
    assert summary["steps"] == summary["total_steps"] > 0 and not summary["stopped_early"]


def test_tinyformer_result_comes_from_the_emulated_cortex_m7(demo):
    out, _, _ = demo
    res = _json(out / "tinyformer" / "result.json")
    device = res["device"]
    assert device["samples"] == 32 and device["target"] == "stm32f746"
    assert "cortex-m7" in device["emulator"] and device["toolchain"]
    assert res["bit_exact"] is True and device["mismatching_bytes"] == 0
    assert 0.0 <= res["device_accuracy"] <= 1.0 and res["device_accuracy"] == device["device_accuracy"]
    assert 0 < res["flash_bytes"] <= STM32F746_FLASH and 0 < res["sram_bytes"] <= STM32F746_SRAM
    assert res["instructions"] > 0 and res["dense_instructions"] > 0
    assert res["dense_device"]["bit_exact"] is True
    assert pathlib.Path(device["elf"]).is_file()


def test_summary_json_has_the_rows_and_a_time_for_every_phase(demo):
    out, _, _ = demo
    summary = _json(out / "summary.json")
    assert summary["quick"] is True and summary["threads"] == 1
    assert summary["not_timed"] == [], "a watched stage was renamed upstream; update the demo's watches"
    seconds = {p["phase"]: p["seconds"] for p in summary["phases"]}
    for phase in ("imports (torch, timm, mammoth2, tinyformer, SparseEngine)", "mammoth2: train VQ tokenizer",
                  "mammoth2: train joint (NTP + FM)", "mammoth2 eval: text-to-image", "mammoth2 eval: edits",
                  "mammoth2 eval: answers", "tinyformer: SuperNAS", "tinyformer: supernet training",
                  "tinyformer: SparseNAS", "tinyformer: fine-tune", "tinyformer deploy: compile + link",
                  "tinyformer deploy: emulate Cortex-M7"):
        assert seconds.get(phase, 0.0) > 0.0, phase
    assert summary["wall_seconds"] >= seconds["tinyformer: search + deploy (total)"]
    rows = {(family, measure.strip()) for family, measure, _ in summary["rows"]}
    assert ("tinyformer", "instructions per image, dense") in rows


def test_printed_summary_table_has_every_promised_row(demo):
    _, stdout, _ = demo
    table = stdout[stdout.index("== summary =="):]
    for family, measure in (("mammoth2", "GenEvalMini overall (held-out prompts)"),
                            ("mammoth2", "edit success (all kinds)"),
                            ("mammoth2", "understanding accuracy (all kinds)"),
                            ("tinyformer", "int8 accuracy on the emulated Cortex-M7"),
                            ("tinyformer", "flash bytes (limit 1,048,576)"),
                            ("tinyformer", "SRAM bytes (limit 327,680)"),
                            ("tinyformer", "instructions per image, sparse"),
                            ("tinyformer", "instructions per image, dense"),
                            ("time", "tinyformer deploy: emulate Cortex-M7"),
                            ("time", "wall, whole demo"),
                            ("time", "torch threads")):
        assert re.search(rf"^{family}\s+{re.escape(measure)}\s+\S", table, re.M), (family, measure)


def test_both_halves_show_progress_bars(demo):
    _, _, stderr = demo
    for bar in ("mammoth2 train", "mammoth2 eval: sampling + scoring", "tinyformer: SuperNAS",
                "supernet (sandwich)", "tinyformer: SparseNAS", "fine-tune (masked)",
                "tinyformer: deploy (sparse + dense)"):
        assert re.search(rf"{re.escape(bar)}:\s+\d+%", stderr), f"no progress bar {bar!r}"
    assert re.search(r"mammoth2 train:\s+100%", stderr) and re.search(r"supernet \(sandwich\):\s+100%", stderr)
