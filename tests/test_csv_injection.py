"""CSV injection: every CSV the tool writes (each report command's --format csv and each
CSV of the evidence pack) neutralises a text cell a spreadsheet would read as a formula
(starting with =, +, -, @, tab or CR) with a leading ', as OWASP recommends."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from inventory import render
from inventory.testing import sample_item

from .helpers import Harness, stamp

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Names cannot hold a control character (the parser refuses them); other fields can.
NAMES = ['=HYPERLINK("http://x","y")', "+1", "-1+2", "@SUM(A1)"]
SAFE = ['\'=HYPERLINK("http://x","y")', "'+1", "'-1+2", "'@SUM(A1)"]


def cells(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def no_formula(text: str) -> None:
    """Not one cell of the CSV, header included, starts as a formula."""
    for row in csv.reader(io.StringIO(text, newline="")):
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS), (cell, row)


def test_the_renderer_quotes_text_that_starts_as_a_formula_and_leaves_numbers() -> None:
    keys = ("text", "number")
    rows = [
        {"text": '=HYPERLINK("http://x","y")', "number": -3},
        {"text": "+1", "number": -0.5},
        {"text": "-1+2", "number": 0},
        {"text": "@SUM(A1)", "number": None},
        {"text": "\tx", "number": 12},
        {"text": "\rx", "number": -1},
        {"text": "-3", "number": 3},
        {"text": "a=b, -c", "number": 1},
        {"text": "'already", "number": 1},
        {"text": "", "number": 1},
        {"text": None, "number": 1},
        {"text": datetime(2026, 6, 1, tzinfo=UTC), "number": 1},
    ]
    out = render.Report(keys, rows, [render.Column("text", "TEXT", 10)], "row").render("csv")
    assert out == "\n".join(
        [
            "text,number",
            '"\'=HYPERLINK(""http://x"",""y"")",-3',
            "'+1,-0.5",
            "'-1+2,0",
            "'@SUM(A1),",
            "'\tx,12",
            '"\'\rx","-1"',  # a CR is quoted, or it would end the row
            "'-3,3",
            '"a=b, -c",1',
            "'already,1",
            ",1",
            ",1",
            "2026-06-01T00:00:00Z,1",
        ]
    )
    # JSON and the table are not spreadsheets: the values stay as they are
    json_out = render.Report(keys, rows[:1], [render.Column("text", "TEXT", 40)], "row")
    assert '"text": "=HYPERLINK(\\"http://x\\",\\"y\\")"' in json_out.render("json")
    assert json_out.render("table").splitlines()[1] == '=HYPERLINK("http://x","y")'


def hostile(cli: Harness) -> None:
    """api_keys with formula names and no allowed_domain (ZIS001 findings about them), a
    tab and a CR at the start of other fields, an OAuth token expiring soon (check)."""
    soon = stamp(datetime.now(UTC) + timedelta(days=3))
    items = [("api_key", sample_item("api_key", name, allowed_domain="")) for name in NAMES]
    items += [
        ("api_key", sample_item("api_key", "tabbed", allowed_domain="\tx")),
        ("basic_auth", sample_item("basic_auth", "carriage", username="\rx")),
        ("oauth", sample_item("oauth", "-2+3", token_expiry=soon)),
    ]
    cli.zis.add_integration("acme", "billing", cli.token("acme", "billing"), items)
    cli.write_config("", acme=["billing"])
    assert cli.run("sync").code == 0
    cli.zis.update("acme", "billing", "api_key", "tabbed", allowed_domain="=cmd|' /C calc'!A0")
    assert cli.run("sync").code == 0


EXPECTED_CONNECTIONS = {
    *((name, "", "") for name in SAFE),
    ("tabbed", "'=cmd|' /C calc'!A0", ""),
    ("carriage", "carriage.example.com", "'\rx"),
    ("'-2+3", "'-2+3.example.com", ""),
}


def test_every_report_command_and_pack_csv_neutralises_formulas(cli: Harness) -> None:
    hostile(cli)

    def csv_of(*args: str) -> str:
        result = cli.run(*args, "--format", "csv")
        assert result.code in (0, 1), result.err  # check and findings fail on what they find
        no_formula(result.out)
        return result.out

    def connections(text: str) -> set[tuple[str, str, str]]:
        return {(r["name"], r["allowed_domain"], r["username"]) for r in cells(text)}

    assert connections(csv_of("connections")) == EXPECTED_CONNECTIONS
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert connections(csv_of("connections", "--as-of", now)) == EXPECTED_CONNECTIONS
    changes = {
        (r["name"], r["change"], r["field"], r["old_value"], r["new_value"])
        for r in cells(csv_of("changes"))
    }
    assert changes == {
        *((name, "added", "", "", "") for name in SAFE),
        ("tabbed", "added", "", "", ""),
        ("carriage", "added", "", "", ""),
        ("'-2+3", "added", "", "", ""),
        ("tabbed", "modified", "allowed_domain", "'\tx", "'=cmd|' /C calc'!A0"),
    }
    zis001 = {
        r["name"]
        for r in cells(csv_of("findings", "--include-suppressed"))
        if r["rule"] == "ZIS001"
    }
    assert zis001 == set(SAFE)
    expiring = {(r["kind"], r["name"]) for r in cells(csv_of("check", "--expiring-within", "7d"))}
    assert ("expiring", "'-2+3") in expiring
    assert len(cells(csv_of("snapshots"))) == 2
    csv_of("notifications", "--config", str(cli.config))
    csv_of("db", "check", "--config", str(cli.config))
    csv_of("db", "verify", "--config", str(cli.config))

    assert cli.run("evidence", "--config", str(cli.config), "--out", "pack").code == 0
    pack = cli.tmp_path / "pack"
    for name in ("connections.csv", "changes.csv", "findings.csv", "snapshots.csv"):
        no_formula((pack / name).read_bytes().decode())
    assert connections((pack / "connections.csv").read_bytes().decode()) == EXPECTED_CONNECTIONS
    pack_changes = cells((pack / "changes.csv").read_bytes().decode())
    assert {(r["name"], r["old_value"], r["new_value"]) for r in pack_changes} >= {
        ("tabbed", "'\tx", "'=cmd|' /C calc'!A0")
    }
    pack_findings = cells((pack / "findings.csv").read_bytes().decode())
    assert {r["name"] for r in pack_findings if r["rule"] == "ZIS001"} == set(SAFE)
    no_formula((pack / "notifications.csv").read_bytes().decode())
