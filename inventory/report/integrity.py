"""What `db check` and `db verify` print: the tables' broken invariants, and the hash
chains' problems with where each chain starts, as a table, CSV or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..integrity import Finding
from ..render import Column, Report
from ..store.verify import Verification, chain_rows_of, chain_start, problem_rows


def check_output(findings: Sequence[Finding], fmt: str) -> str:
    """``db check``'s report; its closing note says OK or FAILED."""
    rows = [{"check": f.check, "detail": f.detail} for f in findings]
    # A finding is read whole: the detail names the rows (up to 255-character names).
    table = [Column("check", "CHECK", 16), Column("detail", "DETAIL", 1000)]
    out = Report(("check", "detail"), rows, table, "problem")
    out.notes.append("db check: OK" if not findings else "db check: FAILED")
    return out.render(fmt)


def verify_output(result: Verification, fmt: str) -> str:
    """``db verify``'s output: JSON with the chains, or the problems as a table (with each
    chain's start and the verdict) or CSV (the rows only)."""
    rows = problem_rows(result.problems)
    if fmt == "json":
        body = {
            "ok": not rows,
            "chains": chain_rows_of(result.chains),
            "snapshots": result.snapshots,
            "problems": rows,
        }
        return json.dumps(body, indent=2)
    keys = ("chain", "snapshot", "table", "row", "column", "problem")
    table = [
        Column("chain", "CHAIN", 24),
        Column("snapshot", "SNAPSHOT", 8),
        Column("table", "TABLE", 19),
        Column("row", "ROW", 8),
        Column("column", "COLUMN", 19),
        Column("problem", "PROBLEM", 1000),
    ]
    out = Report(keys, rows, table, "problem")
    if fmt != "csv":
        starts = sorted(result.chains, key=lambda c: (c.account, c.integration))
        out.notes += [chain_start(c) for c in starts]
        out.notes.append(
            f"db verify: OK ({len(result.chains)} chains, {result.snapshots} snapshots)"
            if not rows
            else f"db verify: FAILED ({len(rows)} problems)"
        )
    return out.render(fmt)
