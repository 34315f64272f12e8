"""Pure: (stored state, fetched set) -> the changes of one snapshot, and the removal guard."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from .records import METADATA_FIELDS, Connection, Value, format_timestamp

Key = tuple[str, str]  # (type, name) within one (account, integration)


class Stored(NamedTuple):
    """A row of ``connections`` as the diff needs it."""

    connection: Connection
    removed: bool


class Event(NamedTuple):
    """A row of ``connection_changes`` without its snapshot context."""

    change: str  # added | removed | modified | restored
    type: str
    name: str
    field: str | None = None
    old_value: str | None = None
    new_value: str | None = None


@dataclass
class Diff:
    added: list[Connection] = field(default_factory=list)
    removed: list[Connection] = field(default_factory=list)
    modified: list[Connection] = field(default_factory=list)
    restored: list[Connection] = field(default_factory=list)
    # The restored and modified events in the order they were found, then the removed
    # ones in key order. The added ones follow from ``added`` (one each), so a large first
    # sync builds none.
    changes: list[Event] = field(default_factory=list)
    present_before: int = 0

    @property
    def empty(self) -> bool:
        return not (self.added or self.changes)

    @property
    def events(self) -> list[Event]:
        """Every event, in the order they are stored: the changes, then the added ones in
        key order."""
        added = sorted(c[:2] for c in self.added)
        return [*self.changes, *(Event("added", type_name, name) for type_name, name in added)]

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "removed": len(self.removed),
            "modified": len(self.modified),
            "restored": len(self.restored),
        }


def diff(stored: Mapping[Key, Stored], fetched: Iterable[Connection]) -> Diff:
    """Compare a complete fetched set with the stored rows of the same integration.

    A restored connection yields one ``restored`` event plus one ``modified`` event per
    field that differs from its last known values; it counts as restored only.
    """
    result = Diff(present_before=sum(1 for s in stored.values() if not s.removed))
    unseen = set(stored)  # the stored keys no fetched connection has matched yet
    for new in fetched:
        key = new[:2]  # (type, name), as Connection.key, without the property call
        old = stored.get(key)
        if old is None:
            result.added.append(new)
            continue
        unseen.discard(key)
        if old.removed:
            result.restored.append(new)
            result.changes.append(Event("restored", new.type, new.name))
            result.changes.extend(_field_events(old.connection, new))
            continue
        if old.connection != new:  # the same key: any difference is in the metadata
            result.modified.append(new)
            result.changes.extend(_field_events(old.connection, new))
    for key in sorted(unseen):  # removals in key order, whatever order the rows came in
        old = stored[key]
        if not old.removed:
            result.removed.append(old.connection)
            result.changes.append(Event("removed", key[0], key[1]))
    return result


def narrow(
    changed: Iterable[Connection],
    unchanged: int,
    stored: Mapping[str, Mapping[str, int]],
    fetched: Mapping[str, Mapping[str, object]],
) -> tuple[set[Key], int] | None:
    """What a diff over some of the stored rows needs, when all but ``changed`` of the
    fetched connections (``unchanged`` of them) are known to equal their rows if those are
    present: the keys of the rows to compare ``changed`` with (theirs, and those of the
    present rows no fetched connection has: removals), and how many rows are present.
    ``stored`` maps the type and name of every row to whether it is marked removed (1 or
    0); ``fetched`` maps each fetched type to a mapping whose keys are its names.

    ``diff(rows of those keys, changed)``, with ``present_before`` set to that count, is
    then ``diff(all rows, fetched)``: the connections left out would give no event, and
    every other row and connection is in it. None when the present rows do not add up
    (``unchanged`` + those of ``changed`` + removals): a row of an unchanged connection is
    missing or marked removed, which only a change made outside a sync does."""
    needed: set[Key] = set()
    matched = 0  # present rows of changed connections
    for new in changed:
        removed = stored.get(new[0], {}).get(new[1])
        if removed is not None:
            needed.add(new[:2])
            matched += not removed
    present = 0
    for type_name, named in stored.items():
        present += len(named) - sum(named.values())
        for name in named.keys() - fetched.get(type_name, {}).keys():
            if not named[name]:  # present, and fetched no more
                needed.add((type_name, name))
                matched += 1
    return (needed, present) if present == unchanged + matched else None


def _field_events(old: Connection, new: Connection) -> list[Event]:
    return [
        Event("modified", new.type, new.name, name, as_text(before), as_text(after))
        for name, before, after in zip(METADATA_FIELDS, old.metadata(), new.metadata(), strict=True)
        if before != after
    ]


def as_text(value: Value) -> str | None:
    if isinstance(value, datetime):
        return format_timestamp(value)
    return value


def removal_hold_reason(result: Diff, *, max_ratio: float, min_count: int) -> str | None:
    """Why this diff must be held back by the mass-removal guard, or None to apply it."""
    removing = len(result.removed)
    present = result.present_before
    if not present or removing < max(min_count, 1) or removing <= max_ratio * present:
        return None
    return (
        f"would remove {removing} of {present} present connections "
        f"({removing / present:.0%} > sync.max_removal_ratio {max_ratio:.0%}); "
        "nothing applied; re-run sync with --accept-removals to apply"
    )
