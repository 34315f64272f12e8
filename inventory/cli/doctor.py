"""`doctor`: is everything in place for a sync? Configuration, tokens, database,
schema, one request per integration and, when asked, a test message per sink."""

from __future__ import annotations

import click

from .common import EXIT_FAILED, EXIT_OK, cli, config_option, format_option, state


@cli.command()
@config_option
@format_option()
@click.option(
    "--send-test",
    is_flag=True,
    help="Also send a test message to each [[notify]] sink and show its answer.",
)
def doctor(config_path: str | None, fmt: str, send_test: bool) -> int:
    """Check configuration, tokens, database, schema and one request per integration."""
    from ..config import load_settings
    from ..doctor import diagnose, doctor_output

    settings = load_settings(config_path)
    state.add_secrets(settings)
    probes = diagnose(settings, send_test=send_test)
    out, ok = doctor_output(probes, fmt)
    click.echo(out)
    return EXIT_OK if ok else EXIT_FAILED
