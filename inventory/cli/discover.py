"""`discover`: each account's integrations from the ZIS registry (admin credentials),
which are configured, and a TOML snippet for the others."""

from __future__ import annotations

import click

from .common import accounts_option, cli, config_option, format_option, state


@cli.command("discover")
@config_option
@accounts_option
@format_option(
    ["table", "json"],
    help="table, with a TOML snippet for the integrations not configured, or json.",
)
def discover_command(config_path: str | None, accounts: tuple[str, ...], fmt: str) -> int:
    """List each account's integrations from the ZIS registry (admin credentials), say
    which are configured, and print a TOML snippet for the others."""
    from ..config import load_settings
    from ..discovery import discover

    settings = load_settings(config_path, resolve_tokens=False, resolve_admin=True)
    state.add_secrets(settings)
    out, code = discover(settings, accounts, fmt)
    click.echo(out)
    return code
