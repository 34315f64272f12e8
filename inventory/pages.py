"""The pages of the ZIS endpoints, pure: a page as fetched, and the cursor bookkeeping that
asks for the next one and ends a listing (has_more, links.next, loops, the page cap).
``zis`` does the requests."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .errors import PaginationError, ResponseError

_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")  # unpaired: JSON can carry "\ud800"


@dataclass(frozen=True)
class Page:
    number: int
    body: dict[str, Any]


@dataclass(frozen=True)
class ClientsPage:
    number: int
    body: dict[str, Any] | list[Any]  # the clients endpoint may answer a bare array


@dataclass
class Paginator:
    """Cursor bookkeeping: stop on has_more == false, refuse loops and runaway page counts."""

    max_pages: int
    where: str = ""
    page: int = 0
    cursor: str | None = None
    done: bool = False
    _seen: set[str] = field(default_factory=set)

    def advance(self, body: dict[str, Any]) -> None:
        self.page += 1
        meta = body.get("meta")
        if not isinstance(meta, dict):
            raise ResponseError(f"{self.where}: page {self.page}: response has no 'meta' object")
        has_more = meta.get("has_more")
        if not isinstance(has_more, bool):
            raise ResponseError(
                f"{self.where}: page {self.page}: meta.has_more must be true or false"
            )
        if not has_more:
            self.done = True
            return
        after = meta.get("after")
        if not isinstance(after, str) or not after:
            raise ResponseError(
                f"{self.where}: page {self.page}: meta.has_more is true but meta.after "
                "is missing or not a string"
            )
        self.follow(after)

    def follow(self, after: str) -> None:
        """Take ``after`` as the next page's cursor, unless it was seen before or the
        page cap is reached."""
        if _SURROGATE_RE.search(after):
            raise ResponseError(
                f"{self.where}: page {self.page}: meta.after holds an unpaired surrogate, "
                "which no URL can carry"
            )
        if after in self._seen:
            raise PaginationError(
                f"{self.where}: page {self.page}: pagination loop: cursor seen twice"
            )
        if self.page >= self.max_pages:
            raise PaginationError(
                f"{self.where}: more than sync.max_pages ({self.max_pages}) pages; "
                "raise the cap if this integration really is that large"
            )
        self._seen.add(after)
        self.cursor = after


@dataclass
class ClientsPaginator(Paginator):
    """The OAuth clients endpoint documents no pagination: a bare array, or an object
    without ``meta.has_more`` or ``links.next``, is the last page. A page that has them is
    followed as the connections' pages are (same loop detection and page cap); a
    ``links.next`` is taken only on this endpoint's own path (the token goes nowhere else),
    as the query of the next request."""

    path: str = ""  # the endpoint's full path, which a links.next must have
    netloc: str = ""  # the base URL's host[:port], which a links.next may name
    params: dict[str, str] = field(default_factory=dict)  # of the next request

    def advance(self, body: Any) -> None:
        meta = body.get("meta") if isinstance(body, dict) else None
        links = body.get("links") if isinstance(body, dict) else None
        link = links.get("next") if isinstance(links, dict) else None
        if isinstance(meta, dict) and "has_more" in meta:
            super().advance(body)
            if not self.done:
                self.params = {"page[after]": self.cursor or ""}
            return
        self.page += 1
        if link is None:
            self.done = True
            return
        if not isinstance(link, str):
            raise ResponseError(f"{self.where}: page {self.page}: links.next must be a string")
        parts = urlsplit(link)
        if parts.path != self.path or (parts.netloc and parts.netloc != self.netloc):
            raise ResponseError(
                f"{self.where}: page {self.page}: links.next points outside this endpoint "
                "(not followed: the token is never sent to another location)"
            )
        self.follow(parts.query or "?")
        self.params = dict(parse_qsl(parts.query, keep_blank_values=True))
