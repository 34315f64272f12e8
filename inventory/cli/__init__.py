"""The command line: the group (``common``), one module per command group, and ``main``,
which maps errors to exit codes.

Exit status: 0 success; 1 a snapshot failed or was held, or the database is unusable;
2 a configuration or usage error (nothing was done). Importing a command module registers
its commands; none imports a heavy library before its command runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from .. import logs
from ..errors import ConfigError, DatabaseError, InventoryError
from ..render import FORMATS
from . import db, demo, discover, doctor, evidence, findings, notify, reports, sync
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, cli, error, state

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "FORMATS",
    "cli",
    "db",
    "demo",
    "discover",
    "doctor",
    "evidence",
    "findings",
    "main",
    "notify",
    "reports",
    "sync",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status (never raises for expected errors)."""
    try:
        rv = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="python -m inventory",
            standalone_mode=False,
        )
        return rv if isinstance(rv, int) else EXIT_OK
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        exc.show()
        return EXIT_USAGE
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):  # click turns Ctrl-C (and our SIGTERM) into Abort
        error("interrupted; the run is marked failed and nothing partial was written")
        return EXIT_FAILED
    except ConfigError as exc:
        error(f"configuration error: {exc}")
        return EXIT_USAGE
    except DatabaseError as exc:
        error(f"database error: {exc}")
        return EXIT_FAILED
    except InventoryError as exc:
        error(f"error: {exc}")
        return EXIT_FAILED
    finally:
        if state.handler is not None:
            logs.teardown(state.handler)
            state.handler = state.redactor = None
