"""The benchmark script runs (at a tiny scale) and reports what it measured: the rows each
step wrote, the phases each step's CPU went to, the history `db verify` checked and the
latency-bound scenario's schedule bound. A test of the script, not of a time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("fetch+parse", "diff", "rows", "chain", "findings", "outbox", "commit")
EVERY = frozenset(PHASES)
CORE = frozenset({"fetch+parse", "diff", "rows", "commit"})


def bench(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), *args, "--repeat", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def tables(stdout: str, title: str) -> tuple[dict[str, str], dict[str, frozenset[str]]]:
    """The scenario titled ``title``: the rows written by each step, and the phases each
    step entered; checks that the phase table has every column, a non-negative number
    of seconds in each phase entered and in ``rest``, and ``-`` in the others."""
    section = stdout[stdout.index(title) :].split("\n\n")[0]
    lines = section.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("CPU by phase")))
    written = {}
    for line in lines[:at]:
        found = re.match(r"(.{36}) .*?  (\d+ / \d+ / \d+)", line)
        if found:
            written[found[1].rstrip()] = found[2]
    assert lines[at + 1].split() == ["step", *PHASES, "rest", "cpu", "s"], section
    entered = {}
    for line in lines[at + 3 :]:
        name, cells = line[:36].rstrip(), line[36:].split()
        assert len(cells) == len(PHASES) + 2, line
        for cell in cells[len(PHASES) :]:
            assert float(cell) >= 0, line
        assert all(c == "-" or float(c) >= 0 for c in cells[: len(PHASES)]), line
        entered[name] = frozenset(p for p, c in zip(PHASES, cells, strict=False) if c != "-")
    return written, entered


def test_throughput_and_verify_run_and_report_their_rows_and_phases() -> None:
    stdout = bench("--only", "throughput", "--only", "verify", "--scale", "0.002")
    assert stdout.splitlines()[0].endswith(
        "database sqlite (one webhook sink, nothing delivered)"
    ), stdout
    written, entered = tables(stdout, "1. Throughput")
    assert written == {
        "floor (fetch + parse only)": "0 / 0 / 0",
        "first sync, empty database": "200 / 200 / 200",
        "first sync, core only": "200 / 200 / 200",
        "resync, no change": "0 / 0 / 0",
        "resync, 1% changed (10)": "10 / 13 / 10",  # one per integration at least
    }, stdout
    assert entered == {
        "floor (fetch + parse only)": {"fetch+parse"},
        "first sync, empty database": EVERY,
        "first sync, core only": CORE,
        "resync, no change": EVERY,  # the diff's phase decides there is nothing to compare
        "resync, 1% changed (10)": EVERY,
    }, stdout
    assert re.search(
        r"^db verify: 2,300 versions, 2,300 events, 300 snapshots in 100 chains \(written in "
        r"[\d.]+ s\)\n  verified in [\d.]+ s wall, [\d.]+ s CPU",
        stdout,
        re.M,
    ), stdout


def test_the_core_only_diagnostic_writes_the_same_rows_and_says_so() -> None:
    stdout = bench("--only", "throughput", "--core-only", "--scale", "0.002")
    assert stdout.splitlines()[0].endswith(
        "database sqlite (--core-only: no chain, findings or outbox)"
    ), stdout
    written, entered = tables(stdout, "1. Throughput")
    assert written == {
        "floor (fetch + parse only)": "0 / 0 / 0",
        "first sync, empty database": "200 / 200 / 200",
        "resync, no change": "0 / 0 / 0",
        "resync, 1% changed (10)": "10 / 13 / 10",
    }, stdout
    assert entered == {
        "floor (fetch + parse only)": {"fetch+parse"},
        "first sync, empty database": CORE,
        "resync, no change": CORE,
        "resync, 1% changed (10)": CORE,
    }, stdout


def test_the_latency_bound_scenario_reports_its_schedule_bound() -> None:
    stdout = bench("--only", "latency", "--no-sink", "--scale", "0.005")
    assert stdout.splitlines()[0].endswith("database sqlite (--no-sink: no sink)"), stdout
    written, entered = tables(stdout, "3. Latency-bound")
    assert written == {"floor (fetch + parse only)": "0 / 0 / 0", "first sync": "200 / 200 / 200"}
    assert entered == {"floor (fetch + parse only)": {"fetch+parse"}, "first sync": EVERY}, stdout
    # A sync asks for each integration's OAuth clients too: two requests in a row each.
    bound = "schedule bound 0.60 s (3 waves x 2 pages x 0.1 s), "
    assert re.search(rf"^first sync .*{re.escape(bound)}[+-][\d.]+ s$", stdout, re.M), stdout
