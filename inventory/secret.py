"""Secrets that do not show themselves: a ``Secret`` whose repr and str are masked, a
token that could not be read, a request's credential, and a URL shown without the path
its secret lives in."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import TokenError


class Secret:
    """A string that does not show itself: repr() and str() are masked."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class UnreadableToken(Secret):
    """The token of an integration whose token file could not be read at the start of a
    run: revealing it fails that integration's snapshot with the reason."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        super().__init__("")
        self.error = error

    def reveal(self) -> str:
        raise TokenError(self.error)


@dataclass(frozen=True)
class Credential:
    """A request's Authorization header: ``scheme value``; ``value`` is redacted from errors."""

    value: Secret
    scheme: str = "Bearer"
    hidden: tuple[Secret, ...] = ()  # also redacted: what ``value`` is made of

    def secrets(self) -> list[str]:
        """Every text to redact: the header value and what it is made of."""
        return [s.reveal() for s in (self.value, *self.hidden)]


def masked_url(url: str) -> str:
    """Scheme and host only: the path of a Slack or webhook URL is where its secret is."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "***"
    if not parts.scheme or not host:
        return "***"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}/***"
