"""Docs that cannot rot: every command and option is in the README, every SQL block of the
README runs on SQLite and PostgreSQL and returns what it says, and config.example.toml is
valid and documents every key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
from pydantic import BaseModel

from inventory.cli import cli as root_command
from inventory.config import FileConfig, load_settings
from inventory.testing import sample_item

from .conftest import Harness, rows
from .test_sync import seed

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += commands(command, f"{path} ")
    return found


@pytest.mark.parametrize(
    ("path", "command"), commands(root_command), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_command_and_option_is_in_the_readme(path: str, command: click.Command) -> None:
    assert f"python -m inventory {path}" in README
    for param in command.params:
        for opt in param.opts:
            if opt.startswith("--"):
                assert f"`{opt}" in README, f"{path} {opt}"


def test_global_options_are_in_the_readme() -> None:
    for param in root_command.params:
        for opt in param.opts:
            if opt.startswith("--"):
                assert f"`{opt}" in README, opt


def readme_sql() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", README, re.S)


def test_readme_sql_runs_and_answers(cli: Harness) -> None:
    queries = readme_sql()
    assert len(queries) == 2
    seed(cli, {"acme": {"billing": 1, "crm": 2}})
    assert cli.run("sync").code == 0
    cli.zis.delete("acme", "crm", "oauth", "crm_oauth_0")
    cli.zis.put("acme", "billing", "api_key", sample_item("api_key", "new_key"))
    assert cli.run("sync").code == 0
    by_type = rows(cli.db_url, queries[0])
    assert [tuple(r) for r in by_type] == [
        ("acme", "billing", "api_key", 2),
        ("acme", "billing", "basic_auth", 1),
        ("acme", "billing", "bearer_token", 1),
        ("acme", "billing", "oauth", 1),
        ("acme", "crm", "api_key", 2),
        ("acme", "crm", "basic_auth", 2),
        ("acme", "crm", "bearer_token", 2),
        ("acme", "crm", "oauth", 1),
    ]
    last_run = rows(cli.db_url, queries[1])
    assert sorted(r[1:] for r in last_run) == [
        ("acme", "billing", "api_key", "new_key", "added", None, None, None),
        ("acme", "crm", "oauth", "crm_oauth_0", "removed", None, None, None),
    ]


def all_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, info in model.model_fields.items():
        annotation: Any = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= all_keys(annotation, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_config_example_is_valid_and_documents_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    example = ROOT / "config.example.toml"
    monkeypatch.setenv("ACME_ZIS_TOKEN", "t1")
    monkeypatch.setenv("ACME_CRM_ZIS_TOKEN", "t2")
    monkeypatch.delenv("INVENTORY_DATABASE_URL", raising=False)
    settings = load_settings(str(example))
    assert [(i.account, i.name) for a in settings.accounts for i in a.integrations] == [
        ("acme", "billing_sync"),
        ("acme", "crm_bridge"),
    ]
    text = example.read_text()
    data = tomllib.loads(text)
    for key in all_keys(FileConfig) - {"accounts"}:
        table, name = key.split(".")
        assert re.search(rf"^#?\s*{name}\s*=", text, re.M), key
        assert table in data
    for key in ("subdomain", "base_url", "token_env", "token_file", "integrations"):
        assert re.search(rf"^#?\s*{key}\s*=", text, re.M), key
