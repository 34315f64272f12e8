"""The benchmark script runs (at a tiny scale) and reports what it measured: the rows each
step wrote and the history `db verify` checked. A test of the script, not of a time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_throughput_and_verify_run_and_report_their_rows() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--only", "throughput",
         "--only", "verify", "--scale", "0.002", "--repeat", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    written = dict(
        re.findall(r"^(floor|first sync|resync, no change|resync, 1% changed \(\d+\)).*?"
                   r"(\d+ / \d+ / \d+)", done.stdout, re.M)
    )  # fmt: skip
    assert written == {
        "floor": "0 / 0 / 0",
        "first sync": "200 / 200 / 200",
        "resync, no change": "0 / 0 / 0",
        "resync, 1% changed (10)": "10 / 13 / 10",  # one per integration at least
    }, done.stdout
    assert re.search(
        r"^db verify: 2,300 versions, 2,300 events, 300 snapshots in 100 chains \(written in "
        r"[\d.]+ s\)\n  verified in [\d.]+ s wall, [\d.]+ s CPU",
        done.stdout,
        re.M,
    ), done.stdout


def test_the_core_only_diagnostic_writes_the_same_rows_and_says_so() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--only", "throughput",
         "--core-only", "--scale", "0.002", "--repeat", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0].endswith(
        "database sqlite (--core-only: no chain, findings or outbox)"
    ), done.stdout
    written = re.findall(r"^(first sync|resync, no change|resync, 1% changed \(\d+\)).*?"
                         r"(\d+ / \d+ / \d+)", done.stdout, re.M)  # fmt: skip
    assert written == [
        ("first sync", "200 / 200 / 200"),
        ("resync, no change", "0 / 0 / 0"),
        ("resync, 1% changed (10)", "10 / 13 / 10"),
    ], done.stdout
