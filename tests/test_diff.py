"""diff.py: added / removed / modified (per field, NULL-safe) / restored, and the guard."""

from __future__ import annotations

from datetime import UTC, datetime

from inventory.diff import Event, Stored, diff, narrow, removal_hold_reason
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
    assert result.added == fetched
    assert result.events == [Event("added", "api_key", "a"), Event("added", "oauth", "b")]
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
    assert result.modified == [new]
    assert set(result.events) == {
        Event("modified", "oauth", "a", "allowed_domain", "*.x.com", "api.x.com"),
        Event("modified", "oauth", "a", "created_by", "me", None),
        Event("modified", "oauth", "a", "token_expiry", None, "2026-06-01T12:30:00Z"),
    }


def test_removed_and_already_removed() -> None:
    gone, long_gone = conn("gone"), conn("long_gone")
    result = diff(state((gone, False), (long_gone, True)), [])
    assert result.removed == [gone]
    assert result.events == [Event("removed", "api_key", "gone")]
    assert result.present_before == 1


def test_restored_with_changed_fields() -> None:
    old = conn("back", allowed_domain="a.com")
    new = conn("back", allowed_domain="b.com")
    result = diff(state((old, True)), [new])
    assert result.restored == [new] and result.modified == []
    assert result.events == [
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
    assert diff(stored, fetched).events == [
        Event("restored", "api_key", "m_back"),
        Event("modified", "api_key", "m_back", "allowed_domain", "old.com", "new.com"),
        Event("modified", "api_key", "b_kept", "allowed_domain", "old.com", "new.com"),
        Event("removed", "api_key", "z_gone"),
        Event("removed", "oauth", "a_gone"),
        Event("added", "api_key", "y_new"),
        Event("added", "oauth", "c_new"),
    ]


def names_of(stored: dict[tuple[str, str], Stored]) -> dict[str, dict[str, int]]:
    named: dict[str, dict[str, int]] = {}
    for (type_name, name), row in stored.items():
        named.setdefault(type_name, {})[name] = int(row.removed)
    return named


def by_type(fetched: list[Connection]) -> dict[str, dict[str, Connection]]:
    named: dict[str, dict[str, Connection]] = {}
    for c in fetched:
        named.setdefault(c.type, {})[c.name] = c
    return named


def test_a_diff_over_the_narrowed_rows_is_the_diff_over_all_rows() -> None:
    same = [conn(f"same{i}", allowed_domain="x.com") for i in range(4)]
    stored = state(
        *((c, False) for c in same),
        (conn("mod", allowed_domain="x.com"), False),
        (conn("back", "oauth", created_by="me"), True),
        (conn("gone", "basic_auth"), False),
        (conn("long_gone"), True),
    )
    changed = [
        conn("mod", allowed_domain="y.com"),
        conn("back", "oauth", created_by="you"),
        conn("new", "oauth"),
    ]
    fetched = [*same, *changed]
    narrowed = narrow(changed, len(same), names_of(stored), by_type(fetched))
    assert narrowed is not None
    needed, present = narrowed
    assert (needed, present) == (
        {("api_key", "mod"), ("oauth", "back"), ("basic_auth", "gone")},
        6,
    )
    partial = diff({k: stored[k] for k in needed}, changed)
    partial.present_before = present
    assert partial == diff(stored, fetched)
    assert partial.counts() == {"added": 1, "removed": 1, "modified": 1, "restored": 1}


def test_narrowing_refuses_rows_that_do_not_add_up() -> None:
    """A row of an unchanged connection deleted, or marked removed, outside a sync: the
    present rows are fewer than the connections said to equal them."""
    same = [conn(f"same{i}") for i in range(3)]
    fetched = [*same, conn("new")]
    whole = state(*((c, False) for c in same))
    assert narrow([conn("new")], 3, names_of(whole), by_type(fetched)) == (set(), 3)
    deleted = state(*((c, False) for c in same[1:]))
    marked = state((same[0], True), *((c, False) for c in same[1:]))
    # ...and one inserted beside a deletion, which the count alone would not see.
    swapped = state(*((c, False) for c in same[1:]), (conn("stranger"), False))
    for stored in (deleted, marked, swapped):
        assert narrow([conn("new")], 3, names_of(stored), by_type(fetched)) is None
