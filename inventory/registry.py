"""The ZIS registry (§14): an account's integrations, listed with the admin credential and
allow-listed to ``name`` and ``description`` at parsing; the OAuth client's secret ends here.

Requests go through ZisClient.get_json (deadline, retries, 429 account pause, no
redirects, error messages without bodies); this module never touches the database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .errors import (
    PaginationError,
    RecordError,
    RegistryError,
    ResponseError,
    SnapshotError,
)
from .secret import Credential
from .zis import ZisClient

PATH = "/api/services/zis/registry/integrations"
MAX_NAME_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 4096
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_UNSTORABLE_RE = re.compile(r"[\x00\ud800-\udfff]")  # what no text column can hold
REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class RegisteredIntegration:
    name: str
    description: str | None


@dataclass(frozen=True)
class RegistryListing:
    """What one complete listing gave: the integrations by name, in registry order."""

    account: str
    integrations: tuple[RegisteredIntegration, ...]
    pages: int


@dataclass
class RegistryPaginator:
    """The next request of a listing. The documented responses carry no pagination; a
    response may carry ``meta.has_more`` with ``meta.after`` (ZIS cursors) or
    ``links.next`` (Support API cursors), or ``next_page`` (offset pages). A link is
    followed only on the account's own base URL and the registry's path, so the admin
    credential never goes elsewhere. A cursor or link seen twice is a loop."""

    base_url: str
    max_pages: int
    where: str
    page: int = 0
    params: dict[str, str] = field(default_factory=dict)
    done: bool = False
    _seen: set[tuple[tuple[str, str], ...]] = field(default_factory=set)

    def advance(self, body: Mapping[str, Any]) -> None:
        self.page += 1
        self._seen.add(tuple(sorted(self.params.items())))
        params = self._next(body)
        if params is None:
            self.done = True
            return
        key = tuple(sorted(params.items()))
        if key in self._seen:
            raise PaginationError(
                f"{self.where}: page {self.page}: pagination loop: next page seen twice"
            )
        if self.page >= self.max_pages:
            raise PaginationError(
                f"{self.where}: more than sync.max_pages ({self.max_pages}) pages of the registry"
            )
        self._seen.add(key)
        self.params = params

    def _next(self, body: Mapping[str, Any]) -> dict[str, str] | None:
        meta = body.get("meta")
        links = body.get("links")
        link = links.get("next") if isinstance(links, Mapping) else None
        if isinstance(meta, Mapping) and "has_more" in meta:
            has_more = meta["has_more"]
            if not isinstance(has_more, bool):
                raise self._error("meta.has_more must be true or false")
            if not has_more:
                return None  # cursors may stay set on the last page
            if isinstance(link, str) and link:
                return self._link(link, "links.next")
            after = meta.get("after", meta.get("after_cursor"))
            if not isinstance(after, str) or not after or _CONTROL_RE.search(after):
                raise self._error(
                    "meta.has_more is true but neither links.next nor meta.after is a usable string"
                )
            return {"page[after]": after}
        if "next_page" in body:
            return self._link_or_end(body["next_page"], "next_page")
        if isinstance(links, Mapping) and "next" in links:
            return self._link_or_end(link, "links.next")
        return None  # as documented: one response holds every integration

    def _link_or_end(self, value: Any, key: str) -> dict[str, str] | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self._error(f"{key} must be a URL or null")
        return self._link(value, key)

    def _link(self, url: str, key: str) -> dict[str, str]:
        """The query of a next-page link, which must point at this account's registry."""
        if _CONTROL_RE.search(url):
            raise self._error(f"{key} holds control characters")
        parts, base = urlsplit(url), urlsplit(self.base_url)
        if (parts.scheme or parts.netloc) and (parts.scheme, parts.netloc) != (
            base.scheme,
            base.netloc,
        ):
            raise self._error(
                f"{key} points to another host; not followed (the admin credential is sent "
                "only to the account's base_url)"
            )
        if parts.path != base.path.rstrip("/") + PATH:
            raise self._error(f"{key} leaves the registry's path; not followed")
        return dict(parse_qsl(parts.query, keep_blank_values=True))

    def _error(self, what: str) -> ResponseError:
        return ResponseError(f"{self.where}: page {self.page}: {what}")


def parse_integrations(
    body: Mapping[str, Any], *, where: str, page: int
) -> list[RegisteredIntegration]:
    """One page's integrations, allow-listed: ``name`` (required) and ``description``."""
    items = body.get("integrations")
    if not isinstance(items, list):
        raise ResponseError(f"{where}: page {page}: response has no 'integrations' array")
    return [
        parse_integration(item, f"{where}: page {page}: integrations[{i}]")
        for i, item in enumerate(items)
    ]


def parse_integration(item: Any, place: str) -> RegisteredIntegration:
    if not isinstance(item, Mapping):
        raise RecordError(f"{place}: item must be an object")
    name = item.get("name")
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_NAME_LENGTH
        or _CONTROL_RE.search(name)
    ):
        raise RecordError(f"{place}: field 'name' must be 1-{MAX_NAME_LENGTH} printable characters")
    description = item.get("description")
    if description is None or description == "":
        return RegisteredIntegration(name, None)
    if not isinstance(description, str):
        raise RecordError(f"{place} ({name}): field 'description' must be a string or null")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise RecordError(
            f"{place} ({name}): field 'description' is longer than "
            f"{MAX_DESCRIPTION_LENGTH} characters"
        )
    if _UNSTORABLE_RE.search(description):
        raise RecordError(
            f"{place} ({name}): field 'description' holds a NUL character or an unpaired "
            "surrogate, which cannot be stored as text"
        )
    return RegisteredIntegration(name, description)


def list_integrations(client: ZisClient, admin: Credential) -> RegistryListing:
    """Every page of the account's registry, read with the admin credential; raises
    RegistryError (secrets redacted) on any failure, and Interrupted when the client's
    stop is set."""
    where = f"{client.name}/registry"
    paginator = RegistryPaginator(client.base_url, client.settings.max_pages, where)
    found: dict[str, RegisteredIntegration] = {}
    try:
        while not paginator.done:
            number = paginator.page + 1
            body = client.get_json(PATH, paginator.params, admin, where, number)
            for integration in parse_integrations(body, where=where, page=number):
                if integration.name in found:
                    raise ResponseError(
                        f"{where}: page {number}: integration {integration.name!r} appears "
                        "twice (the registry changed while paging?)"
                    )
                found[integration.name] = integration
            paginator.advance(body)
    except SnapshotError as exc:
        raise RegistryError(redact(str(exc), admin)) from None
    return RegistryListing(client.name, tuple(found.values()), paginator.page)


def redact(text: str, admin: Credential) -> str:
    for secret in admin.secrets():
        if secret:
            text = text.replace(secret, REDACTED)
    return text
