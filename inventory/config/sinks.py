"""The [[notify]] sinks resolved: names, URLs (https, or http to a loopback address),
Standard Webhooks signing secrets and extra headers, each value from the environment or a file.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..secret import Secret
from .schema import NotifyEntry
from .settings import Sink
from .tokens import ENV_NAME_RE, read_token_file

SINK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "webhook-id", "webhook-timestamp",
     "webhook-signature", "user-agent"}
)  # fmt: skip


def resolve_notify(
    where: str, entries: list[NotifyEntry], env: Mapping[str, str], *, resolve: bool
) -> tuple[Sink, ...]:
    seen: set[str] = set()
    sinks = []
    for i, entry in enumerate(entries):
        key = f"notify[{i}]"
        if not SINK_NAME_RE.match(entry.name):
            raise ConfigError(
                f"{where}: {key}.name: {entry.name!r} must be 1-64 characters of letters, "
                "digits, '_', '.' and '-'"
            )
        if entry.name in seen:
            raise ConfigError(f"{where}: {key}.name: sink {entry.name!r} is configured twice")
        seen.add(entry.name)
        if entry.kind == "slack" and (entry.secret_env or entry.secret_file):
            raise ConfigError(
                f"{where}: {key}: Slack incoming webhooks are not signed; secret_env and "
                'secret_file are for kind = "webhook"'
            )
        url = _sink_url(where, key, entry, env, resolve)
        secret = None
        if entry.secret_env is not None or entry.secret_file is not None:
            secret = _sink_value(
                where, key, "secret", entry.secret_env, entry.secret_file, env, resolve
            )
            if resolve and not _is_signing_secret(secret.reveal()):
                raise ConfigError(
                    f"{where}: {key}.secret_{'env' if entry.secret_env else 'file'}: not a "
                    'Standard Webhooks signing secret ("whsec_" and base64)'
                )
        headers = []
        for header, env_name in entry.headers_env.items():
            hkey = f"{key}.headers_env.{header}"
            if not HEADER_NAME_RE.match(header) or header.lower() in RESERVED_HEADERS:
                raise ConfigError(f"{where}: {hkey}: {header!r} is not a header this sink may set")
            value = _sink_value(where, hkey, "", env_name, None, env, resolve, direct=True)
            headers.append((header, value))
        sinks.append(
            Sink(
                name=entry.name,
                kind=entry.kind,
                url=url,
                secret=secret,
                headers=tuple(headers),
                events=frozenset(entry.events),
                accounts=None if entry.accounts is None else frozenset(entry.accounts),
                integrations=None if entry.integrations is None else frozenset(entry.integrations),
                fields=None if entry.fields is None else frozenset(entry.fields),
                min_severity=entry.min_severity,
            )
        )
    return tuple(sinks)


def _sink_url(
    where: str, key: str, entry: NotifyEntry, env: Mapping[str, str], resolve: bool
) -> Secret:
    given = [k for k in ("url", "url_env", "url_file") if getattr(entry, k) is not None]
    if len(given) != 1:
        raise ConfigError(f"{where}: {key}: set exactly one of url, url_env or url_file")
    if entry.url is not None:
        url, source = Secret(entry.url.strip()), f"{key}.url"
    else:
        url = _sink_value(where, key, "url", entry.url_env, entry.url_file, env, resolve)
        source = f"{key}.{given[0]}"
    if resolve or entry.url is not None:
        _check_sink_url(where, source, url.reveal(), entry.kind)
    return url


def _check_sink_url(where: str, source: str, url: str, kind: str) -> None:
    # The URL is a secret: no message here quotes it.
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        raise ConfigError(f"{where}: {source}: not a URL") from None
    if not host or parts.scheme not in ("https", "http"):
        raise ConfigError(f"{where}: {source}: must be an https:// URL")
    if parts.scheme == "http" and host not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"{where}: {source}: must be an https:// URL (http:// only to a loopback address)"
        )
    if parts.username or parts.password:
        raise ConfigError(
            f"{where}: {source}: must not carry credentials; use headers_env for them"
        )
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise ConfigError(f"{where}: {source}: contains spaces or control characters")


def _sink_value(
    where: str,
    key: str,
    what: str,
    env_name: str | None,
    file_name: str | None,
    env: Mapping[str, str],
    resolve: bool,
    *,
    direct: bool = False,
) -> Secret:
    """A sink's secret value from ``<what>_env`` or ``<what>_file`` (``direct``: ``key``
    itself names the environment variable)."""
    env_key = key if direct else f"{key}.{what}_env"
    if env_name is not None and file_name is not None:
        raise ConfigError(f"{where}: {key}: set {what}_env or {what}_file, not both")
    if env_name is not None:
        if not ENV_NAME_RE.match(env_name):
            raise ConfigError(
                f"{where}: {env_key}: must be the NAME of an environment variable "
                "(letters, digits and '_')"
            )
        if not resolve:
            return Secret("")
        value = env.get(env_name, "").strip()
        if not value:
            raise ConfigError(
                f"{where}: {env_key}: environment variable {env_name} is not set or empty"
            )
    else:
        assert file_name is not None
        if not resolve:
            return Secret("")
        value = read_token_file(where, f"{key}.{what}_file", Path(file_name))
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ConfigError(f"{where}: {env_key}: the value contains control characters")
    return Secret(value)


def _is_signing_secret(value: str) -> bool:
    if not value.startswith("whsec_"):
        return False
    try:
        return bool(base64.b64decode(value[len("whsec_") :] + "==", validate=False))
    except (ValueError, binascii.Error):
        return False
