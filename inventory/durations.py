"""Durations as the configuration and the command line write them (``30d``, ``12h``,
``90m``, ``45s``), parsed by one grammar and written back by one formatter."""

from __future__ import annotations

import re
from datetime import timedelta

_PATTERN = re.compile(r"^(\d{1,6})\s*([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def is_duration(text: str) -> bool:
    return _PATTERN.match(text.strip()) is not None


def parse_duration(text: str, examples: str = "30d, 12h or 90m", zero: bool = False) -> timedelta:
    """``<n>s|m|h|d`` -> timedelta; ``0`` too where ``zero`` allows it. ValueError names
    the text and ``examples`` of what is accepted."""
    stripped = text.strip()
    if zero and stripped == "0":
        return timedelta(0)
    match = _PATTERN.match(stripped)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as {examples}")
    return timedelta(seconds=int(match[1]) * _SECONDS[match[2]])


def span(delta: timedelta) -> str:
    """A duration in the largest unit that writes it whole: 86400 s -> ``1d``."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
