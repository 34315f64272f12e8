"""What `check` and `findings` fail on: expiry and staleness alerts, and unsuppressed
findings at or above fail_on; each verdict is a report with its notes and a pass/fail."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Engine

from ..config import Settings, select_targets
from ..render import Report
from .findings import failing, findings_report
from .queries import check


def check_verdict(
    engine: Engine,
    settings: Settings,
    *,
    accounts: Sequence[str],
    integrations: Sequence[str],
    expiring_within: timedelta,
    max_age: timedelta,
    fail_on: str | None,
    now: datetime,
) -> tuple[Report, bool]:
    """The alerts and whether ``check`` fails (``fail_on``: None is findings.fail_on)."""
    targets = [(a.subdomain, i.name) for a, i in select_targets(settings, accounts, integrations)]
    found, expiry_failing = check(
        engine, targets, expiring_within=expiring_within, max_age=max_age, now=now
    )
    level = fail_on or settings.findings.fail_on
    listed = findings_report(
        engine,
        settings,
        as_of=None,
        accounts=accounts,
        integrations=integrations,
        include_suppressed=False,
        now=now,
    )
    bad = failing(listed.rows, level)
    if bad:
        found.notes.append(
            f"findings: FAILED: {len(bad)} unsuppressed at or above {level} "
            "(python -m inventory findings)"
        )
    return found, expiry_failing or bool(bad)


def findings_verdict(listed: Report, level: str) -> bool:
    """Whether ``findings`` fails at ``level``; the report's closing note says so."""
    bad = failing(listed.rows, level)
    if level == "none":
        listed.notes.append("findings: fail_on none: never fails")
    elif bad:
        listed.notes.append(f"findings: FAILED: {len(bad)} unsuppressed at or above {level}")
    else:
        listed.notes.append(f"findings: OK (none unsuppressed at or above {level})")
    return bool(bad)
