"""``python -m inventory.testing``: serve the demo's sample account on 127.0.0.1."""

from __future__ import annotations

import threading
from datetime import datetime

from .samples import (
    ACCOUNT,
    add_sample_clients,
    change_account,
    redirect_client,
    sample_account,
    sample_registry,
)
from .server import FakeZisServer


def main(argv: list[str] | None = None) -> int:
    """``python -m inventory.testing``: serve the demo's sample account until Ctrl-C."""
    import argparse
    import os
    import signal
    from datetime import UTC

    parser = argparse.ArgumentParser(
        prog="python -m inventory.testing",
        description="Serve the demo's sample ZIS account on 127.0.0.1 (for trying zis-inventory).",
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--token-env",
        default="FAKE_ZIS_TOKEN",
        help="environment variable holding the token every integration (and the registry, "
        "as an admin's OAuth token) accepts",
    )
    parser.add_argument(
        "--changed", action="store_true", help="serve the account after the demo's changes"
    )
    args = parser.parse_args(argv)
    token = os.environ.get(args.token_env, "")
    if not token:
        parser.error(f"set {args.token_env} to the token the fake server should accept")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    server = FakeZisServer()
    for name, items in sample_account(today).items():  # the same data all day long
        server.add_integration(ACCOUNT, name, token, items)
    add_sample_clients(server)
    server.add_registry(ACCOUNT, sample_registry(), oauth=token)  # the token is the admin's too
    if args.changed:
        change_account(server, today)
        redirect_client(server)
    try:
        server.start(args.port)
    except OSError as exc:
        parser.error(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}")
    names = ", ".join(server.accounts[ACCOUNT])
    changed = " after the demo's changes" if args.changed else ""
    print(
        f"serving account {ACCOUNT!r}{changed} at {server.base_url(ACCOUNT)} "
        f"(integrations: {names})",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # `kill` stops it as Ctrl-C does
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
