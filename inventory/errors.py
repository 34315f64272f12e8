"""The exception tree, grouped by what the caller does with each error.

    InventoryError
    ├── ConfigError          bad configuration or CLI usage: exit 2 before any work
    ├── DatabaseError        database unreachable, locked or not at the schema head: stop, exit 1
    ├── PackError            the evidence pack's folder cannot be used (a file, not empty):
    │                        the CLI reports it as a usage error, exit 2; nothing is written
    ├── RegistryError        one account's registry could not be read: a warning and a
    │                        failed listing, never a failed snapshot
    └── SnapshotError        this (account, integration) snapshot fails; the others go on
        ├── ApiError         an HTTP status that is final (400/401/403/404) or retries ran out
        │   └── NoClientsApi the OAuth clients endpoint answers 404: the account has no
        │                    OAuth clients API; the connections' snapshot stays complete
        ├── ResponseError    the body is not what §2 of the spec describes
        ├── RecordError      one item is malformed (names the page and the field)
        ├── PaginationError  a cursor seen twice, or more pages than the cap
        ├── TokenError       the token file cannot be read at the start of this run
        └── SnapshotWriteFailed  the database refused the snapshot's transaction: nothing
                             of it was written

    Interrupted              the run was asked to stop (signal); nothing of that snapshot is
                             written

    RetryableError           internal to zis.py: 429, 5xx or a transport error, retried by
                             RetryPolicy and turned into ApiError when retries run out
    DeadlinePassed           internal to zis.py: a request passed sync.timeout_seconds;
                             turned into a RetryableError

Messages carry names, statuses and short excerpts only: never a header, a token,
a secret field or a whole response body.
"""

from __future__ import annotations


class InventoryError(Exception):
    """Base of every error the tool raises on purpose."""


class ConfigError(InventoryError):
    """The configuration or the command line is wrong; nothing was done."""


class DatabaseError(InventoryError):
    """The database cannot be used for this run."""


class PackError(InventoryError):
    """The output folder of the evidence pack cannot be used (exists and is not empty, is a
    file, ...)."""


class SnapshotError(InventoryError):
    """One snapshot fails; the run goes on with the other integrations."""


class ApiError(SnapshotError):
    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NoClientsApi(ApiError):
    """The OAuth clients endpoint itself is not there (404): the sync reports it once per
    run and keeps the connections' snapshot."""


class ResponseError(SnapshotError):
    pass


class RecordError(SnapshotError):
    pass


class PaginationError(SnapshotError):
    pass


class TokenError(SnapshotError):
    """A token file that start-up could read cannot be read now (missing, empty, ...)."""


class RegistryError(InventoryError):
    """The registry of one account could not be read; the message names the account."""


class SnapshotWriteFailed(SnapshotError):
    """The database refused this snapshot's transaction; nothing of it was written."""


class Interrupted(InventoryError):
    """The run was asked to stop; this snapshot was not written."""


class RetryableError(InventoryError):
    """A request may succeed if tried again, after ``retry_after`` seconds if the server said."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, rate_limited: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class DeadlinePassed(Exception):
    """The request passed sync.timeout_seconds; zis.py turns it into a RetryableError."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no complete response within sync.timeout_seconds ({seconds:g}s)")
