"""report.html in a real headless Chromium: it loads with no console error and no request,
the summary is on the first screen and its numbers are the database's, it prints to A4
pages, and 10,000 connections render in under 10 MB. One pack and one browser session for
the module. Without a browser these skip locally and FAIL in CI (CI=true)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inventory import store
from inventory.cli import main
from inventory.records import format_timestamp, parse_timestamp
from inventory.testing import SENTINEL, FakeZisServer, sample_item

from . import browser
from .helpers import rows

TOTAL = 10_000  # present as of the pack: 10,020 synced, 30 removed, 10 restored
LAYOUT = {
    ("acme", "billing"): 4000,
    ("acme", "crm"): 3000,
    ("globex", "ops"): 2600,
    ("initech", "hr"): 420,  # alone in the printed pack: 10,000 rows print for minutes
}
HOSTILE = "<script>alert(1)</script>"
RTL = "\u202eexe.yap\u202c"
TYPES = ("api_key", "basic_auth", "bearer_token", "oauth")


@dataclass(frozen=True)
class Pack:
    folder: Path
    db_url: str
    as_of: datetime
    printed: Path  # the pack of one account, a few hundred connections

    @property
    def html(self) -> Path:
        return self.folder / "report.html"


def _items(account: str, integration: str, count: int, now: datetime) -> list[Any]:
    out = []
    for i in range(count):
        kind = TYPES[i % 4]
        name = f"{integration}_{kind}_{i:05d}"
        fields: dict[str, Any] = {}
        if kind == "oauth":
            days = (i * 7) % 230 - 30  # from 30 days ago to 200 days ahead
            fields["token_expiry"] = (
                "" if i % 9 == 0 else format_timestamp(now + timedelta(days=days))
            )
        out.append((kind, sample_item(kind, name, **fields)))
    if (account, integration) == ("acme", "billing"):  # hostile names count in the 10,000
        out[0] = ("api_key", sample_item("api_key", HOSTILE, allowed_domain='"><b>x</b>'))
        out[1] = ("api_key", sample_item("api_key", RTL, allowed_domain="\u202emoc.live\u202c"))
    return out


def _require_browser() -> None:
    gone = browser.missing()
    if gone:
        reason = (
            f"no browser: {', '.join(gone)} not found (apt-get install chromium chromium-driver)"
        )
        if browser.in_ci():
            pytest.fail(f"CI=true and {reason}; .ci/run installs them", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pack]:
    """10,000 connections synced five weeks ago, changed weekly since; one integration's
    last snapshot failed. The pack is written as of now."""
    _require_browser()  # before the seconds of building the pack
    tmp = tmp_path_factory.mktemp("evidence_browser")
    db_url = f"sqlite:///{tmp / 'inventory.db'}"
    now = datetime.now(UTC).replace(microsecond=0)
    with FakeZisServer() as server, pytest.MonkeyPatch.context() as patch:
        blocks = [f'[database]\nurl = "{db_url}"\n']
        entries: dict[str, list[str]] = {}
        for (account, integration), count in LAYOUT.items():
            token = f"{SENTINEL}-TOKEN-{account}-{integration}"
            env = f"TOKEN_{account}_{integration}".upper()
            patch.setenv(env, token)
            server.add_integration(
                account, integration, token, _items(account, integration, count, now)
            )
            entries.setdefault(account, []).append(
                f'{{ name = "{integration}", token_env = "{env}" }}'
            )
        for account, integrations in entries.items():
            blocks.append(
                f'[[accounts]]\nsubdomain = "{account}"\nbase_url = "{server.base_url(account)}"\n'
                f"integrations = [{', '.join(integrations)}]\n"
            )
        config = tmp / "inventory.toml"
        config.write_text("\n".join(blocks))

        def sync_at(when: datetime, code: int = 0) -> None:
            patch.setattr(store, "now", lambda: when)
            assert main(["sync", "--config", str(config)]) == code

        sync_at(now - timedelta(days=35))
        removed = [
            server.delete("acme", "billing", "basic_auth", f"billing_basic_auth_{i:05d}")
            for i in range(5, 125, 4)
        ]
        for i in range(0, 200, 4):
            server.update("acme", "crm", "api_key", f"crm_api_key_{i:05d}", allowed_domain="x.io")
        sync_at(now - timedelta(days=21))
        for item in removed[:10]:
            server.put("acme", "billing", "basic_auth", item)
        for i in range(40):
            server.put("globex", "ops", "bearer_token", sample_item("bearer_token", f"new_{i}"))
            server.delete("globex", "ops", "bearer_token", f"ops_bearer_token_{4 * i + 2:05d}")
        sync_at(now - timedelta(days=7))
        server.integration("acme", "crm").token = "revoked"
        sync_at(now - timedelta(hours=2), code=1)
    folder = tmp / "pack"
    assert main(["evidence", "--config", str(config), "--out", str(folder)]) == 0
    as_of = parse_timestamp(json.loads((folder / "manifest.json").read_text())["period"]["as_of"])
    printed = tmp / "initech"
    args = ["evidence", "--config", str(config), "--out", str(printed), "--account", "initech"]
    assert main(args) == 0
    yield Pack(folder, db_url, as_of, printed / "report.html")


@dataclass
class Loaded:
    driver: Any
    console: list[dict[str, Any]]
    requests: list[str]


@pytest.fixture(scope="module")
def page(pack: Pack) -> Iterator[Loaded]:
    driver = browser.start()
    try:
        driver.set_page_load_timeout(60)
        driver.get(pack.html.as_uri())
        yield Loaded(driver, driver.get_log("browser"), browser.requested_urls(driver))
    finally:
        driver.quit()


def test_loads_with_no_console_error_and_no_request(pack: Pack, page: Loaded) -> None:
    assert page.console == []
    assert page.requests == [pack.html.as_uri()]
    assert page.driver.title.startswith("ZIS credential inventory as of")
    assert page.driver.execute_script("return document.scripts.length") == 0


def _expected(pack: Pack) -> dict[str, str]:
    at = pack.as_of.strftime("%Y-%m-%d %H:%M:%S.%f")
    valid = f"valid_from <= '{at}' AND (valid_to IS NULL OR valid_to > '{at}')"
    numbers = {"total-connections": rows(pack.db_url, f"SELECT count(*) FROM connection_versions WHERE {valid}")[0][0]}  # fmt: skip
    for account, kind, n in rows(
        pack.db_url,
        f"SELECT account, type, count(*) FROM connection_versions WHERE {valid} GROUP BY 1, 2",
    ):
        numbers[f"{account}/{kind}"] = n
    expiry = f"SELECT count(*) FROM connection_versions WHERE {valid} AND token_expiry"
    numbers["tokens-expired"] = rows(pack.db_url, f"{expiry} <= '{at}'")[0][0]
    horizon = (pack.as_of + timedelta(days=180)).strftime("%Y-%m-%d %H:%M:%S.%f")
    numbers["tokens-expiring"] = rows(
        pack.db_url, f"{expiry} > '{at}' AND token_expiry <= '{horizon}'"
    )[0][0]
    numbers["tokens-unknown"] = rows(
        pack.db_url,
        f"SELECT count(*) FROM connection_versions WHERE {valid} AND type = 'oauth' "
        "AND token_expiry IS NULL",
    )[0][0]
    numbers["changes-total"] = rows(
        pack.db_url,
        "SELECT count(*) FROM (SELECT DISTINCT snapshot_id, account, integration, type, name, "
        f"change FROM connection_changes WHERE detected_at <= '{at}') AS c",
    )[0][0]
    # crm: its last snapshot failed two hours ago, when the others completed
    numbers["integrations-attention"] = 1
    return {k: str(v) for k, v in numbers.items()}


def test_the_summary_is_on_screen_and_its_numbers_are_the_databases(
    pack: Pack, page: Loaded, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = page.driver
    driver.execute_script("window.scrollTo(0, 0)")
    summary = driver.find_element(By.ID, "summary")
    height = driver.execute_script("return window.innerHeight")
    assert summary.is_displayed() and summary.rect["y"] < height
    shot = driver.get_screenshot_as_png()
    (tmp_path / "screen.png").write_bytes(shot)
    assert browser.png_colors(shot) > 50
    assert browser.png_colors(summary.screenshot_as_png) > 20
    got = {
        e.get_attribute("id"): e.get_attribute("data-value")
        for e in driver.find_elements(By.CSS_SELECTOR, "#summary [id][data-value]")
    }
    for cell in driver.find_elements(By.CSS_SELECTOR, "#summary [data-account][data-type]"):
        key = f"{cell.get_attribute('data-account')}/{cell.get_attribute('data-type')}"
        assert cell.text == cell.get_attribute("data-value")  # what the screen shows
        if cell.text != "0":
            got[key] = cell.text
    expected = _expected(pack)
    assert {k: got[k] for k in expected} == expected
    assert int(expected["total-connections"]) == TOTAL
    assert driver.find_element(By.ID, "total-connections").text == expected["total-connections"]


def test_prints_to_a4_pages(pack: Pack, page: Loaded) -> None:
    driver = page.driver
    driver.get(pack.printed.as_uri())
    try:
        assert driver.get_log("browser") == []
        pdf = browser.print_pdf(driver)
    finally:
        driver.get(pack.html.as_uri())
    assert pdf.startswith(b"%PDF")
    assert browser.pdf_pages(pdf) >= 2
    assert b"/MediaBox [0 0 595" in pdf  # A4: 595 x 842 points


def test_ten_thousand_connections_render_under_10_mb(pack: Pack, page: Loaded) -> None:
    assert pack.html.stat().st_size < 10 * 1024 * 1024
    driver = page.driver
    count = driver.execute_script("return document.querySelectorAll('#inventory tbody tr').length")
    assert count == TOTAL
    last = driver.execute_script(
        "const r = document.querySelectorAll('#inventory tbody tr');"
        "r[r.length - 1].scrollIntoView(); return r[r.length - 1].getBoundingClientRect().height"
    )
    assert last > 0
    driver.execute_script("window.scrollTo(0, 0)")


def test_hostile_text_is_shown_as_text(page: Loaded) -> None:
    shown = page.driver.execute_script(
        "const want = arguments[0];"
        "return Array.from(document.querySelectorAll('#inventory td'), c => c.textContent)"
        ".filter(t => want.includes(t));",
        [HOSTILE, RTL, '"><b>x</b>'],
    )
    assert sorted(shown) == sorted([HOSTILE, RTL, '"><b>x</b>'])
    assert (
        page.driver.execute_script("return document.querySelectorAll('script, td b').length") == 0
    )
