"""Pure: (stored state, fetched set) -> the frozen Diff of one snapshot, and the removal
guard. One diff for every kind of record (connections, OAuth clients): a record gives its
key, its (type, name) label for the events and its metadata, in its fields' order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from .fields import METADATA_FIELDS
from .records import Connection, OAuthClient, Value, format_timestamp
from .types import ChangeKind

Key = tuple[str, str]  # (type, name) of a connection, (oauth_client, uuid) of a client
Record = Connection | OAuthClient


class Stored(NamedTuple):
    """A row of ``connections`` (or ``oauth_clients``) as the diff needs it."""

    connection: Any  # a Record: a Connection, or an OAuthClient
    removed: bool


class Event(NamedTuple):
    """A row of ``connection_changes`` without its snapshot context."""

    change: ChangeKind
    type: str
    name: str
    field: str | None = None
    old_value: str | None = None
    new_value: str | None = None


@dataclass(frozen=True)
class Diff:
    """What one snapshot changes; nothing mutates it once made."""

    added: tuple[Any, ...] = ()  # Records, as every part: the new values
    removed: tuple[Any, ...] = ()  # the stored rows, as they were
    modified: tuple[Any, ...] = ()  # the new values
    restored: tuple[Any, ...] = ()  # the new values
    # Every event in the order it is stored: restored and modified ones in fetch order,
    # then the removed ones in key order, then the added ones in key order.
    events: tuple[Event, ...] = ()
    present_before: int = 0

    @property
    def empty(self) -> bool:
        return not self.events

    def keys(self) -> frozenset[Key]:
        """The keys of every record this diff adds, removes, modifies or restores."""
        return frozenset(
            c.key for part in (self.added, self.removed, self.modified, self.restored) for c in part
        )

    def counts(self) -> dict[ChangeKind, int]:
        return {
            ChangeKind.ADDED: len(self.added),
            ChangeKind.REMOVED: len(self.removed),
            ChangeKind.MODIFIED: len(self.modified),
            ChangeKind.RESTORED: len(self.restored),
        }


def diff(
    stored: Mapping[Key, Stored],
    fetched: Iterable[Record],
    fields: Sequence[str] = METADATA_FIELDS,
) -> Diff:
    """Compare a complete fetched set with the stored rows of the same integration;
    ``fields`` names the records' metadata (fields.METADATA_FIELDS for connections,
    fields.CLIENT_METADATA_FIELDS for OAuth clients).

    A restored record yields one ``restored`` event plus one ``modified`` event per
    field that differs from its last known values; it counts as restored only.
    """
    added: list[Record] = []
    modified: list[Record] = []
    restored: list[Record] = []
    events: list[Event] = []
    unseen = set(stored)  # the stored keys no fetched connection has matched yet
    for new in fetched:
        old = stored.get(new.key)
        if old is None:
            added.append(new)
            continue
        unseen.discard(new.key)
        if old.removed:
            restored.append(new)
            events.append(Event(ChangeKind.RESTORED, *new.label))
            events.extend(_field_events(old.connection, new, fields))
        elif old.connection != new:  # the same key: any difference is in the metadata
            modified.append(new)
            events.extend(_field_events(old.connection, new, fields))
    removed: list[Record] = [
        stored[key].connection for key in sorted(unseen) if not stored[key].removed
    ]
    events.extend(Event(ChangeKind.REMOVED, *c.label) for c in removed)
    events.extend(Event(ChangeKind.ADDED, *c.label) for c in sorted(added, key=_key))
    return Diff(
        added=tuple(added),
        removed=tuple(removed),
        modified=tuple(modified),
        restored=tuple(restored),
        events=tuple(events),
        present_before=sum(1 for s in stored.values() if not s.removed),
    )


def _key(record: Record) -> Key:
    return record.key


def _field_events(old: Record, new: Record, fields: Sequence[str]) -> list[Event]:
    return [
        Event(ChangeKind.MODIFIED, *new.label, name, as_text(before), as_text(after))
        for name, before, after in zip(fields, old.metadata(), new.metadata(), strict=True)
        if before != after
    ]


def as_text(value: Value) -> str | None:
    if isinstance(value, datetime):
        return format_timestamp(value)
    return value


def removal_hold_reason(
    result: Diff, *, max_ratio: float, min_count: int, what: str = "connections"
) -> str | None:
    """Why this diff must be held back by the mass-removal guard, or None to apply it."""
    removing = len(result.removed)
    present = result.present_before
    if not present or removing < max(min_count, 1) or removing <= max_ratio * present:
        return None
    return (
        f"would remove {removing} of {present} present {what} "
        f"({removing / present:.0%} > sync.max_removal_ratio {max_ratio:.0%}); "
        "nothing applied; re-run sync with --accept-removals to apply"
    )
