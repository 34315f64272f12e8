"""The evidence pack without a browser: its CSVs are the report commands' CSVs for the same
parameters, the period's edges, the manifest and `evidence verify`, hostile text shown as
text, the features of other issues plugged in, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import shlex
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from inventory import evidence, render, report, store
from inventory.evidence import read
from inventory.records import format_timestamp
from inventory.store.bulk import sqlite_value
from inventory.testing import SENTINEL, sample_item

from .helpers import NOW, T1, T2, T3, Harness, sync_at

US = timedelta(microseconds=1)
FILES = {
    "report.html",
    "connections.csv",
    "oauth_clients.csv",
    "changes.csv",
    "findings.csv",
    "snapshots.csv",
    "notifications.csv",
    "manifest.json",
}


def write_pack(h: Harness, *args: str, out: str = "pack") -> Path:
    folder = h.tmp_path / out
    result = h.run("evidence", "--config", str(h.config), "--out", str(folder), *args)
    assert result.code == 0, result.err
    return folder


def manifest(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "manifest.json").read_text()))


def same_as(h: Harness, command: str) -> str:
    """Run a manifest's `same_as` command as written (its own --config and --database)
    and return its stdout."""
    args = shlex.split(command)
    assert args[:3] == ["python", "-m", "inventory"]
    config, h.config = h.config, None  # the harness adds none of its own
    try:
        result = h.run(*args[3:])
    finally:
        h.config = config
    assert result.code == 0, result.err
    return result.out


def change_keys(folder: Path) -> list[tuple[str, str, str]]:
    rows = evidence_rows(folder / "changes.csv")
    return [(r["detected_at"], r["name"], r["change"]) for r in rows]


def evidence_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--as-of", format_timestamp(T2), "--since", format_timestamp(T2)),
        ("--as-of", "2026-04-15", "--since", "2026-03-15", "--integration", "billing"),
        ("--account", "acme", "--since", "45d"),
    ],
    ids=["whole history", "one instant", "a month of billing", "45 days back"],
)
def test_csvs_are_the_report_commands_csv(history: Harness, args: tuple[str, ...]) -> None:
    history.zis.integration("acme", "crm").token = "rotated-elsewhere"
    sync_at(history, T3 + timedelta(hours=1), code=1)
    folder = write_pack(history, *args)
    files = manifest(folder)["files"]
    for name in ("connections.csv", "changes.csv", "snapshots.csv"):
        assert (folder / name).read_text() == same_as(history, files[name]["same_as"]), name
    params = manifest(folder)["parameters"]
    as_of = datetime.fromisoformat(params["as_of"])
    since = datetime.fromisoformat(params["since"]) if params["since"] else None
    engine = store.make_engine(history.db_url, readonly=True)
    try:
        expected = report.snapshots(
            engine,
            accounts=params["accounts"],
            integrations=params["integrations"],
            limit=None,
            since=since,
            as_of=as_of,
        )
    finally:
        engine.dispose()
    assert (folder / "snapshots.csv").read_text() == expected.render("csv") + "\n"
    assert {r["status"] for r in expected.rows} <= {"complete", "failed"}
    assert all((since is None or r["started_at"] >= since) and r["started_at"] <= as_of
               for r in expected.rows)  # fmt: skip
    if not args:  # the whole history: every snapshot, the failed one too
        assert [r["status"] for r in expected.rows].count("failed") == 1
        assert len(expected.rows) == 8


def test_period_edges(history: Harness) -> None:
    t1_adds = [
        (format_timestamp(T1), n, "added")
        for n in ("key_a", "user_b", "tok_c", "tok_d", "tok_e", "crm_tok")
    ]
    t2 = [(format_timestamp(T2), "key_a", "modified"), (format_timestamp(T2), "user_b", "removed")]
    t3 = [(format_timestamp(T3), "user_b", "restored"), (format_timestamp(T3), "tok_f", "added")]

    numbers = itertools.count()

    def at(when: datetime, since: datetime | None = None) -> Path:
        args = ["--as-of", format_timestamp(when)]
        if since is not None:
            args += ["--since", format_timestamp(since)]
        return write_pack(history, *args, out=f"pack-{next(numbers)}")

    def population(folder: Path) -> set[tuple[str, str]]:
        return {(r["name"], r["allowed_domain"]) for r in evidence_rows(folder / "connections.csv")}

    # as-of includes what a snapshot started exactly then recorded, as connections --as-of does
    before, exactly = at(T2 - US), at(T2)
    assert sorted(change_keys(before)) == sorted(t1_adds)
    assert sorted(change_keys(exactly)) == sorted(t1_adds + t2)
    assert ("user_b", "user-b.example.com") in population(before)
    assert ("key_a", "a.example.com") in population(before)
    assert "user_b" not in {n for n, _ in population(exactly)}
    assert ("key_a", "narrow.example.com") in population(exactly)
    # since is inclusive too
    assert change_keys(at(T3, since=T2)) == t2 + t3
    assert change_keys(at(T3, since=T2 + US)) == t3
    assert change_keys(at(T3, since=T3)) == t3
    assert change_keys(at(T1 - US)) == []
    assert evidence_rows(at(T1 - US) / "connections.csv") == []
    # the snapshots of the period, by started_at
    period = at(T3, since=T2)
    assert {r["started_at"] for r in evidence_rows(period / "snapshots.csv")} == {
        format_timestamp(T2),
        format_timestamp(T3),
    }
    # a duration for --since is measured back from --as-of
    back = write_pack(history, "--as-of", "2026-05-11", "--since", "10d", out="back")
    assert manifest(back)["period"] == {
        "start": "2026-05-01T00:00:00Z",
        "end": "2026-05-11T00:00:00Z",
        "as_of": "2026-05-11T00:00:00Z",
    }
    assert change_keys(back) == t3
    # without --since the period starts at the first snapshot
    assert manifest(at(T3))["period"]["start"] == format_timestamp(T1)


def summary_numbers(folder: Path) -> dict[str, str]:
    """Every element with an id and a data-value in report.html."""
    parser = _Elements()
    parser.feed((folder / "report.html").read_text())
    return {a["id"]: a["data-value"] for _, a in parser.elements if "id" in a and "data-value" in a}


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def test_summary_numbers_and_freshness(history: Harness) -> None:
    history.zis.integration("acme", "crm").token = "rotated-elsewhere"
    sync_at(history, T3 + timedelta(hours=1), code=1)
    stale = summary_numbers(write_pack(history))
    listed = history.run("findings", "--as-of", format_timestamp(NOW), "--format", "json")
    by_severity = Counter(r["severity"] for r in json.loads(listed.out) if r["status"] == "open")
    assert {k: v for k, v in stale.items() if k.startswith("findings-")} == {
        f"findings-{s}": str(by_severity[s]) for s in evidence.SEVERITIES
    } == {"findings-critical": "0", "findings-high": "3", "findings-medium": "1",
          "findings-low": "1"}  # fmt: skip
    assert {k: v for k, v in stale.items() if k != "as-of" and not k.startswith("findings-")} == {
        "total-connections": "7",
        "integrations-attention": "2",  # billing stale since T3, crm failed
        "tokens-expired": "1",
        "tokens-expiring": "2",
        "tokens-later": "0",
        "tokens-unknown": "1",
        "snapshots-total": "8",
        "snapshots-failed": "1",
        "snapshots-held": "0",
        "changes-total": "10",
        "changes-added": "7",
        "changes-removed": "1",
        "changes-modified": "1",
        "changes-restored": "1",
    }
    fresh = summary_numbers(
        write_pack(history, "--as-of", format_timestamp(T3 + timedelta(minutes=30)), out="p2")
    )
    assert fresh["integrations-attention"] == "0"
    assert (
        summary_numbers(write_pack(history, "--max-age", "60d", out="p3"))["integrations-attention"]
        == "1"
    )  # only crm, whose last snapshot failed
    history.write_config("", acme=["billing", "crm", "ops"])  # ops: configured, never synced
    folder = write_pack(history, "--max-age", "60d", out="p4")
    assert summary_numbers(folder)["integrations-attention"] == "2"
    parser = _Elements()
    parser.feed((folder / "report.html").read_text())
    at = parser.cells.index("ops")
    assert parser.cells[at - 1 : at + 5] == ["acme", "ops", "-", "-", "-", "never"]


def test_expiry_buckets_and_weeks() -> None:
    at = datetime(2026, 6, 1, tzinfo=UTC)
    rows = [
        {"type": "oauth", "token_expiry": at},  # expired: at the instant
        {"type": "oauth", "token_expiry": at + US},  # week 0
        {"type": "oauth", "token_expiry": at + timedelta(days=7)},  # still week 0
        {"type": "oauth", "token_expiry": at + timedelta(days=7) + US},  # week 1
        {"type": "oauth", "token_expiry": at + timedelta(days=180)},  # last week
        {"type": "oauth", "token_expiry": at + timedelta(days=180) + US},  # later
        {"type": "oauth", "token_expiry": None},  # unknown
        {"type": "api_key", "token_expiry": None},  # not a token
    ]
    got = evidence.expiry_buckets(rows, at)
    assert (got.expired, got.later, got.unknown, got.within) == (1, 1, 1, 4)
    assert [n for _, n in got.weeks][:2] == [2, 1] and got.weeks[-1][1] == 1
    assert len(got.weeks) == 26
    weeks = evidence.weekly_changes(
        [(datetime(2026, 6, 1, tzinfo=UTC), "added"), (datetime(2026, 6, 14, 23, tzinfo=UTC), "removed")],
        datetime(2026, 6, 3, tzinfo=UTC),
        datetime(2026, 6, 15, tzinfo=UTC),
    )  # fmt: skip
    assert [(w.date().isoformat(), dict(c)) for w, c in weeks] == [
        ("2026-06-01", {"added": 1}),
        ("2026-06-08", {"removed": 1}),
        ("2026-06-15", {}),
    ]


def test_manifest_and_verify(history: Harness) -> None:
    result = history.run(
        "evidence", "--config", str(history.config), "--out", str(history.tmp_path / "pack")
    )
    assert result.code == 0, result.err
    folder = history.tmp_path / "pack"
    data = manifest(folder)
    assert {p.name for p in folder.iterdir()} == FILES
    assert set(data["files"]) == FILES - {"manifest.json"}
    for name, entry in data["files"].items():
        raw = (folder / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(raw).hexdigest(), name
        assert entry["bytes"] == len(raw)
        if name.endswith(".csv") and entry["available"]:
            assert entry["rows"] == len(evidence_rows(folder / name))
    assert data["files"]["connections.csv"]["rows"] == 7
    assert data["tool"] == {"name": "zis-inventory", "version": evidence.__version__}
    assert data["parameters"] == {
        "out": str(folder),
        "as_of": format_timestamp(NOW),
        "since": None,
        "accounts": [],
        "integrations": [],
        "max_age": "2d",
        "config": str(history.config),
    }
    assert data["command"] == shlex.join(
        ["python", "-m", "inventory", "evidence", "--out", str(folder), "--as-of",
         format_timestamp(NOW), "--max-age", "2d", "--config", str(history.config),
         "--database", store.portable_url(history.db_url)]
    )  # fmt: skip
    assert data["generated_at"] == format_timestamp(NOW)
    assert data["host"] and data["user"]
    assert data["database"] == {
        "url": store.safe_url(history.db_url),
        "schema_revision": store.head_revision(),
    }
    heads, chain_digest = _expected_chain(history.db_url)
    assert data["chain"] == {"available": True, "heads": heads, "digest": chain_digest}
    digest = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    assert f"manifest.json: sha256 {digest}" in result.out

    def verify() -> tuple[int, list[str]]:
        got = history.run("evidence", "verify", str(folder))
        return got.code, got.out.splitlines()

    code, lines = verify()
    assert code == 0
    assert lines[0] == "evidence verify: OK: 7 files match manifest.json"
    assert lines[-1] == f"manifest.json sha256 {digest}"
    original = (folder / "connections.csv").read_bytes()
    (folder / "connections.csv").write_bytes(original.replace(b"tok_c", b"tok_x"))
    assert verify() == (1, ["changed: connections.csv", "evidence verify: FAILED (1 problem(s))"])
    (folder / "connections.csv").write_bytes(original)
    (folder / "changes.csv").unlink()
    (folder / "notes.txt").write_text("added later")
    assert verify() == (
        1,
        ["missing: changes.csv", "extra: notes.txt", "evidence verify: FAILED (2 problem(s))"],
    )
    (folder / "manifest.json").write_text("{not json")
    assert verify() == (1, ["unreadable: manifest.json", "evidence verify: FAILED"])


def _expected_chain(url: str) -> tuple[list[dict[str, Any]], str]:
    engine = store.make_engine(url, readonly=True)
    try:
        with engine.connect() as conn:
            return read._chain_heads(conn)
    finally:
        engine.dispose()


def test_evidence_never_writes(history: Harness) -> None:
    if not history.db_url.startswith("sqlite"):
        pytest.skip("the read-only transaction is checked on SQLite's file bytes")
    path = Path(history.db_url.removeprefix("sqlite:///"))
    before = path.read_bytes()
    write_pack(history)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--as-of", "2026-06-02"), "--as-of is in the future"),
        (("--as-of", "2026-05-01", "--since", "2026-05-02"), "--since is after --as-of"),
        (("--since", "soon"), "'soon' is not a duration (90d, 12h, 90m), a date or an RFC 3339"),
        (("--max-age", "2"), "'2' is not a duration such as 30d, 12h or 90m"),
    ],
)
def test_bad_parameters_exit_2(history: Harness, args: tuple[str, ...], message: str) -> None:
    result = history.run(
        "evidence", "--config", str(history.config), "--out", str(history.tmp_path / "x"), *args
    )
    assert (result.code, message in result.err) == (2, True), result.err
    assert not (history.tmp_path / "x").exists()


def test_the_folder_must_be_new_or_empty(history: Harness) -> None:
    full = history.tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    result = history.run("evidence", "--config", str(history.config), "--out", str(full))
    assert result.code == 2 and f"{full} is not empty" in result.err
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    a_file = history.tmp_path / "file"
    a_file.write_text("x")
    result = history.run("evidence", "--config", str(history.config), "--out", str(a_file))
    assert result.code == 2 and "exists and is not a directory" in result.err
    empty = history.tmp_path / "empty"
    empty.mkdir()
    write_pack(history, out="empty")
    assert {p.name for p in empty.iterdir()} == FILES
    assert history.run("evidence").code == 2  # no --out
    result = history.run("evidence", "--out", str(empty), "verify", str(empty))
    assert result.code == 2 and "evidence verify takes only its DIR" in result.err
    assert not [p for p in history.tmp_path.iterdir() if p.name.startswith(".")]


HOSTILE_NAMES = [
    "<script>alert(1)</script>",
    "\"quoted\" & 'single' </td></tr></table>",
    "\u202eexe.tnemyap\u202c",  # a right-to-left override
    "שלום-مرحبا-connection",
    "n" * 255,
]
HOSTILE_DOMAINS = [
    '"><img src=x onerror=alert(1)>',
    "<svg onload=alert(1)>.example.com",
    "\u202emoc.elgoog\u202c",
    "a" * 4000 + ".example.com",
    "{{ 7*7 }}{% raw %}",
]


def test_hostile_text_renders_as_text(cli: Harness) -> None:
    items = [
        ("api_key", sample_item("api_key", name, allowed_domain=domain))
        for name, domain in zip(HOSTILE_NAMES, HOSTILE_DOMAINS, strict=True)
    ]
    cli.zis.add_integration("acme", "billing", cli.token("acme", "billing"), items)
    cli.write_config("", acme=["billing"])
    assert cli.run("sync").code == 0
    folder = write_pack(cli)
    html = (folder / "report.html").read_text()
    parser = _Elements()
    parser.feed(html)
    tags = {tag for tag, _ in parser.elements}
    assert tags.isdisjoint({"script", "img", "iframe", "object", "embed"})
    svg_tags = {"svg", "rect", "line", "text", "title"}
    assert tags <= {
        *("html", "head", "meta", "link", "title", "style", "body", "header", "h1", "h2", "h3"),
        *("p", "b", "i", "small", "dl", "dt", "dd", "span", "bdi", "section", "div", "table"),
        *("thead", "tbody", "tr", "th", "td", "ul", "li", "code", "footer"),
        *svg_tags,
    }
    attributes = {k for _, a in parser.elements for k in a}
    assert not {a for a in attributes if a.startswith("on")}
    for name in HOSTILE_NAMES:
        assert name in parser.cells
    for domain in HOSTILE_DOMAINS:
        assert domain in parser.cells
    assert "<script>alert(1)</script>" not in html
    assert {r["name"] for r in evidence_rows(folder / "connections.csv")} == set(HOSTILE_NAMES)
    for path in folder.iterdir():
        assert SENTINEL.encode() not in path.read_bytes(), path


# --- the features of other issues, plugged in the way they will be -------------------


@dataclass(frozen=True)
class _Finding:
    severity: str
    name: str
    suppressed_by: str | None
    resolved_at: datetime | None


def _fake_features(monkeypatch: pytest.MonkeyPatch, calls: list[tuple[str, Any]]) -> None:
    keys = ("rule", "severity", "account", "integration", "type", "name", "detail",
            "first_seen_at", "resolved_at", "suppressed_by", "suppression_reason",
            "suppressed_until")  # fmt: skip
    found = [
        _Finding("high", "<b>tok_c</b>", None, None),
        _Finding("high", "tok_d", None, None),
        _Finding("critical", "tok_e", None, None),
        _Finding("low", "key_a", "alice", None),
        _Finding("medium", "user_b", None, T3),
    ]

    def findings_report(engine: Any, settings: Any, **kwargs: Any) -> render.Report:
        calls.append(("findings", kwargs))
        with engine.connect() as conn:  # the pinned read transaction
            conn.execute(text("SELECT 1"))
        rows = [
            {
                "rule": "ZIS001", "severity": f.severity, "account": "acme",
                "integration": "billing", "type": "oauth", "name": f.name, "detail": "d",
                "first_seen_at": T1, "resolved_at": f.resolved_at,
                "suppressed_by": f.suppressed_by,
                "suppression_reason": "vendor fix due" if f.suppressed_by else None,
                "suppressed_until": T3 + timedelta(days=90) if f.suppressed_by else None,
            }
            for f in found
        ]  # fmt: skip
        return render.Report(keys, rows, [render.Column("rule", "RULE", 8)], "finding")

    def notifications_report(engine: Any, **kwargs: Any) -> render.Report:
        calls.append(("notifications", kwargs))
        rows = [{"id": 1, "created_at": T2, "sink": "slack", "status": "delivered"}]
        return render.Report(
            ("id", "created_at", "sink", "status"), rows, [render.Column("id", "ID", 4)], "note"
        )

    def chain_heads(conn: Any) -> tuple[list[dict[str, Any]], str]:
        calls.append(("chain", None))
        heads = [{"account": "acme", "integration": "billing", "snapshot_id": 3,
                  "chain_hash": "ab" * 32}]  # fmt: skip
        return heads, "cd" * 32

    for module, name, function in (
        ("inventory.evidence.read", "findings_report", findings_report),
        ("inventory.evidence.read", "notifications_report", notifications_report),
        ("inventory.evidence.read", "chain_heads", chain_heads),
    ):
        monkeypatch.setattr(importlib.import_module(module), name, function)


def test_findings_notifications_and_chain_when_present(
    history: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, Any]] = []
    _fake_features(monkeypatch, calls)
    folder = write_pack(history, "--since", "2026-04-01", "--integration", "billing")
    assert calls == [
        (
            "findings",
            {
                "as_of": NOW,
                "accounts": (),
                "integrations": ("billing",),
                "include_suppressed": True,
            },
        ),
        (
            "notifications",
            {
                "status": (),
                "sinks": (),
                "since": T2 - timedelta(hours=12),
                "as_of": NOW,
                "accounts": (),
                "integrations": ("billing",),
            },
        ),
        ("chain", None),
    ]
    findings = evidence_rows(folder / "findings.csv")
    assert [(r["name"], r["suppressed_by"], r["suppression_reason"], r["suppressed_until"])
            for r in findings][3] == ("key_a", "alice", "vendor fix due", "2026-07-30T12:00:00Z")  # fmt: skip
    assert evidence_rows(folder / "notifications.csv") == [
        {"id": "1", "created_at": "2026-04-01T12:00:00Z", "sink": "slack", "status": "delivered"}
    ]
    data = manifest(folder)
    assert data["chain"] == {
        "available": True,
        "heads": [
            {"account": "acme", "integration": "billing", "snapshot_id": 3, "chain_hash": "ab" * 32}
        ],
        "digest": "cd" * 32,
    }
    assert data["files"]["findings.csv"]["rows"] == 5
    assert data["files"]["findings.csv"]["same_as"] == shlex.join(
        ["python", "-m", "inventory", "findings", "--config", str(history.config),
         "--database", store.portable_url(history.db_url), "--include-suppressed",
         "--fail-on", "none", "--as-of", format_timestamp(NOW), "--integration", "billing",
         "--format", "csv"]
    )  # fmt: skip
    numbers = summary_numbers(folder)
    assert {k: numbers[f"findings-{k}"] for k in evidence.SEVERITIES} == {
        "critical": "1",
        "high": "2",
        "medium": "0",  # resolved
        "low": "0",  # suppressed
    }
    html = (folder / "report.html").read_text()
    assert "not available in this version" not in html
    assert "&lt;b&gt;tok_c&lt;/b&gt;" in html and "cd" * 32 in html


def test_no_password_in_the_pack(history: Harness) -> None:
    if not history.db_url.startswith("postgresql"):
        pytest.skip("a password is a PostgreSQL URL's (the test server trusts loopback)")
    password = "db-password-8c1f2e"  # not the sentinel: the config file holds it
    assert history.config is not None
    with_password = history.db_url.replace("postgres@", f"postgres:{password}@", 1)
    assert password in with_password
    history.config.write_text(history.config.read_text().replace(history.db_url, with_password))
    folder = write_pack(history)
    assert manifest(folder)["database"]["url"] == store.safe_url(with_password)
    assert "***" in manifest(folder)["database"]["url"]
    for path in folder.iterdir():
        assert password.encode() not in path.read_bytes(), path
    assert all(password not in output for output in history.outputs)
    for name, entry in manifest(folder)["files"].items():  # they connect all the same
        if "same_as" in entry:
            assert same_as(history, entry["same_as"]) == (folder / name).read_text(), name
    (folder / "manifest.json").unlink()
    result = history.run("evidence", "verify", str(folder))
    assert (result.code, result.out) == (1, "missing: manifest.json\nevidence verify: FAILED\n")
    assert history.run("evidence", "verify", str(history.tmp_path / "nowhere")).code == 2


def test_the_pack_reads_one_transaction(history: Harness) -> None:
    """A sync committing while the pack is read does not show half in it."""
    reader = store.make_engine(history.db_url, readonly=True)
    writer = store.make_engine(history.db_url)
    count = text("SELECT count(*) FROM sync_runs")
    try:
        with read._one_read(reader) as conn:
            before = conn.execute(count).scalar()
            with writer.begin() as other:
                other.execute(
                    text(
                        'INSERT INTO sync_runs (started_at, finished_at, "trigger", status) '
                        "VALUES (:at, :at, 'cli', 'complete')"
                    ),
                    {"at": sqlite_value(NOW) if "sqlite" in history.db_url else NOW},
                )
            assert conn.execute(count).scalar() == before
        with reader.connect() as conn:
            assert conn.execute(count).scalar() == before + 1
    finally:
        reader.dispose()
        writer.dispose()
