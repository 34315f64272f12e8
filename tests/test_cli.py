"""What the CLI loads: importing it, --help and --version load no heavy library, and a
report loads SQLAlchemy but not Alembic, httpx, APScheduler, prometheus-client or rich.
A test of what is loaded, not of a time (benchmarks/run.py --only startup prints those)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from inventory import cli, render, store

from .helpers import Harness

HEAVY = (
    "sqlalchemy",
    "alembic",
    "httpx",
    "httpcore",
    "pydantic",
    "apscheduler",
    "prometheus_client",
    "rich",
    "jinja2",
    "standardwebhooks",
    "psycopg",
)


def loaded_after(code: str, cwd: Path | None = None) -> set[str]:
    """The heavy top-level modules in sys.modules after running ``code`` in a new process."""
    probe = (
        "import sys\n"
        f"{code}\n"
        f"print('\\n' + __import__('json').dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=cwd, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_importing_the_cli_loads_no_heavy_library() -> None:
    assert loaded_after("import inventory.cli") == set()
    assert loaded_after("import inventory.__init__") == set()


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["sync", "--help"], ["db", "--help"]])
def test_help_and_version_load_no_heavy_library(args: list[str]) -> None:
    code = f"from inventory.cli import main\nassert main({args!r}) == 0"
    assert loaded_after(code) == set()


def test_a_report_loads_only_what_it_reads_with(cli: Harness) -> None:
    cli.zis.add_integration("acme", "billing", cli.token("acme", "billing"))
    config = cli.write_config(acme=["billing"])
    assert cli.run("db", "upgrade", "--config", str(config)).code == 0
    for command in ("connections", "changes", "snapshots", "check"):
        code = f"from inventory.cli import main\nmain([{command!r}, '--config', {str(config)!r}])"
        loaded = loaded_after(code, cwd=cli.tmp_path)
        assert loaded & {"alembic", "httpx", "apscheduler", "prometheus_client", "rich"} == set()
        assert "sqlalchemy" in loaded


def test_the_cli_knows_the_report_formats() -> None:
    assert cli.FORMATS == render.FORMATS


def test_the_head_revision_read_from_the_scripts_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from inventory.store import schema as store_schema

    script = ScriptDirectory.from_config(store.alembic_config())
    assert store.head_revision() == script.get_current_head()
    assert set(store_schema._script_revisions()) == {r.revision for r in script.walk_revisions()}
