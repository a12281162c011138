"""The demo's report: summary rows and index.html from results shaped like the real runs'."""

from __future__ import annotations

from PIL import Image

from tuskml.plugins.demo.run import summary_rows, write_index


def _results():
    return {
        "mammoth2": {"train_seconds": 12.5, "report": {
            "geneval": {"overall": 0.5, "single_object": 1.0, "counting": 0.0, "n": {"single_object": 2}},
            "edit": {"success": {"recolour": 1.0, "overall": 0.25}, "preservation": {"overall": 0.75}},
            "understanding": {"accuracy": {"count": 1.0, "overall": 0.5}},
        }},
        "tinyformer": {"arch_summary": "r16 w0.5", "float_accuracy": 0.99, "device_accuracy": 0.97,
                       "bit_exact": True, "flash_bytes": 106132, "sram_bytes": 13104,
                       "instructions": 750, "dense_instructions": 1000},
    }


def test_summary_rows_report_overall_scores_and_ratio():
    rows = {(family, measure.strip()): value for family, measure, value in summary_rows(_results())}
    assert rows[("mammoth2", "GenEvalMini overall (held-out prompts)")] == "0.500"
    assert rows[("mammoth2", "edit success (all kinds)")] == "0.250"
    assert rows[("mammoth2", "understanding accuracy (all kinds)")] == "0.500"
    assert ("mammoth2", "n") not in rows  # per-category counts are not scores
    assert rows[("tinyformer", "bit-exact vs reference")] == "yes"
    assert rows[("tinyformer", "flash bytes (limit 1,048,576)")] == "106,132"
    assert rows[("tinyformer", "sparse / dense instructions")] == "0.750"


def test_index_html_shows_pictures_tables_and_raw_results(tmp_path):
    (tmp_path / "mammoth2" / "eval").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "mammoth2" / "eval" / "geneval_grid.png")
    (tmp_path / "mammoth2" / "eval" / "report.json").write_text("{}")
    (tmp_path / "tinyformer" / "deploy").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "tinyformer" / "deploy" / "internal.png")
    index = write_index(tmp_path, _results(), summary_rows(_results()), wall=3.0)
    page = index.read_text()
    assert '<img src="mammoth2/eval/geneval_grid.png">' in page
    assert "internal.png" not in page  # build folders stay out of the page
    assert '<a href="mammoth2/eval/report.json">' in page
    assert "<td>int8 accuracy on the emulated Cortex-M7</td><td>0.970</td>" in page
