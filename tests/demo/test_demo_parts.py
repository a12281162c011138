"""The demo's own parts, without training anything: phase timing by watches, the output folder,
the thread choice."""

from __future__ import annotations

import types

import pytest

from tuskml.plugins.demo.run import MARKER, DemoError, prepare_out, resolve_threads
from tuskml.plugins.demo.timing import PhaseClock, Watch, process_age_seconds


class Worker:
    def step(self, n: int) -> int:
        return n + 1

    def run(self, n: int) -> int:
        return sum(self.step(i) for i in range(n))


def _helper(x: int) -> int:
    return 2 * x


def test_watches_time_calls_count_children_only_inside_their_parent_and_restore():
    module = types.SimpleNamespace(helper=_helper)
    clock = PhaseClock()
    original_run, original_step = Worker.run, Worker.step
    watches = [Watch(phase="run", owner=Worker, attr="run",
                     children=(Watch(phase="step", owner=Worker, attr="step", tick=True),), bar_total=3),
               Watch(phase="helper", owner=module, attr="helper")]
    with clock.watching(watches):
        w = Worker()
        assert w.step(5) == 6  # outside run(): the child watch is not active
        assert w.run(3) == 6
        assert module.helper(4) == 8
    table = {row["phase"]: row for row in clock.table()}
    assert table["run"]["calls"] == 1 and table["step"]["calls"] == 3 and table["helper"]["calls"] == 1
    assert table["run"]["seconds"] >= table["step"]["seconds"] >= 0.0
    assert [row["phase"] for row in clock.table()] == ["run", "step", "helper"]  # order of first start
    assert Worker.run is original_run and Worker.step is original_step and module.helper is _helper
    assert clock.missing == []


def test_a_watch_on_a_missing_name_is_reported_not_fatal():
    clock = PhaseClock()
    with clock.watching([Watch(phase="gone", owner=Worker, attr="renamed_upstream")]):
        assert Worker().run(2) == 3
    assert clock.missing == ["Worker.renamed_upstream"] and clock.table() == []


def test_a_watched_call_that_raises_is_still_timed_and_restored():
    module = types.SimpleNamespace(helper=lambda: 1 / 0)
    original = module.helper
    clock = PhaseClock()
    with pytest.raises(ZeroDivisionError), clock.watching([Watch(phase="boom", owner=module, attr="helper")]):
        module.helper()
    assert module.helper is original and clock.table()[0]["calls"] == 1


def test_record_adds_a_phase_measured_by_difference():
    clock = PhaseClock()
    clock.record("later", 2.0, first_start=10.0)
    clock.record("earlier", -1.0, first_start=5.0)  # negative differences are clamped to 0
    assert clock.table() == [{"phase": "earlier", "seconds": 0.0, "calls": 1},
                             {"phase": "later", "seconds": 2.0, "calls": 1}]


def test_prepare_out_refuses_a_folder_the_demo_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(DemoError, match="not empty"):
        prepare_out(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    with pytest.raises(DemoError, match="is a file"):
        prepare_out(tmp_path / "precious.txt")


def test_prepare_out_clears_an_earlier_demo(tmp_path):
    out = tmp_path / "demo"
    prepare_out(out)
    assert (out / MARKER).is_file()
    (out / "mammoth2" / "run").mkdir(parents=True)
    (out / "summary.json").write_text("{}")
    prepare_out(out)
    assert not (out / "mammoth2").exists() and not (out / "summary.json").exists() and (out / MARKER).is_file()


def test_resolve_threads(monkeypatch):
    assert resolve_threads(3) == 3
    with pytest.raises(DemoError, match="--threads"):
        resolve_threads(0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads(None) == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("os.getloadavg", lambda: (50.0, 0.0, 0.0))
    assert resolve_threads(None) == 1  # a busy machine: one thread
    monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert resolve_threads(None) == 2


def test_process_age_is_positive_on_linux():
    age = process_age_seconds()
    assert age is None or age > 0.0
