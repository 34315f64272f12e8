"""What `db verify` and `db check` report: one Problem per broken link or mismatch, named
by chain, snapshot, table, row and column."""

from __future__ import annotations

from dataclasses import dataclass

from .chain import StoredSnapshot
from .current import Mismatch


@dataclass(frozen=True)
class Problem:
    """One broken link or mismatch: which chain, snapshot, table, row and column."""

    account: str | None
    integration: str | None
    snapshot: int | None
    table: str | None
    row: int | None
    column: str | None
    problem: str

    @property
    def chain(self) -> str:
        return f"{self.account}/{self.integration}" if self.account is not None else ""


def mismatch_problem(mismatch: Mismatch) -> Problem:
    """A mismatch as `db verify` names it: the row, the column, what is wrong."""
    x = mismatch
    if x.kind == "orphan":
        return Problem(
            x.account,
            x.integration,
            None,
            x.versions,
            x.version,
            None,
            f"current, but has no {x.table} row",
        )
    column: str | None = None
    if x.kind == "removed":
        column, text = "removed_at", f"removed, but {x.versions} row {x.version} is current"
    elif x.kind == "no version":
        text = f"present, but has no current {x.versions} row"
    elif x.kind == "several versions":
        text = f"present, with {x.current} current {x.versions} rows"
    else:
        held = "valid_from" if x.column == "last_changed_at" else x.column
        column = x.column
        text = f"differs from its current version ({x.versions} row {x.version} {held})"
    return Problem(x.account, x.integration, None, x.table, x.connection, column, text)


def problem_at(
    snap: StoredSnapshot, table: str | None, row: int | None, column: str | None, text: str
) -> Problem:
    """A problem of one hashed snapshot."""
    return Problem(snap.account, snap.integration, snap.id, table, row, column, text)
