"""Tokens from an environment variable or a file (mode 0600), checked and wrapped in Secret;
read_token_files reads the token files again at the start of each run.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError
from ..secret import Secret, UnreadableToken
from .settings import Settings, TokenFile

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: safe in a header


def resolve_token(
    where: str,
    key: str,
    token_env: str | None,
    token_file: str | None,
    env: Mapping[str, str],
    resolve: bool,
    *,
    what: str = "ZIS OAuth access token",
    prefix: str = "",
) -> Secret:
    """The token of ``key`` from ``<prefix>token_env`` or ``<prefix>token_file`` (one of
    them); with ``resolve`` false only the names are checked and the token is empty."""
    if token_env is not None and token_file is not None:
        raise ConfigError(f"{where}: {key}: set {prefix}token_env or {prefix}token_file, not both")
    if token_env is not None:
        if not ENV_NAME_RE.match(token_env):
            raise ConfigError(
                f"{where}: {key}.{prefix}token_env: must be the NAME of an environment variable, "
                "not a token (letters, digits and '_')"
            )
        if not resolve:
            return Secret("")
        value = env.get(token_env, "").strip()
        if not value:
            raise ConfigError(
                f"{where}: {key}.{prefix}token_env: environment variable {token_env} is not set "
                f"or empty; export {token_env}=<{what}>"
            )
        return _checked(where, key, value, f"environment variable {token_env}")
    assert token_file is not None
    if not resolve:
        return Secret("")
    return _file_token(where, TokenFile(token_file, f"{key}.{prefix}token_file"))


def _file_token(where: str, source: TokenFile) -> Secret:
    value = read_token_file(where, source.key, Path(source.path))
    return _checked(where, source.key.rsplit(".", 1)[0], value, f"file {source.path}")


def _checked(where: str, key: str, value: str, source: str) -> Secret:
    if not TOKEN_RE.match(value):
        raise ConfigError(
            f"{where}: {key}: the token from {source} contains spaces or control characters"
        )
    return Secret(value)


def read_token_files(settings: Settings) -> Settings:
    """The settings with every token file read again, at the start of a run, so a token
    rotated by an external agent is used without a restart; environment tokens stay as
    loaded. A file that cannot be read now fails the snapshots of the integrations that
    use it (UnreadableToken), with the message start-up would give; the others go on."""
    tokens: dict[TokenFile, Secret | str] = {}  # each file read once per run
    accounts = []
    for account in settings.accounts:
        integrations = []
        for integration in account.integrations:
            source = integration.token_file
            if source is not None:
                if source not in tokens:
                    try:
                        tokens[source] = _file_token(settings.source, source)
                    except ConfigError as exc:
                        tokens[source] = str(exc)
                token = tokens[source]
                if isinstance(token, str):
                    token = UnreadableToken(f"{account.subdomain}/{integration.name}: {token}")
                integration = replace(integration, token=token)
            integrations.append(integration)
        accounts.append(replace(account, integrations=tuple(integrations)))
    return replace(settings, accounts=tuple(accounts))


def read_token_file(where: str, key: str, path: Path) -> str:
    """A secret file's stripped text: mode 0600 (no group or other bits), UTF-8, not empty."""
    try:
        st = path.stat()
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ConfigError(
                f"{where}: {key}: {path} is readable by group or others; run: chmod 600 {path}"
            )
        value = path.read_text(encoding="utf-8").strip()
    except ConfigError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{where}: {key}: cannot read token file {path}: {reason}") from None
    if not value:
        raise ConfigError(f"{where}: {key}: token file {path} is empty")
    return value
