"""The live progress of a sync on a terminal (stderr), drawn by rich.

One line per integration in flight, then integrations done of all and the time elapsed.
Log lines printed meanwhile go above the display, through the same console.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from .progress import RATE_LIMITED

if TYPE_CHECKING:
    from .results import SnapshotResult

STATUS_ORDER = ("complete", "held", "failed", "interrupted", "skipped")


@dataclass
class _Flight:
    """An integration being fetched or written."""

    account: str
    name: str  # account/integration
    pages: int = 0
    connections: int = 0
    retries: int = 0
    note: str | None = None  # the last retry or rate-limit pause
    wait_until: float = 0.0
    spinner: Spinner = field(default_factory=lambda: Spinner("dots", style="cyan"))


class LiveProgress:
    """A Progress observer (inventory.progress) that draws the run on stderr while it lasts.

    ``with LiveProgress(handler=..., redact=...) as progress:`` starts the display and
    sends ``handler``'s log lines through its console; leaving it draws the last state
    and gives the handler its stream back.
    """

    def __init__(
        self,
        *,
        handler: logging.Handler | None,
        redact: Callable[[str], str],
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._handler = handler if isinstance(handler, logging.StreamHandler) else None
        self._redact = redact
        self._console = console or Console(stderr=True, force_terminal=True, highlight=False)
        self._clock = clock
        self._lock = threading.Lock()
        self._began = clock()
        self._total = 0
        self._flights: dict[tuple[str, str], _Flight] = {}
        self._ended: Counter[str] = Counter()
        self._paused: dict[str, float] = {}  # account: until when
        self._live = Live(
            console=self._console,
            get_renderable=self.render,
            refresh_per_second=4,
            redirect_stdout=False,  # stdout carries the summary, and may be a pipe
            redirect_stderr=True,
        )
        self._stream: object = None

    # --- life cycle ---

    def __enter__(self) -> LiveProgress:
        self._began = self._clock()
        self._live.start()
        if self._handler is not None:
            self._stream = self._handler.setStream(_ConsoleLines(self._console))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._live.refresh()
            self._live.stop()
        finally:
            if self._handler is not None and self._stream is not None:
                self._handler.setStream(self._stream)

    # --- the Progress protocol ---

    def run_started(self, targets: Sequence[tuple[str, str]]) -> None:
        with self._lock:
            self._total = len(targets)

    def integration_started(self, account: str, integration: str) -> None:
        with self._lock:
            self._flights[(account, integration)] = _Flight(account, f"{account}/{integration}")

    def page_fetched(self, account: str, integration: str, pages: int, connections: int) -> None:
        with self._lock:
            flight = self._flights.get((account, integration))
            if flight is not None:
                flight.pages, flight.connections = pages, connections

    def waiting(self, account: str, integration: str, reason: str, seconds: float) -> None:
        with self._lock:
            flight = self._flights.get((account, integration))
            if flight is not None:
                flight.retries += 1
                flight.note = reason
                flight.wait_until = self._clock() + seconds
            if reason == RATE_LIMITED:  # a 429 pauses every request to the account
                self._paused[account] = max(self._paused.get(account, 0.0), self._clock() + seconds)

    def integration_finished(self, result: SnapshotResult) -> None:
        with self._lock:
            self._flights.pop((result.account, result.integration), None)
            self._ended[result.status] += 1

    # --- drawing ---

    def render(self) -> RenderableType:
        now = self._clock()
        with self._lock:
            flights = list(self._flights.values())
            paused = dict(self._paused)
            ended = Counter(self._ended)
            total = self._total
        rows = Table.grid(padding=(0, 1))
        rows.add_column(width=1)
        rows.add_column(no_wrap=True)
        rows.add_column(justify="right", no_wrap=True)
        rows.add_column(justify="right", no_wrap=True)
        rows.add_column(no_wrap=True, overflow="ellipsis")
        for flight in flights:
            rows.add_row(
                flight.spinner,
                self._redact(flight.name),
                _plural(flight.pages, "page"),
                _plural(flight.connections, "connection"),
                Text(self._redact(_note(flight, now, paused.get(flight.account, 0.0))), "yellow"),
            )
        done = sum(ended.values())
        statuses = ", ".join(f"{ended[s]} {s}" for s in STATUS_ORDER if ended[s])
        footer = Text(f"{done}/{total} integrations done", style="bold")
        if statuses:
            footer.append(f" ({statuses})")
        if flights:
            footer.append(f", {len(flights)} in flight")
        footer.append(f", elapsed {_clock_time(now - self._began)}")
        return Group(rows, footer) if flights else footer


class _ConsoleLines:
    """A text stream for a logging handler: each whole line is printed by the console,
    above the live display (a line longer than the terminal is wrapped by the terminal)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._partial = ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._console.print(Text(line), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        pass


def _note(flight: _Flight, now: float, paused_until: float) -> str:
    left = flight.wait_until - now
    if flight.note is not None and left > 0:
        return f"{flight.note}; next try in {left:.0f}s"
    if paused_until > now:
        return f"account rate limited; resumes in {paused_until - now:.0f}s"
    if flight.note is not None:
        return _plural(flight.retries, "retry", "retries")
    return ""


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _clock_time(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"
