"""`demo`: a fake ZIS account on loopback, two syncs into a SQLite file, and what
changed between them."""

from __future__ import annotations

import click

from .common import cli


@cli.command()
@click.option(
    "--database",
    "database_path",
    default="demo.db",
    show_default=True,
    metavar="PATH",
    help="SQLite file the demo writes (replaced if it is a previous demo's).",
)
def demo(database_path: str) -> int:
    """Run the demo: a fake ZIS account on loopback, two syncs, and what changed."""
    from ..demo import run_demo

    return run_demo(database_path, echo=click.echo)
