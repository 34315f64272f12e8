"""The evidence pack: one folder an auditor can be handed. report.html, the CSVs the report
commands print for the same scope, and manifest.json with the SHA-256 of every file.

Everything is read in one read-only transaction, so the files describe one database state.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shlex
import shutil
import socket
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Engine, func, select

from . import __version__, report, store, types
from . import models as m
from .config import Settings
from .durations import span
from .records import format_timestamp
from .render import Report, day

NOT_AVAILABLE = "not available in this version"
MANIFEST = "manifest.json"
FILES = (
    "report.html",
    "connections.csv",
    "changes.csv",
    "findings.csv",
    "snapshots.csv",
    "notifications.csv",
)
KINDS = ("added", "removed", "modified", "restored")
SEVERITIES = tuple(s.value for s in reversed(types.SEVERITIES))  # the highest first
EXPIRY_HORIZON = timedelta(days=180)
WEEK = timedelta(days=7)

# Where the features of other issues plug in: (module, function). A module this version
# does not have makes its section and file say NOT_AVAILABLE.


@dataclass(frozen=True)
class Scope:
    """What the pack covers: the population as of ``as_of`` and the period
    ``since <= t <= as_of`` (``since`` None: from the start of the history)."""

    as_of: datetime
    since: datetime | None
    accounts: tuple[str, ...] = ()
    integrations: tuple[str, ...] = ()
    max_age: timedelta = timedelta(days=2)


@dataclass
class Part:
    """One CSV file of the pack: the Report it renders, or None when not available."""

    name: str
    report: Report | None
    command: str | None = None  # the report command that prints the same CSV

    def csv(self) -> str:
        if self.report is None:
            return f"note\n{NOT_AVAILABLE}\n"
        return self.report.render("csv") + "\n"

    @property
    def rows(self) -> int | None:
        return None if self.report is None else len(self.report.rows)


@dataclass
class Pack:
    scope: Scope
    period_start: datetime | None
    generated_at: datetime
    generated_by: str
    host: str
    database_url: str
    schema_revision: str | None
    chain: tuple[list[dict[str, Any]], str] | None
    freshness: list[dict[str, Any]]
    config: str | None = None  # the configuration file read, absolute
    database: str = ""  # the database, as store.portable_url writes it (no password)
    parts: dict[str, Part] = field(default_factory=dict)


# --- reading -------------------------------------------------------------------------


def gather(
    engine: Engine, settings: Settings, scope: Scope, now: datetime, config: str | None = None
) -> Pack:
    """Every query of the pack, in one read transaction. ``config``: the configuration
    file it was read with (absolute), which the commands that print its CSVs again name."""
    with _one_read(engine) as conn:
        pinned = cast(Engine, _Pinned(engine, conn))
        connections = report.connections(
            pinned,
            report.ConnectionFilter(scope.accounts, scope.integrations, as_of=scope.as_of),
            now,
        )
        changes = report.changes(
            pinned,
            report.ChangeFilter(
                scope.accounts, scope.integrations, since=scope.since, as_of=scope.as_of
            ),
        )
        snapshots = report.snapshots(
            pinned,
            accounts=scope.accounts,
            integrations=scope.integrations,
            limit=None,
            since=scope.since,
            as_of=scope.as_of,
        )
        findings = _findings(pinned, settings, scope)
        notifications = _notifications(pinned, scope)
        heads = _chain_heads(conn)
        revision = store.current_revision(pinned)
        freshness = _freshness(conn, settings, scope)
        start = scope.since if scope.since is not None else _history_start(conn, scope)
    pack = Pack(
        scope=scope,
        period_start=start,
        generated_at=now,
        generated_by=_user(),
        host=socket.gethostname(),
        database_url=store.safe_url(settings.database_url),
        schema_revision=revision,
        chain=heads,
        freshness=freshness,
        config=config,
        database=store.portable_url(settings.database_url),
    )
    same = _Same(scope, pack.config, pack.database)
    for part in (
        Part("connections.csv", connections, same("connections")),
        Part("changes.csv", changes, same("changes", period=True)),
        Part(
            "findings.csv",
            findings,
            same("findings", "--include-suppressed", "--fail-on", "none"),
        ),
        Part("snapshots.csv", snapshots, same("snapshots", "--all", period=True)),
        Part("notifications.csv", notifications, same("notifications", period=True)),
    ):
        if part.report is None:
            part.command = None
        pack.parts[part.name] = part
    return pack


@dataclass(frozen=True)
class _Same:
    """Builds the report command that prints a CSV of the pack again, byte for byte: the
    same configuration file and database, the as-of time and period resolved, the scope."""

    scope: Scope
    config: str | None
    database: str

    def __call__(self, command: str, *options: str, period: bool = False) -> str:
        args = ["python", "-m", "inventory", command, *self.source(), *options]
        if period and self.scope.since is not None:
            args += ["--since", format_timestamp(self.scope.since)]
        args += ["--as-of", format_timestamp(self.scope.as_of), *self.filters()]
        return shlex.join([*args, "--format", "csv"])

    def source(self) -> list[str]:
        config = ["--config", self.config] if self.config is not None else []
        return [*config, "--database", self.database]

    def filters(self) -> list[str]:
        return [
            *(a for account in self.scope.accounts for a in ("--account", account)),
            *(a for name in self.scope.integrations for a in ("--integration", name)),
        ]


@contextmanager
def _one_read(engine: Engine) -> Iterator[Connection]:
    """A connection in one read transaction: REPEATABLE READ on PostgreSQL, a deferred
    BEGIN on SQLite (WAL keeps its snapshot while a sync writes)."""
    with engine.connect() as conn:
        if store.is_postgres(conn):
            conn.execution_options(isolation_level="REPEATABLE READ")
            conn.exec_driver_sql("SELECT 1")
        else:
            conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            conn.rollback()


class _Pinned:
    """Stands in for the Engine that the report functions take, lending them the one open
    connection, so that every file of the pack reads the same transaction."""

    def __init__(self, engine: Engine, conn: Connection) -> None:
        self._engine = engine
        self._conn = conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        yield self._conn

    begin = connect

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _findings(engine: Engine, settings: Settings, scope: Scope) -> Report:
    from .report.findings import findings_report

    return findings_report(
        engine,
        settings,
        as_of=scope.as_of,
        accounts=scope.accounts,
        integrations=scope.integrations,
        include_suppressed=True,
    )


def _notifications(engine: Engine, scope: Scope) -> Report:
    from .report.notifications import notifications_report

    return notifications_report(
        engine,
        status=(),
        sinks=(),
        since=scope.since,
        as_of=scope.as_of,
        accounts=scope.accounts,
        integrations=scope.integrations,
    )


def _chain_heads(conn: Connection) -> tuple[list[dict[str, Any]], str]:
    from .store.chain import chain_heads

    heads, digest = chain_heads(conn)
    return list(heads), str(digest)


def _scope_conditions(t: Any, scope: Scope) -> list[Any]:
    conditions = []
    if scope.accounts:
        conditions.append(t.c.account.in_(scope.accounts))
    if scope.integrations:
        conditions.append(t.c.integration.in_(scope.integrations))
    return conditions


def _history_start(conn: Connection, scope: Scope) -> datetime | None:
    s: Any = m.Snapshot.__table__
    first = conn.execute(
        select(func.min(s.c.started_at)).where(
            s.c.started_at <= scope.as_of, *_scope_conditions(s, scope)
        )
    ).scalar()
    return cast(datetime | None, first)


def _freshness(conn: Connection, settings: Settings, scope: Scope) -> list[dict[str, Any]]:
    """Every integration in scope (configured or seen), its last snapshot as of T and its
    last complete one: ``state`` is ok, stale (no complete one within max_age), failed,
    held or never."""
    s: Any = m.Snapshot.__table__
    seen = [s.c.started_at <= scope.as_of, *_scope_conditions(s, scope)]
    # The last by started_at (what the snapshot saw), not by id: a long fetch that failed
    # may be written after a later one that completed.
    order = func.row_number().over(
        partition_by=(s.c.account, s.c.integration), order_by=(s.c.started_at.desc(), s.c.id.desc())
    )
    ranked = (
        select(
            s.c.account, s.c.integration, s.c.started_at, s.c.status, s.c.error, order.label("n")
        )
        .where(*seen)
        .subquery()
    )
    latest = {
        (r.account, r.integration): r for r in conn.execute(select(ranked).where(ranked.c.n == 1))
    }
    complete = {
        (r.account, r.integration): r.at
        for r in conn.execute(
            select(s.c.account, s.c.integration, func.max(s.c.started_at).label("at"))
            .where(*seen, s.c.status == "complete")
            .group_by(s.c.account, s.c.integration)
        )
    }
    keys = set(latest)
    for account in settings.accounts:
        for integration in account.integrations:
            key = (account.subdomain, integration.name)
            if (not scope.accounts or key[0] in scope.accounts) and (
                not scope.integrations or key[1] in scope.integrations
            ):
                keys.add(key)
    rows = []
    for key in sorted(keys):
        row = latest.get(key)
        done = complete.get(key)
        if row is None:
            state = "never"
        elif row.status != "complete":
            state = str(row.status)
        elif done is None or done < scope.as_of - scope.max_age:
            state = "stale"
        else:
            state = "ok"
        rows.append(
            {
                "account": key[0],
                "integration": key[1],
                "last_at": row.started_at if row else None,
                "last_status": row.status if row else None,
                "last_complete_at": done,
                "state": state,
                "error": row.error if row else None,
            }
        )
    return rows


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER: a container
        return str(os.getuid())


# --- summaries and charts ------------------------------------------------------------


def summary(pack: Pack) -> dict[str, Any]:
    """The numbers of the summary cards (the HTML shows these, the tests read them)."""
    population = pack.parts["connections.csv"].report
    assert population is not None
    rows = population.rows
    by_account_type = Counter((r["account"], r["type"]) for r in rows)
    expiry = expiry_buckets(rows, pack.scope.as_of)
    changes = pack.parts["changes.csv"].report
    assert changes is not None
    findings = pack.parts["findings.csv"].report
    open_findings = None if findings is None else open_by_severity(findings.rows)
    attention = [f for f in pack.freshness if f["state"] != "ok"]
    return {
        "connections": len(rows),
        "accounts": sorted({a for a, _ in by_account_type}),
        "types": sorted({t for _, t in by_account_type}),
        "by_account_type": by_account_type,
        "by_account": Counter(r["account"] for r in rows),
        "by_type": Counter(r["type"] for r in rows),
        "expiry": expiry,
        "changes": _distinct_changes(changes.rows),
        "open_findings": open_findings,
        "attention": attention,
        "integrations": len(pack.freshness),
    }


@dataclass(frozen=True)
class Expiry:
    weeks: list[tuple[datetime, int]]  # (start of the week, tokens expiring in it)
    expired: int
    later: int  # beyond the horizon
    unknown: int  # OAuth with no expiry known

    @property
    def within(self) -> int:
        return sum(n for _, n in self.weeks)


def expiry_buckets(rows: Sequence[dict[str, Any]], as_of: datetime) -> Expiry:
    """OAuth tokens (and any connection with an expiry) by expiry week from ``as_of``:
    week i holds ``as_of + 7i days < expiry <= as_of + 7(i+1) days``, up to 180 days."""
    count = -(-EXPIRY_HORIZON.days // 7)
    weeks = [0] * count
    expired = later = unknown = 0
    for row in rows:
        expiry = row.get("token_expiry")
        if expiry is None:
            if row["type"] == "oauth":
                unknown += 1
        elif expiry <= as_of:
            expired += 1
        elif expiry > as_of + EXPIRY_HORIZON:
            later += 1
        else:
            weeks[min(count - 1, (expiry - as_of - timedelta(microseconds=1)) // WEEK)] += 1
    return Expiry([(as_of + i * WEEK, n) for i, n in enumerate(weeks)], expired, later, unknown)


def _distinct_changes(rows: Sequence[dict[str, Any]]) -> list[tuple[datetime, str]]:
    """One (detected_at, kind) per connection changed by a snapshot: a modified connection
    counts once however many fields changed, as the snapshots' counts do."""
    seen = {
        (r["snapshot_id"], r["account"], r["integration"], r["type"], r["name"], r["change"]): r[
            "detected_at"
        ]
        for r in rows
    }
    return [(at, key[-1]) for key, at in seen.items()]


def weekly_changes(
    changes: Sequence[tuple[datetime, str]], start: datetime | None, end: datetime
) -> list[tuple[datetime, Counter[str]]]:
    """Changes per ISO week (Monday 00:00 UTC) from the week of ``start`` to that of ``end``."""
    first = _monday(start if start is not None else end)
    count = (_monday(end) - first) // WEEK + 1
    weeks: list[Counter[str]] = [Counter() for _ in range(count)]
    for at, kind in changes:
        index = (_monday(at) - first) // WEEK
        if 0 <= index < count:
            weeks[index][kind] += 1
    return [(first + i * WEEK, c) for i, c in enumerate(weeks)]


def _monday(value: datetime) -> datetime:
    day = value.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def open_by_severity(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Findings neither resolved nor suppressed, by severity."""
    counts = dict.fromkeys(SEVERITIES, 0)
    for row in rows:
        if row.get("resolved_at") is not None or _suppressed(row):
            continue
        severity = str(row.get("severity") or "unknown")
        counts[severity] = counts.get(severity, 0) + 1
    return counts


def _suppressed(row: dict[str, Any]) -> bool:
    for key in ("suppressed", "suppressed_by", "suppression", "suppression_reason"):
        if row.get(key):
            return True
    return row.get("status") == "suppressed"


# --- SVG -----------------------------------------------------------------------------

COLORS = {
    "added": "#2e7d32",
    "removed": "#c62828",
    "modified": "#ef8f00",
    "restored": "#1565c0",
    "expiring": "#5c6bc0",
}


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    from markupsafe import escape

    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label)}" class="chart">' + "".join(body) + "</svg>"
    )


def _bars(
    labels: Sequence[str],
    stacks: Sequence[Sequence[tuple[str, int]]],
    *,
    label: str,
    every: int,
) -> str:
    """Stacked vertical bars: one per label; each stack is (series, value) bottom-up."""
    from markupsafe import escape

    width, height, left, bottom, top = 760, 230, 40, 40, 18
    plot_w, plot_h = width - left - 10, height - bottom - top
    ticks = _ticks(max([sum(v for _, v in stack) for stack in stacks] + [1]))
    peak = ticks[-1]
    step = plot_w / max(len(labels), 1)
    bar = max(1.0, min(22.0, step * 0.8))
    body = []
    for tick in ticks:
        y = top + plot_h - plot_h * tick / peak
        body.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    for i, (name, stack) in enumerate(zip(labels, stacks, strict=True)):
        x = left + i * step + (step - bar) / 2
        y = top + plot_h
        for series, value in stack:
            if not value:
                continue
            h = plot_h * value / peak
            y -= h
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{COLORS[series]}"><title>{escape(name)}: {value} {series}</title></rect>'
            )
        total = sum(v for _, v in stack)
        if total and bar >= 10:
            body.append(
                f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                f'class="value">{total}</text>'
            )
        if i % every == 0:
            body.append(
                f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 16}" '
                f'text-anchor="middle">{escape(name)}</text>'
            )
    body.append(
        f'<line x1="{left}" x2="{width - 10}" y1="{top + plot_h}" y2="{top + plot_h}" '
        'class="axis"/>'
    )
    return _svg(width, height, label, body)


def _ticks(peak: int) -> list[int]:
    """Grid values 0, step, 2*step... up to the first at or above ``peak``, the step 1, 2
    or 5 times a power of ten."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            step = factor * magnitude
            if peak <= 5 * step:
                return list(range(0, -(-peak // step) * step + 1, step))
        magnitude *= 10


def expiry_chart(expiry: Expiry) -> str:
    labels = [start.strftime("%m-%d") for start, _ in expiry.weeks]
    stacks = [[("expiring", n)] for _, n in expiry.weeks]
    return _bars(
        labels,
        stacks,
        label=f"OAuth tokens expiring per week over the next 180 days: {expiry.within}",
        every=2,
    )


def changes_chart(weeks: Sequence[tuple[datetime, Counter[str]]]) -> str:
    labels = [start.strftime("%Y-%m-%d") for start, _ in weeks]
    stacks = [[(kind, counts[kind]) for kind in KINDS] for _, counts in weeks]
    every = max(1, -(-len(weeks) // 8))
    total = sum(sum(c.values()) for _, c in weeks)
    return _bars(labels, stacks, label=f"Changes per week by kind: {total}", every=every)


# --- HTML ----------------------------------------------------------------------------


def render_html(pack: Pack) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
    from markupsafe import Markup

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
    population = pack.parts["connections.csv"].report
    changes = pack.parts["changes.csv"].report
    snapshots = pack.parts["snapshots.csv"].report
    assert population is not None and changes is not None and snapshots is not None
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
        inventory=population.rows,
        changes=changes.rows,
        findings=_table(pack.parts["findings.csv"].report, FINDING_COLUMNS),
        held=[r for r in snapshots.rows if r["status"] != "complete"],
        snapshot_count=len(snapshots.rows),
        snapshot_states=Counter(r["status"] for r in snapshots.rows),
        notifications=_table(pack.parts["notifications.csv"].report, NOTIFICATION_COLUMNS),
        not_available=NOT_AVAILABLE,
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


def _table(source: Report | None, preferred: Sequence[str]) -> Table | None:
    """A Report as an HTML table: the preferred columns it has (else all), as text."""
    if source is None:
        return None
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


# --- writing and verifying -----------------------------------------------------------


class PackError(Exception):
    """The output folder cannot be used (exists and is not empty, is a file, ...)."""


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PackError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise PackError(f"{out} is not empty; give a new or empty folder")


def write_pack(out: Path, pack: Pack, parameters: dict[str, Any], command: str) -> str:
    """Write every file into a private temporary folder beside ``out``, then move it into
    place: a pack is there whole or not at all. Returns the manifest's SHA-256."""
    check_out_dir(out)
    parent = out.resolve().parent
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        contents = {"report.html": render_html(pack)}
        contents.update((name, part.csv()) for name, part in pack.parts.items())
        files = {}
        for name in FILES:
            data = contents[name].encode("utf-8")
            (staging / name).write_bytes(data)
            part: Part | None = pack.parts.get(name)
            entry: dict[str, Any] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            if part is not None:
                entry["rows"] = part.rows
                entry["available"] = part.report is not None
                if part.command:
                    entry["same_as"] = part.command
            files[name] = entry
        manifest = _manifest(pack, parameters, command, files)
        data = (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()
        (staging / MANIFEST).write_bytes(data)
        if out.is_dir():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return hashlib.sha256(data).hexdigest()


def command_line(out: Path, pack: Pack) -> str:
    """The command that writes this pack again (times resolved, so it reads the same rows)."""
    scope = pack.scope
    source = _Same(scope, pack.config, pack.database).source()
    args = ["python", "-m", "inventory", "evidence", "--out", str(out)]
    args += ["--as-of", format_timestamp(scope.as_of)]
    if scope.since is not None:
        args += ["--since", format_timestamp(scope.since)]
    for account in scope.accounts:
        args += ["--account", account]
    for integration in scope.integrations:
        args += ["--integration", integration]
    args += ["--max-age", span(scope.max_age), *source]
    return shlex.join(args)


def written_summary(out: Path, pack: Pack, digest: str) -> str:
    lines = [f"evidence pack written to {out}:"]
    for name in FILES:
        part = pack.parts.get(name)
        if part is None:
            lines.append(f"  {name}")
        elif part.report is None:
            lines.append(f"  {name}: {NOT_AVAILABLE}")
        else:
            lines.append(f"  {name}: {part.rows} row{'' if part.rows == 1 else 's'}")
    lines.append(f"  {MANIFEST}: sha256 {digest}")
    lines.append(
        f"Record the manifest's sha256 with the audit ticket; "
        f"'python -m inventory evidence verify {shlex.quote(str(out))}' checks the folder."
    )
    return "\n".join(lines)


def _manifest(
    pack: Pack, parameters: dict[str, Any], command: str, files: dict[str, Any]
) -> dict[str, Any]:
    chain: dict[str, Any]
    if pack.chain is None:
        chain = {"available": False, "note": NOT_AVAILABLE}
    else:
        heads, digest = pack.chain
        chain = {"available": True, "heads": _jsonable(heads), "digest": digest}
    return {
        "tool": {"name": "zis-inventory", "version": __version__},
        "command": command,
        "parameters": _jsonable(parameters),
        "period": {
            "start": _stamp(pack.period_start),
            "end": _stamp(pack.scope.as_of),
            "as_of": _stamp(pack.scope.as_of),
        },
        "generated_at": _stamp(pack.generated_at),
        "host": pack.host,
        "user": pack.generated_by,
        "database": {"url": pack.database_url, "schema_revision": pack.schema_revision},
        "chain": chain,
        "files": files,
    }


def _stamp(value: datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, timedelta):
        return span(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(frozen=True)
class Verdict:
    ok: bool
    lines: list[str]


def verify(folder: Path) -> Verdict:
    """Check every file against manifest.json: changed, missing and extra files fail."""
    path = folder / MANIFEST
    try:
        raw = path.read_bytes()
        manifest = json.loads(raw)
        listed = manifest["files"]
        assert isinstance(listed, dict)
    except FileNotFoundError:
        return Verdict(False, [f"missing: {MANIFEST}", "evidence verify: FAILED"])
    except (ValueError, KeyError, TypeError, AssertionError):
        return Verdict(False, [f"unreadable: {MANIFEST}", "evidence verify: FAILED"])
    problems = []
    for name, entry in sorted(listed.items()):
        if not _plain_name(name):
            problems.append(f"bad name in {MANIFEST}: {name!r}")
            continue
        file = folder / name
        if not file.is_file():
            problems.append(f"missing: {name}")
        elif hashlib.sha256(file.read_bytes()).hexdigest() != _sha(entry):
            problems.append(f"changed: {name}")
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()}
    for name in sorted(present - set(listed) - {MANIFEST}):
        problems.append(f"extra: {name}")
    digest = hashlib.sha256(raw).hexdigest()
    if problems:
        return Verdict(False, [*problems, f"evidence verify: FAILED ({len(problems)} problem(s))"])
    period = manifest.get("period", {})
    return Verdict(
        True,
        [
            f"evidence verify: OK: {len(listed)} files match {MANIFEST}",
            f"as of {period.get('as_of')}, period from {period.get('start') or 'the start'}, "
            f"generated {manifest.get('generated_at')} by {manifest.get('user')}@"
            f"{manifest.get('host')}",
            f"{MANIFEST} sha256 {digest}",
        ],
    )


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def _sha(entry: Any) -> str | None:
    return entry.get("sha256") if isinstance(entry, dict) else None
