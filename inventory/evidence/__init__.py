"""The evidence pack: one folder an auditor can be handed. report.html, the CSVs the report
commands print for the same scope, and manifest.json with the SHA-256 of every file.

Everything is read in one read-only transaction (read), so the files describe one database
state; summary counts, charts draws, html renders, pack writes the folder and verifies it.
"""

from __future__ import annotations

from .. import __version__
from ..errors import PackError
from .html import render_html
from .pack import (
    FILES,
    MANIFEST,
    Verdict,
    check_out_dir,
    command_line,
    verify,
    write_pack,
    written_summary,
)
from .read import Pack, Scope, gather
from .summary import KINDS, SEVERITIES, Expiry, expiry_buckets, open_by_severity, weekly_changes

__all__ = [
    "FILES",
    "KINDS",
    "MANIFEST",
    "SEVERITIES",
    "Expiry",
    "Pack",
    "PackError",
    "Scope",
    "Verdict",
    "__version__",
    "check_out_dir",
    "command_line",
    "expiry_buckets",
    "gather",
    "open_by_severity",
    "render_html",
    "verify",
    "weekly_changes",
    "write_pack",
    "written_summary",
]
