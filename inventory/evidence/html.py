"""report.html: the pack rendered by the Jinja2 template inventory/templates/report.html.j2,
autoescaped, with its summary numbers and inline charts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from .. import __version__
from ..durations import span
from ..render import Report, day
from .charts import COLORS, changes_chart, expiry_chart
from .read import Pack
from .summary import KINDS, SEVERITIES, summary, weekly_changes


def render_html(pack: Pack) -> str:
    env = Environment(
        loader=PackageLoader("inventory", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["at"] = _show_time
    env.filters["day"] = day
    numbers = summary(pack)
    weeks = weekly_changes(numbers["changes"], pack.period_start, pack.scope.as_of)
    kinds_total = Counter(kind for _, kind in numbers["changes"])
    snapshots = pack.snapshots.rows
    template = env.get_template("report.html.j2")
    return template.render(
        pack=pack,
        scope=pack.scope,
        version=__version__,
        numbers=numbers,
        kinds=KINDS,
        kinds_total=kinds_total,
        severities=SEVERITIES,
        colors=COLORS,
        expiry_chart=Markup(expiry_chart(numbers["expiry"])),  # noqa: S704 - built escaped
        changes_chart=Markup(changes_chart(weeks)),  # noqa: S704 - built escaped
        weeks=len(weeks),
        inventory=pack.connections.rows,
        clients=pack.clients.rows,
        changes=pack.changes.rows,
        findings=_table(pack.findings, FINDING_COLUMNS),
        held=[r for r in snapshots if r["status"] != "complete"],
        snapshot_count=len(snapshots),
        snapshot_states=Counter(r["status"] for r in snapshots),
        notifications=_table(pack.notifications, NOTIFICATION_COLUMNS),
        max_age=span(pack.scope.max_age),
    )


FINDING_COLUMNS = (
    "rule",
    "severity",
    "account",
    "integration",
    "type",
    "name",
    "detail",
    "first_seen_at",
    "resolved_at",
    "suppressed_by",
    "suppression_reason",
    "suppressed_until",
)
NOTIFICATION_COLUMNS = (
    "created_at",
    "kind",
    "sink",
    "status",
    "attempts",
    "delivered_at",
    "error",
)


@dataclass(frozen=True)
class Table:
    keys: list[str]
    rows: list[list[str]]


def _table(source: Report, preferred: Sequence[str]) -> Table:
    """A Report as an HTML table: the preferred columns it has (else all), as text."""
    keys = [k for k in preferred if k in source.keys] or list(source.keys)
    return Table(keys, [[_show(row.get(k)) for k in keys] for row in source.rows])


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _show_time(value)
    return str(value)


def _show_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "-"
