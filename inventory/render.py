"""Rows with stable keys, rendered as an 80-column table, JSON or CSV: every report and
check output goes through ``Report.render``. CSV cells that a spreadsheet would take for
formulas are neutralised here, once."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .records import format_timestamp

FORMATS = ("table", "json", "csv")


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    width: int  # the most characters the table shows; longer values end in "~"
    show: Callable[[Any], str] | None = None


@dataclass
class Report:
    """Rows with stable keys (JSON/CSV) and how to show them in an 80-column table."""

    keys: Sequence[str]
    rows: list[dict[str, Any]]
    table: Sequence[Column]
    noun: str  # "connection", "change", ...
    notes: list[str] = field(default_factory=list)
    sections: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    detail: str | None = None  # a key shown, when set, on its own indented line under a row

    def render(self, fmt: str) -> str:
        if fmt == "json":
            return json.dumps([_jsonable(row, self.keys) for row in self.rows], indent=2)
        if fmt == "csv":
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\n")
            # The csv module quotes a field holding the line terminator (\n) but not a CR,
            # which spreadsheets read as a line break too: a row holding one is all quoted.
            quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
            writer.writerow(self.keys)
            for row in self.rows:
                cells = [csv_cell(row.get(k)) for k in self.keys]
                (quoted if any("\r" in c for c in cells) else writer).writerow(cells)
            return out.getvalue().rstrip("\n")
        return "\n".join(self._table_lines())

    def _table_lines(self) -> list[str]:
        sections = self.sections or [("", self.rows)]
        lines: list[str] = []
        for title, rows in sections:
            if title:
                lines += ["", f"{title} ({len(rows)})"] if lines else [f"{title} ({len(rows)})"]
            cells = [[_cell(row.get(c.key), c) for c in self.table] for row in rows]
            table = format_table([c.header for c in self.table], cells)
            lines.append(table[0])
            for row, line in zip(rows, table[1:], strict=True):
                lines.append(line)
                if self.detail and row.get(self.detail):
                    lines.append(f"    {row[self.detail]}")
        total = len(self.rows)
        lines.append(f"{total} {self.noun}{'' if total == 1 else 's'}")
        return lines + self.notes


def _jsonable(row: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {
        k: format_timestamp(v) if isinstance(v, datetime) else v
        for k, v in ((k, row.get(k)) for k in keys)
    }


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return format_timestamp(value)
    return str(value)


# A text cell starting with one of these is a formula to a spreadsheet (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """A value as a CSV cell. Text from the data that a spreadsheet would read as a
    formula gets a leading ``'`` (OWASP's advice against CSV injection); numbers and times
    the tool writes stay as they are, so a ``days_left`` of -3 is still -3."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return _text(value)


def _cell(value: Any, column: Column) -> str:
    text = column.show(value) if column.show else _text(value)
    return text if len(text) <= column.width else text[: column.width - 1] + "~"


def day(value: Any) -> str:
    return value.strftime("%Y-%m-%d") if isinstance(value, datetime) else "-"


def minute(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else "-"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), *(line(r) for r in rows)]


# --- connections ---------------------------------------------------------------------
