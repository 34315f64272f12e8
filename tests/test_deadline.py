"""sync.timeout_seconds bounds a whole request: real loopback servers that trickle a body,
stall half way through one, or never answer (over HTTP, and a TLS handshake that stalls)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import select

from inventory import models as m
from inventory.config import Integration, SyncSettings
from inventory.errors import ApiError
from inventory.secret import Secret
from inventory.zis import ZisClient

from .helpers import Harness, items, query

TIMEOUT = 0.5
RETRIES = 2
BACKOFF = 0.01
# The bound of the spec (§7): every attempt ends at its deadline, and backoffs between
# them are at most retry_backoff_seconds * 2**attempt; a wide margin for a busy machine.
BOUND = (RETRIES + 1) * TIMEOUT + sum(BACKOFF * 2**n for n in range(RETRIES))
MARGIN = 3.0
HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n"


class HostileServer:
    """Accepts connections on 127.0.0.1 and answers each request the way ``mode`` says:
    ``trickle`` a byte a second, ``stall`` after the headers and half a body, or
    ``silent``: never a byte (a TLS client then waits in its handshake)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self._conns.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            self.requests += 1
            if self.mode == "silent":
                self._stop.wait()
                return
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            conn.sendall(HEADERS)
            if self.mode == "stall":
                conn.sendall(b'{"api_key": [')
                self._stop.wait()
                return
            while not self._stop.wait(1.0):  # trickle: a byte a second, for ever
                conn.sendall(b" ")
        except OSError:
            return  # the client gave up: what it should do

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._conns:
            conn.close()
        self._sock.close()


@contextmanager
def hostile(mode: str) -> Iterator[HostileServer]:
    with HostileServer(mode) as server:
        yield server


MESSAGE = (
    f"acme/billing: page 1: gave up after {RETRIES + 1} attempts: "
    f"no complete response within sync.timeout_seconds ({TIMEOUT:g}s)"
)


@pytest.mark.parametrize(
    ("mode", "scheme"),
    [("trickle", "http"), ("stall", "http"), ("silent", "http"), ("silent", "https")],
)
def test_each_request_ends_at_its_deadline(mode: str, scheme: str) -> None:
    with hostile(mode) as server:
        url = server.url.replace("http://", f"{scheme}://")
        integration = Integration("acme", "billing", Secret("ZIS-SENTINEL-SECRET-t"))
        settings = SyncSettings(
            timeout_seconds=TIMEOUT, max_retries=RETRIES, retry_backoff_seconds=BACKOFF
        )
        began = time.monotonic()
        with (
            ZisClient(url, "acme", settings) as client,
            pytest.raises(ApiError) as caught,
        ):
            list(client.pages(integration.name, integration.token))
        elapsed = time.monotonic() - began
    assert str(caught.value) == MESSAGE
    assert server.requests == RETRIES + 1
    assert elapsed < BOUND + MARGIN, elapsed


@pytest.mark.parametrize("mode", ["trickle", "stall", "silent"])
def test_a_hostile_server_fails_its_snapshot_and_the_others_complete(
    cli: Harness, mode: str
) -> None:
    cli.zis.add_integration("acme", "crm", cli.token("acme", "crm"), items("crm", 2))
    config = cli.write_config(
        f"timeout_seconds = {TIMEOUT}\nmax_retries = {RETRIES}",  # backoff: BACKOFF
        acme=["crm"],
    )
    with hostile(mode) as server:
        cli.monkeypatch.setenv("TOKEN_SLOW", cli.token("slow", "billing"))
        config.write_text(
            config.read_text()
            + f'\n[[accounts]]\nsubdomain = "slow"\nbase_url = "{server.url}/slow"\n'
            'token_env = "TOKEN_SLOW"\nintegrations = ["billing"]\n'
        )
        # The database is built first: the bound is the requests', not the migrations'.
        assert cli.run("db", "upgrade", "--config", str(config)).code == 0
        began = time.monotonic()
        result = cli.run("sync")
        elapsed = time.monotonic() - began
    assert result.code == 1
    assert elapsed < BOUND + MARGIN, elapsed
    s = m.Snapshot
    assert query(cli.db_url, select(s.account, s.integration, s.status, s.error)) == {
        ("acme", "crm", "complete", None),
        ("slow", "billing", "failed", MESSAGE.replace("acme/", "slow/")),
    }
    assert "Traceback" not in result.err and "Traceback" not in result.out
