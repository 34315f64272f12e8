"""The inline SVG bar charts of report.html: tokens expiring per week and changes per week
by kind, every text in them escaped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from markupsafe import escape

from .summary import KINDS, Expiry

COLORS = {
    "added": "#2e7d32",
    "removed": "#c62828",
    "modified": "#ef8f00",
    "restored": "#1565c0",
    "expiring": "#5c6bc0",
}


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label)}" class="chart">' + "".join(body) + "</svg>"
    )


def _bars(
    labels: Sequence[str],
    stacks: Sequence[Sequence[tuple[str, int]]],
    *,
    label: str,
    every: int,
) -> str:
    """Stacked vertical bars: one per label; each stack is (series, value) bottom-up."""
    width, height, left, bottom, top = 760, 230, 40, 40, 18
    plot_w, plot_h = width - left - 10, height - bottom - top
    ticks = _ticks(max([sum(v for _, v in stack) for stack in stacks] + [1]))
    peak = ticks[-1]
    step = plot_w / max(len(labels), 1)
    bar = max(1.0, min(22.0, step * 0.8))
    body = []
    for tick in ticks:
        y = top + plot_h - plot_h * tick / peak
        body.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    for i, (name, stack) in enumerate(zip(labels, stacks, strict=True)):
        x = left + i * step + (step - bar) / 2
        y = top + plot_h
        for series, value in stack:
            if not value:
                continue
            h = plot_h * value / peak
            y -= h
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{COLORS[series]}"><title>{escape(name)}: {value} {series}</title></rect>'
            )
        total = sum(v for _, v in stack)
        if total and bar >= 10:
            body.append(
                f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                f'class="value">{total}</text>'
            )
        if i % every == 0:
            body.append(
                f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 16}" '
                f'text-anchor="middle">{escape(name)}</text>'
            )
    body.append(
        f'<line x1="{left}" x2="{width - 10}" y1="{top + plot_h}" y2="{top + plot_h}" '
        'class="axis"/>'
    )
    return _svg(width, height, label, body)


def _ticks(peak: int) -> list[int]:
    """Grid values 0, step, 2*step... up to the first at or above ``peak``, the step 1, 2
    or 5 times a power of ten."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            step = factor * magnitude
            if peak <= 5 * step:
                return list(range(0, -(-peak // step) * step + 1, step))
        magnitude *= 10


def expiry_chart(expiry: Expiry) -> str:
    labels = [start.strftime("%m-%d") for start, _ in expiry.weeks]
    stacks = [[("expiring", n)] for _, n in expiry.weeks]
    return _bars(
        labels,
        stacks,
        label=f"OAuth tokens expiring per week over the next 180 days: {expiry.within}",
        every=2,
    )


def changes_chart(weeks: Sequence[tuple[datetime, Counter[str]]]) -> str:
    labels = [start.strftime("%Y-%m-%d") for start, _ in weeks]
    stacks = [[(kind, counts[kind]) for kind in KINDS] for _, counts in weeks]
    every = max(1, -(-len(weeks) // 8))
    total = sum(sum(c.values()) for _, c in weeks)
    return _bars(labels, stacks, label=f"Changes per week by kind: {total}", every=every)
