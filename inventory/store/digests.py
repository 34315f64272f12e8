"""The one shortcut of the diff's read (spec §10): reading only the stored rows that may
differ from a fetched set, instead of every row of the integration.

``row_digests`` keeps, for each integration, the key and ``records.row_hashes`` hash of
every present row as its last applied snapshot left them. A snapshot that compares rows
while no full compare is due reads the rows of the fetched keys whose hash differs or that
the digests do not have (new, or restored), and of the keys the digests have that it did
not fetch (removed), and diffs those: the same Diff the plain path (every row, ``diff``)
gives, as long as nothing but a sync changed ``connections``. Rows edited by hand are
corrected by the next full compare (``sync.full_compare_interval``, ``--compare-all``),
which takes the plain path and writes the digests again: the bound of the no-change
shortcut too.

The digests are used only when they describe the last applied snapshot, their format is
this one, they decode, they count as many rows as are present, and every row of theirs
read is present; else, or with ``ENABLED = False`` (the tests' oracle), or when more than
``MOST_READ`` of the rows would be read, every row is compared.
"""

from __future__ import annotations

import logging
import operator
import struct
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, cast

from sqlalchemy import Connection, Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .. import models as m
from ..batches import batched
from ..diff import Diff, Key, Stored, diff
from ..records import Connection as Record
from ..records import row_hashes

log = logging.getLogger(__name__)

ENABLED = True  # False: every compare reads every row (the tests' oracle)
FORMAT = 1  # the layout of entry_keys and entry_hashes; raise it when that changes
HASH_SIZE = 16  # bytes of one records.row_hashes hash
# Above this share of the rows to read, one read of every row is no slower than reading
# them by key (docs/decisions.md).
MOST_READ = 0.2
BATCH = 500  # names per statement when reading by key

ROW_DIGESTS = cast(Table, m.RowDigest.__table__)
CONNECTIONS = cast(Table, m.Connection.__table__)

Load = Callable[..., dict[Key, Stored]]
_key = operator.itemgetter(
    0, 1
)  # a record's (type, name), as Connection.key  # IntegrationTransaction.load_state(*where)


class RowDigests:
    """One integration's row digests, within its snapshot's transaction."""

    def __init__(self, conn: Connection, account: str, integration: str) -> None:
        self.conn = conn
        self.account = account
        self.integration = integration
        self._hashed: tuple[Sequence[Record], list[bytes]] | None = None
        self._mended = False  # the digests disagreed with a row read: write them again

    def changes(
        self,
        fetched: Sequence[Record],
        last_applied: int | None,
        present: Callable[[], int],
        load: Load,
    ) -> Diff | None:
        """The diff of ``fetched`` from the rows the digests do not vouch for, or None:
        compare every row. ``present`` counts the present rows; ``load`` reads the rows
        that match its WHERE clauses."""
        if not ENABLED or last_applied is None:
            return None
        stored = self._read(last_applied)
        if stored is None or present() != len(stored):
            return None  # stale, unreadable, or rows inserted or deleted by hand
        hashes = self.hashes(fetched)
        keys = list(map(_key, fetched))
        changed = [c for c, k, h in zip(fetched, keys, hashes, strict=True) if stored.get(k) != h]
        fetched_keys = set(keys)
        gone = [key for key in stored if key not in fetched_keys]
        if len(changed) + len(gone) > MOST_READ * max(len(stored), len(fetched)):
            return None
        state = self._load(load, [*(c.key for c in changed), *gone])
        # Every row the digests have must be present: else they are not what they say.
        for key in [*(c.key for c in changed if c.key in stored), *gone]:
            row = state.get(key)
            if row is None or row.removed:
                return None
        result = diff(state, changed)
        self._mended = result.empty and bool(state)
        return replace(result, present_before=len(stored))

    def applied(
        self,
        snapshot_id: int,
        previous: int | None,
        fetched: Sequence[Record],
        rewrite: bool,
    ) -> None:
        """After snapshot ``snapshot_id`` applied the fetched set: its digests written
        (``rewrite``: it changed rows or compared every row), else the digests of
        ``previous`` (the last applied snapshot before it) moved on to it, as its rows are
        theirs."""
        if rewrite or self._mended:
            self._write(snapshot_id, fetched)
        elif previous is not None:
            d = ROW_DIGESTS.c
            self.conn.execute(
                ROW_DIGESTS.update()
                .where(
                    d.account == self.account,
                    d.integration == self.integration,
                    d.snapshot_id == previous,
                    d.format == FORMAT,
                )
                .values(snapshot_id=snapshot_id)
            )

    def hashes(self, fetched: Sequence[Record]) -> list[bytes]:
        """``row_hashes`` of a fetched set, computed once for the transaction."""
        if self._hashed is None or self._hashed[0] is not fetched:
            self._hashed = (fetched, row_hashes(fetched))
        return self._hashed[1]

    def _read(self, last_applied: int) -> dict[Key, bytes] | None:
        d = ROW_DIGESTS.c
        row = self.conn.execute(
            select(d.format, d.snapshot_id, d.entries, d.entry_keys, d.entry_hashes).where(
                d.account == self.account, d.integration == self.integration
            )
        ).one_or_none()
        if row is None or row.snapshot_id != last_applied or row.format != FORMAT:
            return None
        stored = decode(row.entries, row.entry_keys, row.entry_hashes)
        if stored is None:
            log.warning(
                "%s/%s: its row_digests row cannot be read (changed outside zis-inventory?); "
                "every row compared, and the row written again",
                self.account,
                self.integration,
            )
        return stored

    def _load(self, load: Load, keys: list[Key]) -> dict[Key, Stored]:
        names: dict[str, list[str]] = {}
        for type_name, name in keys:
            names.setdefault(type_name, []).append(name)
        c = CONNECTIONS.c
        state: dict[Key, Stored] = {}
        for type_name, of_type in names.items():
            for batch in batched(of_type, BATCH):
                state |= load(c.type == type_name, c.name.in_(batch))
        return state

    def _write(self, snapshot_id: int, fetched: Sequence[Record]) -> None:
        encoded = encode(list(map(_key, fetched)), self.hashes(fetched))
        if encoded is None:
            return  # left as it is: it describes an older snapshot, so it is not used
        keys, hashes = encoded
        values: dict[str, Any] = {
            "format": FORMAT,
            "snapshot_id": snapshot_id,
            "entries": len(fetched),
            "entry_keys": keys,
            "entry_hashes": hashes,
        }
        dialect_insert = pg_insert if self.conn.dialect.name == "postgresql" else sqlite_insert
        statement = dialect_insert(ROW_DIGESTS).values(
            account=self.account, integration=self.integration, **values
        )
        self.conn.execute(
            statement.on_conflict_do_update(index_elements=["account", "integration"], set_=values)
        )


def encode(keys: Sequence[Key], hashes: Sequence[bytes]) -> tuple[bytes, bytes] | None:
    """The two columns of ``keys`` and their hashes, or None when a key cannot be written
    so (a NUL or an unpaired surrogate, which no parsed key holds)."""
    text = "".join(f"{type_name}\x00{name}\x00" for type_name, name in keys)
    try:
        encoded = text.encode()
    except UnicodeEncodeError:
        return None
    if encoded.count(b"\x00") != 2 * len(keys):
        return None
    return encoded, b"".join(hashes)


def decode(entries: Any, keys: Any, hashes: Any) -> dict[Key, bytes] | None:
    """Each key and its hash, or None when the columns do not hold ``entries`` distinct
    keys and as many hashes."""
    if not isinstance(entries, int) or not isinstance(keys, bytes | memoryview):
        return None
    if not isinstance(hashes, bytes | memoryview):
        return None
    try:
        parts = bytes(keys).decode().split("\x00")
    except UnicodeDecodeError:
        return None
    hashes = bytes(hashes)
    if len(parts) != 2 * entries + 1 or parts[-1] or len(hashes) != HASH_SIZE * entries:
        return None
    keys_of = zip(parts[0::2], parts[1::2], strict=False)  # the last part is ""
    hashes_of = (h for (h,) in struct.iter_unpack(f"{HASH_SIZE}s", hashes))
    stored = dict(zip(keys_of, hashes_of, strict=False))
    return stored if len(stored) == entries else None
