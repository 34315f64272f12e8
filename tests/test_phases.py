"""The per-phase CPU accounting: off by default, an inner phase counted to itself only,
each thread's CPU to its own phases, summed over threads. The threads' CPU clock is a
fake one the test moves, so that every figure is exact and no real time is asserted."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from inventory import phases


class Clock:
    """A CPU clock per thread, moved by the test."""

    def __init__(self) -> None:
        self.spent: dict[int, float] = {}

    def __call__(self) -> float:
        return self.spent.get(threading.get_ident(), 0.0)

    def spend(self, seconds: float) -> None:
        ident = threading.get_ident()
        self.spent[ident] = self.spent.get(ident, 0.0) + seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(phases.time, "thread_time", fake)
    yield fake
    phases.disable()


def test_off_by_default_nothing_is_counted(clock: Clock) -> None:
    with phases.phase("rows"):
        clock.spend(1.0)
    assert phases.totals() == {}
    assert phases.disable() == {}


def test_a_phase_sums_every_time_it_is_entered(clock: Clock) -> None:
    phases.enable()
    for seconds in (1.0, 2.0, 4.0):
        with phases.phase("rows"):
            clock.spend(seconds)
        clock.spend(8.0)  # outside any phase: no one's
    assert phases.totals() == {"rows": 7.0}


def test_an_inner_phase_is_counted_to_itself_only(clock: Clock) -> None:
    phases.enable()
    with phases.phase("outer"):
        clock.spend(1.0)
        with phases.phase("inner"):
            clock.spend(2.0)
            with phases.phase("innermost"):
                clock.spend(4.0)
            clock.spend(8.0)
        clock.spend(16.0)
    assert phases.disable() == {"outer": 17.0, "inner": 10.0, "innermost": 4.0}


def test_a_phase_left_by_an_exception_is_counted(clock: Clock) -> None:
    phases.enable()
    with pytest.raises(ValueError, match="boom"), phases.phase("outer"):
        clock.spend(1.0)
        with phases.phase("inner"):
            clock.spend(2.0)
            raise ValueError("boom")
    with phases.phase("outer"):  # the stack was left clean: no phase is still open
        clock.spend(4.0)
    assert phases.disable() == {"outer": 5.0, "inner": 2.0}


def test_each_thread_counts_its_own_cpu_and_the_totals_sum_them(clock: Clock) -> None:
    phases.enable()
    inside = threading.Barrier(4)

    def work(n: int) -> None:
        with phases.phase("fetch"):
            clock.spend(n)
            inside.wait()  # all four threads are inside their phases at once
            with phases.phase("rows"):
                clock.spend(10.0 * n)

    threads = [threading.Thread(target=work, args=(n,)) for n in (1, 2, 3, 4)]
    for thread in threads:
        thread.start()
    with phases.phase("main"):  # this thread's own, whatever the others spend
        clock.spend(100.0)
    for thread in threads:
        thread.join()
    assert phases.disable() == {"fetch": 10.0, "rows": 100.0, "main": 100.0}


def test_disabling_stops_counting_and_enabling_starts_from_zero(clock: Clock) -> None:
    phases.enable()
    with phases.phase("rows"):
        clock.spend(1.0)
    assert phases.disable() == {"rows": 1.0}
    with phases.phase("rows"):
        clock.spend(2.0)
    phases.enable()
    with phases.phase("diff"):
        clock.spend(4.0)
    assert phases.totals() == {"diff": 4.0}
