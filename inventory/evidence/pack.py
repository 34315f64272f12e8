"""The pack's folder: its files written whole or not at all, manifest.json with the SHA-256
of each and the commands that print them again, and `evidence verify`, which checks them."""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .. import __version__
from ..durations import span
from ..errors import PackError
from ..records import format_timestamp
from ..render import Report
from .html import render_html
from .read import Pack, Scope

MANIFEST = "manifest.json"
FILES = (
    "report.html",
    "connections.csv",
    "oauth_clients.csv",
    "changes.csv",
    "findings.csv",
    "snapshots.csv",
    "notifications.csv",
)


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PackError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise PackError(f"{out} is not empty; give a new or empty folder")


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


def _csvs(pack: Pack) -> dict[str, tuple[Report, str]]:
    """Each CSV file of the pack: its rows and the report command that prints it again."""
    same = _Same(pack.scope, pack.config, pack.database)
    return {
        "connections.csv": (pack.connections, same("connections")),
        "oauth_clients.csv": (pack.clients, same("clients")),
        "changes.csv": (pack.changes, same("changes", period=True)),
        "findings.csv": (
            pack.findings,
            same("findings", "--include-suppressed", "--fail-on", "none"),
        ),
        "snapshots.csv": (pack.snapshots, same("snapshots", "--all", period=True)),
        "notifications.csv": (pack.notifications, same("notifications", period=True)),
    }


def write_pack(out: Path, pack: Pack, parameters: dict[str, Any], command: str) -> str:
    """Write every file into a private temporary folder beside ``out``, then move it into
    place: a pack is there whole or not at all. Returns the manifest's SHA-256."""
    check_out_dir(out)
    parent = out.resolve().parent
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        csvs = _csvs(pack)
        contents = {"report.html": render_html(pack)}
        contents.update((name, rows.render("csv") + "\n") for name, (rows, _) in csvs.items())
        files = {}
        for name in FILES:
            data = contents[name].encode("utf-8")
            (staging / name).write_bytes(data)
            entry: dict[str, Any] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            if name in csvs:
                rows, same_as = csvs[name]
                entry.update(rows=len(rows.rows), available=True, same_as=same_as)
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
    csvs = _csvs(pack)
    for name in FILES:
        if name in csvs:
            rows = len(csvs[name][0].rows)
            lines.append(f"  {name}: {rows} row{'' if rows == 1 else 's'}")
        else:
            lines.append(f"  {name}")
    lines.append(f"  {MANIFEST}: sha256 {digest}")
    lines.append(
        f"Record the manifest's sha256 with the audit ticket; "
        f"'python -m inventory evidence verify {shlex.quote(str(out))}' checks the folder."
    )
    return "\n".join(lines)


def _manifest(
    pack: Pack, parameters: dict[str, Any], command: str, files: dict[str, Any]
) -> dict[str, Any]:
    heads, digest = pack.chain
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
        "chain": {"available": True, "heads": _jsonable(heads), "digest": digest},
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
