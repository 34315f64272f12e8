"""Where a sync's CPU time goes: the CPU time of the thread doing each phase of the work,
summed per phase name over a run. Off unless enabled (the benchmark enables it); off, a
phase costs one global read.

A phase entered inside another is counted to the inner one only: the outer one pauses
while it runs, so the totals add up to no more than the threads' CPU.
"""

from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from types import TracebackType

_totals: dict[str, float] | None = None  # None: off
_lock = threading.Lock()
_local = threading.local()  # each thread's open phases, innermost last
_OFF: AbstractContextManager[None] = nullcontext()


def enable() -> None:
    """Start counting, from zero."""
    global _totals
    with _lock:
        _totals = {}


def disable() -> dict[str, float]:
    """Stop counting; the CPU seconds of each phase entered since ``enable``."""
    global _totals
    with _lock:
        totals, _totals = _totals or {}, None
    return totals


def totals() -> dict[str, float]:
    """The CPU seconds of each phase entered so far (empty when off)."""
    with _lock:
        return dict(_totals or {})


def phase(name: str) -> AbstractContextManager[None]:
    """Count the CPU time of the calling thread inside this block to ``name``."""
    if _totals is None:
        return _OFF
    return _Phase(name)


@dataclass
class _Open:
    name: str
    since: float  # the thread's CPU time when it was entered or last resumed


class _Phase:
    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        stack: list[_Open] | None = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        now = time.thread_time()
        if stack:  # the outer phase pauses: what it ran so far is its own
            _add(stack[-1].name, now - stack[-1].since)
        stack.append(_Open(self.name, now))

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack: list[_Open] = _local.stack
        now = time.thread_time()
        done = stack.pop()
        _add(done.name, now - done.since)
        if stack:  # the outer phase resumes
            stack[-1].since = now


def _add(name: str, seconds: float) -> None:
    with _lock:
        if _totals is not None:  # disabled meanwhile: nothing counted
            _totals[name] = _totals.get(name, 0.0) + seconds
