"""Wall time per phase of the demo, including the stages inside other plugins' pipelines.

``tuskml mammoth2 train``/``eval`` and ``tuskml tinyformer search`` each run many stages inside one
call and do not report per-stage times. While the demo runs, :class:`PhaseClock` wraps the public
functions and methods those stages go through (a :class:`Watch` names the module or class and the
attribute) and adds up their wall time; everything is restored afterwards. A watch whose target no
longer exists (renamed upstream) is listed in ``PhaseClock.missing`` and the demo still runs.

A watch can also drive a progress bar: while its call runs, a tqdm bar counts the calls of its
``children`` that have ``tick=True`` (e.g. one tick per emulator run during deployment), so the
stages that have no bar of their own still show progress.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs


@attrs.define
class PhaseStats:
    seconds: float = 0.0
    calls: int = 0
    first_start: float | None = None  # time.perf_counter() when the phase was first entered


@attrs.frozen(kw_only=True)
class Watch:
    """Time every call of ``owner.attr`` (``owner``: a module or a class) under the name ``phase``.

    ``children`` are patched only while this watch's call runs, so a function that several stages
    call (e.g. the engine's ``prepare``) is charged to the stage it ran in. With ``bar_total`` a
    progress bar counts the calls of the children that have ``tick=True``.
    """

    phase: str
    owner: Any
    attr: str
    children: tuple[Watch, ...] = ()
    tick: bool = False
    bar_total: int | Callable[..., int] | None = None  # a callable gets the call's arguments
    bar_unit: str = "it"


class PhaseClock:
    def __init__(self) -> None:
        self.stats: dict[str, PhaseStats] = {}
        self.missing: list[str] = []

    def _stats(self, name: str) -> PhaseStats:
        return self.stats.setdefault(name, PhaseStats())

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the ``with`` body as phase ``name`` (times add up over repeated entries)."""
        stats = self._stats(name)
        start = time.perf_counter()
        if stats.first_start is None:
            stats.first_start = start
        try:
            yield
        finally:
            stats.seconds += time.perf_counter() - start
            stats.calls += 1

    @contextlib.contextmanager
    def watching(self, watches: Sequence[Watch], on_call: Any = None) -> Iterator[None]:
        """Patch ``watches`` for the duration of the ``with`` body; ``on_call()`` runs after each call."""
        restore = []
        try:
            for watch in watches:
                undo = self._patch(watch, on_call)
                if undo is not None:
                    restore.append(undo)
            yield
        finally:
            for undo in reversed(restore):
                undo()

    def _patch(self, watch: Watch, on_call: Any) -> Any:
        owner, attr = watch.owner, watch.attr
        where = f"{getattr(owner, '__name__', owner)}.{attr}"
        if not hasattr(owner, attr):
            if where not in self.missing:
                self.missing.append(where)
            return None
        had_own = isinstance(owner, type) and attr in vars(owner)
        original = vars(owner)[attr] if had_own else getattr(owner, attr)
        clock = self
        active = False

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            nonlocal active
            if active:  # a recursive call is already being timed
                return original(*args, **kwargs)
            active = True
            bar = None
            try:
                if watch.bar_total is not None:
                    from tqdm.auto import tqdm

                    total = watch.bar_total(*args, **kwargs) if callable(watch.bar_total) else watch.bar_total
                    bar = tqdm(total=total, desc=watch.phase, unit=watch.bar_unit, dynamic_ncols=True)
                tick = bar.update if bar is not None else None
                with clock.phase(watch.phase), clock.watching(watch.children, on_call=tick):
                    return original(*args, **kwargs)
            finally:
                active = False
                if bar is not None:
                    bar.close()
                if on_call is not None and watch.tick:
                    on_call()

        setattr(owner, attr, timed)

        def undo() -> None:
            if isinstance(owner, type) and not had_own:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)

        return undo

    def record(self, name: str, seconds: float, first_start: float | None) -> None:
        """Add a phase measured by difference (e.g. a loop's first part, up to a watched call)."""
        stats = self._stats(name)
        stats.seconds += max(0.0, seconds)
        stats.calls += 1
        if stats.first_start is None:
            stats.first_start = first_start

    def first_start(self, name: str) -> float | None:
        stats = self.stats.get(name)
        return stats.first_start if stats else None

    def seconds(self, name: str) -> float:
        stats = self.stats.get(name)
        return stats.seconds if stats else 0.0

    def table(self) -> list[dict[str, Any]]:
        """Every phase that ran, in the order it first started: name, seconds, calls."""
        ran = sorted((s.first_start, name, s) for name, s in self.stats.items() if s.first_start is not None)
        return [{"phase": name, "seconds": round(s.seconds, 3), "calls": s.calls} for _, name, s in ran]


def process_age_seconds() -> float | None:
    """Seconds since this process started (Linux ``/proc``), so the start-up before the demo's own
    code (Python, click, plugin discovery) is counted too; None where ``/proc`` is missing."""
    import os

    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
