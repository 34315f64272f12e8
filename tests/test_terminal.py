"""`sync` at a terminal: the live display as a terminal shows it (a pseudo-terminal fed
into a pyte screen), and, with pipes, output exactly as without the display."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pyte
import pytest

from inventory.testing import rate_limited

from .helpers import Harness, seed, wait_for

COLUMNS, LINES = 120, 40


class Terminal:
    """A pseudo-terminal as the sync's stderr, drawn on a pyte screen as it runs."""

    def __init__(self) -> None:
        self.screen = pyte.Screen(COLUMNS, LINES)
        self._stream = pyte.ByteStream(self.screen)
        self._lock = threading.Lock()
        self.raw = b""
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
        self._reader = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        os.close(self.slave)  # the child holds it now
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every holder of the other side closed it
                return
            if not data:
                return
            with self._lock:
                self.raw += data
                self._stream.feed(data)

    def lines(self) -> list[str]:
        with self._lock:
            return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines())

    def close(self) -> None:
        self._reader.join(timeout=10)
        os.close(self.master)


def spawn_on_terminal(h: Harness, term: Terminal, *args: str) -> subprocess.Popen[str]:
    assert h.config is not None
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "inventory", "sync", "--config", str(h.config), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=term.slave,
        text=True,
        cwd=h.tmp_path,
        env=env,
    )
    term.start()
    return proc


IN_FLIGHT = re.compile(r"^\S+ acme/(billing|crm|ops) +\d+ pages? +\d+ connections?")
FOOTER = re.compile(r"^\d/3 integrations done( \(\d complete\))?, \d in flight, elapsed 0:\d\d$")


def test_sync_at_a_terminal_shows_live_progress_and_logs_above_it(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 3, "crm": 3, "ops": 1}}, extra_sync="page_size = 2")
    cli.zis.latency = 0.15
    cli.zis.fail("acme", "crm", rate_limited("3", page=2))
    term = Terminal()
    proc = spawn_on_terminal(cli, term)
    try:
        wait_for(lambda: "rate limited; next try in" in term.text(), timeout=30)
        mid = term.lines()
    finally:
        out, _ = proc.communicate(timeout=60)
        term.close()
    cli.outputs += [out, term.raw.decode(errors="replace")]
    assert proc.returncode == 0
    # Mid-run: a line per integration in flight, and the overall line under them.
    flying = [line for line in mid if IN_FLIGHT.match(line)]
    assert flying, mid
    assert any(re.search(r"acme/crm .*rate limited; next try in [0-3]s$", line) for line in mid)
    # The 429 pauses the whole account: billing waits too, and says why.
    assert any(
        re.search(r"acme/billing .*account rate limited; resumes in [0-3]s$", line) for line in mid
    ), mid
    footer = [line for line in mid if FOOTER.match(line)]
    assert len(footer) == 1, mid
    assert mid.index(footer[0]) > max(mid.index(line) for line in flying)
    # At the end: the log lines, each whole and once, above the final state.
    end = [line for line in term.lines() if line]
    assert re.fullmatch(r"3/3 integrations done \(3 complete\), elapsed 0:\d\d", end[-1]), end
    logged = [
        line for line in end if re.search(r" INFO inventory\.sync: acme/\w+: complete: ", line)
    ]
    assert sorted(re.sub(r".*: (acme/\w+): complete: .*", r"\1", line) for line in logged) == [
        "acme/billing",
        "acme/crm",
        "acme/ops",
    ]
    assert not any(IN_FLIGHT.match(line) or "in flight" in line for line in end)
    # stdout is not the terminal: the summary, as always, without a control character.
    assert out.startswith("ACCOUNT ") and "run 1: complete (3 of 3 snapshots complete)" in out
    assert "\x1b" not in out


def normalized(text: str) -> str:
    """Without what changes from run to run: clock times and durations."""
    text = re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[,.]\d+Z?", "<time>", text)
    text = re.sub(r'"seconds": \d+(\.\d+)?', '"seconds": <s>', text)
    text = re.sub(r"\b\d+\.\d\ds\b", "<s>s", text)
    return re.sub(r"(?m) +\d+\.\d\d$", " <s>", text)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # two databases: SQLite files
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_with_pipes_the_output_is_what_it_is_without_progress(
    cli: Harness, tmp_path: Path, log_format: str
) -> None:
    # One worker: the log lines come in one order, so the outputs compare byte for byte.
    seed(cli, {"acme": {"billing": 2, "crm": 1}}, extra_sync="page_size = 3\nconcurrency = 1")
    cli.zis.fail("acme", "crm", rate_limited("0", page=1))
    assert cli.config is not None
    base = cli.config.read_text()
    outputs = []
    for n, flag in enumerate(((), ("--no-progress",))):
        cli.config.write_text(base.replace(cli.db_url, f"sqlite:///{tmp_path / f'run{n}.db'}"))
        proc = subprocess.run(
            [sys.executable, "-m", "inventory", "--log-level", "DEBUG", "--log-format",
             log_format, "sync", "--config", str(cli.config), *flag],
            capture_output=True, text=True, cwd=tmp_path, timeout=60,
        )  # fmt: skip
        cli.outputs += [proc.stdout, proc.stderr]
        assert proc.returncode == 0, proc.stderr
        outputs.append((normalized(proc.stdout), normalized(proc.stderr)))
        cli.zis.fail("acme", "crm", rate_limited("0", page=1))
    assert outputs[0] == outputs[1]
    out, err = outputs[0]
    assert "\x1b" not in out + err and "integrations done" not in err
    assert "acme/billing: complete: " in err


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_progress_flag_forces_the_display_on_a_pipe(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1}})
    assert cli.config is not None
    proc = subprocess.run(
        [sys.executable, "-m", "inventory", "sync", "--config", str(cli.config), "--progress"],
        capture_output=True, text=True, cwd=cli.tmp_path, timeout=60,
    )  # fmt: skip
    cli.outputs += [proc.stdout, proc.stderr]
    assert proc.returncode == 0
    assert "1/1 integrations done (1 complete), elapsed 0:0" in proc.stderr
    assert "\x1b" not in proc.stdout
