"""Debian's chromium and chromium-driver through Selenium, for the report.html tests and the
README's screenshots (contrib/evidence_screenshots.py)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")
A4_CM = (21.0, 29.7)
A4_CSS_PX = (794, 1123)  # 210 x 297 mm at 96 px per inch


def missing() -> list[str]:
    return [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]


def start(width: int = 1366, height: int = 900) -> Any:
    """A headless Chromium session logging the console and the network."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={width},{height}",
        # Nothing may be fetched anyway; this keeps a mistake from reaching a network.
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def requested_urls(driver: Any) -> list[str]:
    """Every URL the page asked for since the last call (from the performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def print_pdf(driver: Any) -> bytes:
    from selenium.webdriver.common.print_page_options import PrintOptions

    options = PrintOptions()
    options.page_width, options.page_height = A4_CM
    options.background = True
    return base64.b64decode(driver.print_page(options))


def pdf_pages(pdf: bytes) -> int:
    """Page objects of a PDF that Chromium (Skia) wrote, its objects uncompressed."""
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))


def emulate_print(driver: Any, on: bool = True) -> None:
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print" if on else ""})


def png_colors(png: bytes) -> int:
    """How many different byte values the image's pixel rows hold: 1-2 means blank."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    data, at = b"", 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind = png[at + 4 : at + 8]
        if kind == b"IDAT":
            data += png[at + 8 : at + 8 + length]
        at += 12 + length
    return len(set(zlib.decompress(data)))


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def screenshots(docs: Path) -> None:
    """The README's pictures: the demo's pack on a laptop screen and its first printed page
    (pdftoppm when poppler-utils is there, else the page at A4 width in print media)."""
    import subprocess
    import tempfile

    from inventory.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        config = Path(tmp) / "inventory.toml"
        config.write_text(f'[database]\nurl = "sqlite:///{db}"\n')
        assert main(["demo", "--database", str(db)]) == 0
        pack = Path(tmp) / "evidence"
        assert main(["evidence", "--config", str(config), "--out", str(pack)]) == 0
        driver = start(1280, 1500)
        try:
            driver.get((pack / "report.html").as_uri())
            assert driver.get_log("browser") == []
            (docs / "evidence-screen.png").write_bytes(driver.get_screenshot_as_png())
            if shutil.which("pdftoppm"):
                (Path(tmp) / "report.pdf").write_bytes(print_pdf(driver))
                subprocess.run(
                    ["pdftoppm", "-png", "-r", "96", "-f", "1", "-l", "1", "-singlefile",
                     str(Path(tmp) / "report.pdf"), str(docs / "evidence-print")],
                    check=True,
                )  # fmt: skip
            else:
                driver.set_window_size(*A4_CSS_PX)
                emulate_print(driver)
                # The @page margins (12 mm, 10 mm) that a screenshot does not apply.
                driver.execute_script("document.body.style.padding = '45px 38px'")
                (docs / "evidence-print.png").write_bytes(driver.get_screenshot_as_png())
        finally:
            driver.quit()


if __name__ == "__main__":  # .venv/bin/python -m tests.browser docs
    import sys

    screenshots(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
