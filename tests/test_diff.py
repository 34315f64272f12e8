"""diff.py: added / removed / modified (per field, NULL-safe) / restored, and the guard."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from inventory.diff import Diff, Event, Stored, diff, removal_hold_reason
from inventory.records import Connection

T1 = datetime(2026, 1, 1, tzinfo=UTC)
T2 = datetime(2026, 6, 1, 12, 30, tzinfo=UTC)


def conn(name: str, type_: str = "api_key", **fields: object) -> Connection:
    return Connection(type_, name, **fields)  # type: ignore[arg-type]


def state(*items: tuple[Connection, bool]) -> dict[tuple[str, str], Stored]:
    return {c.key: Stored(c, removed) for c, removed in items}


def test_first_snapshot_is_all_added() -> None:
    fetched = [conn("a"), conn("b", "oauth")]
    result = diff({}, fetched)
    assert list(result.added) == fetched
    assert list(result.events) == [Event("added", "api_key", "a"), Event("added", "oauth", "b")]
    assert result.counts() == {"added": 2, "removed": 0, "modified": 0, "restored": 0}


def test_unchanged_yields_nothing() -> None:
    a = conn("a", allowed_domain="x.com", token_expiry=T1)
    result = diff(state((a, False)), [conn("a", allowed_domain="x.com", token_expiry=T1)])
    assert result.empty and result.counts() == {
        "added": 0,
        "removed": 0,
        "modified": 0,
        "restored": 0,
    }


def test_modified_is_one_event_per_field_null_safe() -> None:
    old = conn("a", "oauth", allowed_domain="*.x.com", token_expiry=None, created_by="me")
    new = conn("a", "oauth", allowed_domain="api.x.com", token_expiry=T2, created_by=None)
    result = diff(state((old, False)), [new])
    assert list(result.modified) == [new]
    assert set(result.events) == {
        Event("modified", "oauth", "a", "allowed_domain", "*.x.com", "api.x.com"),
        Event("modified", "oauth", "a", "created_by", "me", None),
        Event("modified", "oauth", "a", "token_expiry", None, "2026-06-01T12:30:00Z"),
    }


def test_removed_and_already_removed() -> None:
    gone, long_gone = conn("gone"), conn("long_gone")
    result = diff(state((gone, False), (long_gone, True)), [])
    assert list(result.removed) == [gone]
    assert list(result.events) == [Event("removed", "api_key", "gone")]
    assert result.present_before == 1


def test_restored_with_changed_fields() -> None:
    old = conn("back", allowed_domain="a.com")
    new = conn("back", allowed_domain="b.com")
    result = diff(state((old, True)), [new])
    assert list(result.restored) == [new] and result.modified == ()
    assert list(result.events) == [
        Event("restored", "api_key", "back"),
        Event("modified", "api_key", "back", "allowed_domain", "a.com", "b.com"),
    ]
    assert result.counts() == {"added": 0, "removed": 0, "modified": 0, "restored": 1}


def test_same_name_different_type_are_different_connections() -> None:
    result = diff(state((conn("x", "api_key"), False)), [conn("x", "bearer_token")])
    assert set(result.events) == {
        Event("added", "bearer_token", "x"),
        Event("removed", "api_key", "x"),
    }


def test_guard_holds_mass_removal() -> None:
    present = [conn(f"c{i}") for i in range(10)]
    stored = state(*((c, False) for c in present))
    six_gone = diff(stored, present[6:])
    assert removal_hold_reason(six_gone, max_ratio=0.5, min_count=5) == (
        "would remove 6 of 10 present connections (60% > sync.max_removal_ratio 50%); "
        "nothing applied; re-run sync with --accept-removals to apply"
    )
    five_gone = diff(stored, present[5:])
    assert removal_hold_reason(five_gone, max_ratio=0.5, min_count=5) is None  # not more than half


def test_guard_ignores_small_integrations() -> None:
    present = [conn(f"c{i}") for i in range(4)]
    all_gone = diff(state(*((c, False) for c in present)), [])
    assert removal_hold_reason(all_gone, max_ratio=0.5, min_count=5) is None
    assert removal_hold_reason(all_gone, max_ratio=0.5, min_count=4) is not None


def test_events_come_in_the_order_they_are_stored() -> None:
    """Restored and modified as the pages list them; then removed and added, by key."""
    stored = state(
        (conn("z_gone"), False),
        (conn("a_gone", "oauth"), False),
        (conn("m_back", allowed_domain="old.com"), True),
        (conn("b_kept", allowed_domain="old.com"), False),
    )
    fetched = [
        conn("y_new"),
        conn("m_back", allowed_domain="new.com"),
        conn("c_new", "oauth"),
        conn("b_kept", allowed_domain="new.com"),
    ]
    assert list(diff(stored, fetched).events) == [
        Event("restored", "api_key", "m_back"),
        Event("modified", "api_key", "m_back", "allowed_domain", "old.com", "new.com"),
        Event("modified", "api_key", "b_kept", "allowed_domain", "old.com", "new.com"),
        Event("removed", "api_key", "z_gone"),
        Event("removed", "oauth", "a_gone"),
        Event("added", "api_key", "y_new"),
        Event("added", "oauth", "c_new"),
    ]


def test_a_diff_is_frozen() -> None:
    result = diff({}, [conn("a")])
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.added = ()  # type: ignore[misc]
    assert isinstance(result.added, tuple) and isinstance(result.events, tuple)
    assert Diff(present_before=3).empty
