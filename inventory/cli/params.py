"""The command line's value types: a duration, a point in time, a time back from now or
from --as-of, and a comma-separated choice; each fails naming what it expected."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from ..durations import is_duration, parse_duration
from . import common

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Duration(click.ParamType[Any]):
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Instant(click.ParamType[Any]):
    """RFC 3339 (2026-06-01T00:00:00Z) or a date (2026-06-01, midnight UTC)."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        from ..records import parse_timestamp

        text = str(value).strip()
        try:
            if _DATE_RE.match(text):
                return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
            return parse_timestamp(text)
        except ValueError:
            self.fail(
                f"{value!r} is not a date (2026-06-01) or an RFC 3339 time (2026-06-01T12:00:00Z)",
                param,
                ctx,
            )


class Since(click.ParamType[Any]):
    """A duration back from now (7d) or a point in time."""

    name = "since"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        if is_duration(str(value)):
            return common.now() - Duration().convert(value, param, ctx)
        try:
            return Instant().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(
                f"{value!r} is not a duration (7d, 12h, 90m), a date or an RFC 3339 time",
                param,
                ctx,
            )


class BackFromAsOf(click.ParamType[Any]):
    """A duration back from --as-of (90d) or a point in time; resolved by the command."""

    name = "since"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta | datetime:
        if isinstance(value, timedelta | datetime):
            return value
        if is_duration(str(value)):
            return Duration().convert(value, param, ctx)
        try:
            return Instant().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(
                f"{value!r} is not a duration (90d, 12h, 90m), a date or an RFC 3339 time",
                param,
                ctx,
            )


def csv_choice(
    allowed: Sequence[str],
) -> Callable[[click.Context, click.Parameter, str | None], tuple[str, ...]]:
    """An option callback: comma-separated values, each one of ``allowed``."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
        if not value:
            return ()
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        wrong = [v for v in items if v not in allowed]
        if wrong:
            raise click.BadParameter(
                f"{', '.join(wrong)} (choose from {', '.join(allowed)})", ctx, param
            )
        return items

    return convert
