"""Wall time of `tuskml demo --quick` and `tuskml demo`, per phase, against the targets.

Run: python benchmarks/demo/bench_demo.py [--runs quick:1,quick:2,full:1] [--out-root runs/bench_demo]
(writes benchmarks/results/demo_timing.json and .md). Each run is a fresh `tuskml demo` process with
``--threads N`` and ``OMP_NUM_THREADS=N``; the script records the process's wall time, the 1-minute
load average before and after (the machine may be shared: a busy machine slows every phase, and
badly so with 2 threads), and the demo's own per-phase times from its summary.json. The targets
(quick < 120 s, full < 600 s on 2 cores) are compared with the measured wall time of the same run;
the first run of each mode is the baseline its other thread counts are compared with.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
TARGET_SECONDS = {"quick": 120.0, "full": 600.0}


def _tuskml() -> list[str]:
    script = pathlib.Path(sys.executable).parent / "tuskml"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tuskml"]


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _last_progress(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [ln.strip() for ln in (text or "").replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1][-200:] if lines else ""


def run_once(mode: str, threads: int, out: pathlib.Path, timeout: float) -> dict:
    if out.exists():
        shutil.rmtree(out)
    demo_args = ["demo", "--out", str(out), "--threads", str(threads), *(["--quick"] if mode == "quick" else [])]
    cmd = [*_tuskml(), *demo_args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    base = {"mode": mode, "threads": threads, "command": " ".join(["tuskml", *demo_args]),
            "target_seconds": TARGET_SECONDS[mode], "timeout_seconds": timeout}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # a result too: this setting is far off the target
        return {**base, "timed_out": True, "wall_seconds": round(time.perf_counter() - t0, 2), "target_met": False,
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                "last_progress_line": _last_progress(exc.stderr), "phases": [], "results": {}}
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    rows = {measure.strip(): value for family, measure, value in summary["rows"] if family != "time"}
    return {
        **base, "timed_out": False,
        "wall_seconds": round(wall, 2), "demo_wall_seconds": round(summary["wall_seconds"], 2),
        "target_met": wall < TARGET_SECONDS[mode],
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
        "phases": summary["phases"], "not_timed": summary.get("not_timed", []),
        "results": {k: rows.get(k) for k in ("GenEvalMini overall (held-out prompts)",
                                             "int8 accuracy on the emulated Cortex-M7", "bit-exact vs reference",
                                             "instructions per image, sparse", "instructions per image, dense")},
    }


def to_markdown(report: dict) -> str:
    lines = [f"# `tuskml demo` wall time ({report['date']}, commit {report['commit']}, {report['cpu_count']} CPUs)",
             "", f"Command: `{report['command']}`", "",
             "Targets on 2 cores: `--quick` < 120 s, full < 600 s. The machine was shared with other jobs; the",
             "1-minute load average before/after each run is recorded (2 cores: load above 2 means waiting).", "",
             "| mode | threads | wall (s) | target (s) | met | vs first run of mode | load before -> after |"
             " int8 device acc. | GenEvalMini |", "|---|---|---|---|---|---|---|---|---|"]
    first: dict[str, float] = {}
    for r in report["runs"]:
        base = first.setdefault(r["mode"], r["wall_seconds"])
        wall = f"> {r['wall_seconds']:.0f} (stopped)" if r.get("timed_out") else f"{r['wall_seconds']:.1f}"
        lines.append(f"| {r['mode']} | {r['threads']} | {wall} | {r['target_seconds']:.0f} | "
                     f"{'yes' if r['target_met'] else 'NO'} | {r['wall_seconds'] / base:.2f}x | "
                     f"{r['loadavg_before'][0]:.2f} -> {r['loadavg_after'][0]:.2f} | "
                     f"{r['results'].get('int8 accuracy on the emulated Cortex-M7', '-')} | "
                     f"{r['results'].get('GenEvalMini overall (held-out prompts)', '-')} |")
    stopped = [r for r in report["runs"] if r.get("timed_out")]
    for r in stopped:
        lines += ["", f"{r['mode']} x{r['threads']} was stopped after {r['timeout_seconds']:.0f} s; its last progress "
                      f"line: `{r['last_progress_line']}`"]
    lines += ["", "## Per phase (seconds)", "",
              "'mammoth2 eval: ...' rows are parts of 'sampling + scoring', 'SuperNAS measure' and 'SparseNAS "
              "evaluate' of the row above them, 'tinyformer deploy: ...' rows of 'deploy (sparse + dense)'; "
              "'search + deploy (total)' holds every 'tinyformer:' row.", ""]
    names: list[str] = []
    for r in report["runs"]:
        names += [p["phase"] for p in r["phases"] if p["phase"] not in names]
    lines.append("| phase | " + " | ".join(f"{r['mode']} x{r['threads']}" for r in report["runs"]) + " |")
    lines.append("|---|" + "---|" * len(report["runs"]))
    for name in names:
        cells = []
        for r in report["runs"]:
            hit = [p for p in r["phases"] if p["phase"] == name]
            cells.append(f"{hit[0]['seconds']:.1f}" if hit else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="quick:1,quick:2,full:1",
                    help="comma-separated MODE:THREADS, MODE quick or full (default: %(default)s)")
    ap.add_argument("--out-root", default=str(ROOT / "runs" / "bench_demo"))
    ap.add_argument("--timeout-factor", type=float, default=2.5,
                    help="stop a run after this many times its target (default: %(default)s)")
    ap.add_argument("--results", default=str(RESULTS / "demo_timing"), help="path without .json/.md")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the recorded .json")
    args = ap.parse_args(argv)
    if args.markdown_only:
        path = pathlib.Path(args.results)
        path.with_suffix(".md").write_text(to_markdown(json.loads(path.with_suffix(".json").read_text())))
        return
    plan = []
    for item in args.runs.split(","):
        mode, _, threads = item.strip().partition(":")
        if mode not in TARGET_SECONDS or not threads.isdigit() or int(threads) < 1:
            raise SystemExit(f"--runs: {item!r} is not MODE:THREADS with MODE quick or full and THREADS >= 1")
        plan.append((mode, int(threads)))
    report = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "commit": _git_commit(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
              "python": platform.python_version(), "command": f"python benchmarks/demo/bench_demo.py --runs {args.runs} --timeout-factor {args.timeout_factor:g}",
              "runs": []}
    out = pathlib.Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    for mode, threads in plan:
        print(f"== tuskml demo {mode} with {threads} thread(s), load {os.getloadavg()[0]:.2f} ==", flush=True)
        run = run_once(mode, threads, pathlib.Path(args.out_root) / f"{mode}-t{threads}",
                       timeout=args.timeout_factor * TARGET_SECONDS[mode])
        print(f"   {run['wall_seconds']:.1f} s (target {run['target_seconds']:.0f} s)"
              f"{' STOPPED' if run['timed_out'] else ''}", flush=True)
        report["runs"].append(run)
        # written after every run, so a long run that is stopped by hand keeps the earlier ones
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(to_markdown(report))
    print(to_markdown(report))


if __name__ == "__main__":
    main()
