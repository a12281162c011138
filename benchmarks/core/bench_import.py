"""Start-up cost: `import tuskml` and `tuskml --help` vs `import torch`, in fresh interpreters.

Run: python benchmarks/core/bench_import.py   (writes benchmarks/results/core_import.json and .md)
The claim checked: neither `import tuskml` nor `tuskml --help` imports torch, and both start far
faster than torch itself does.
"""

from __future__ import annotations

import json
import pathlib
import statistics
import subprocess
import sys
import time

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
REPEATS = 5


def wall(cmd: list[str]) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def importtime_ms(module: str) -> float:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                         text=True, check=True).stderr.strip().splitlines()
    last = [line for line in out if line.rstrip().endswith(f"| {module}")][-1]
    return int(last.split("|")[1]) / 1000.0


def main() -> None:
    py = sys.executable
    torch_loaded = subprocess.run([py, "-c", "import sys, tuskml; from tuskml.core.cli import build_cli; "
                                   "build_cli(); print('torch' in sys.modules)"],
                                  capture_output=True, text=True, check=True).stdout.strip()
    result = {
        "python": sys.version.split()[0],
        "repeats": REPEATS,
        "import_tuskml_importtime_ms": importtime_ms("tuskml"),
        "import_torch_importtime_ms": importtime_ms("torch"),
        "wall_python_noop_s": wall([py, "-c", "pass"]),
        "wall_import_tuskml_s": wall([py, "-c", "import tuskml"]),
        "wall_tuskml_help_s": wall([py, "-m", "tuskml", "--help"]),
        "wall_import_torch_s": wall([py, "-c", "import torch"]),
        "torch_imported_by_tuskml_help": torch_loaded == "True",
    }
    result["ratio_import_tuskml_vs_torch"] = result["wall_import_tuskml_s"] / result["wall_import_torch_s"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "core_import.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["| measurement | value |", "|---|---|"] + [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                                                  for k, v in result.items()]
    (RESULTS / "core_import.md").write_text(f"# Start-up cost (median of {REPEATS} runs)\n\n" + "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
