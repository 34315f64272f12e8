"""Sync throughput against the bundled fake ZIS server, compared with the floor.

The floor is the same client code fetching and parsing the same pages with no diff and no
database. Each measured step runs in its own process (peak RSS is per step); the fake
server runs in another. Prints one table; figures vary run to run, ratios are what matter.

    python benchmarks/run.py                       # 10 integrations x 10,000, SQLite
    python benchmarks/run.py --connections 1000 --database postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection as Pipe
from typing import Any

TYPES = ("api_key", "basic_auth", "bearer_token", "oauth")
ACCOUNT = "bench"
TOKEN = "bench-token"


def generate(integration: str, count: int) -> list[tuple[str, dict[str, Any]]]:
    from inventory.testing import sample_item

    return [
        (TYPES[i % 4], sample_item(TYPES[i % 4], f"{integration}_c{i:07d}")) for i in range(count)
    ]


def serve(integrations: int, per_integration: int, pipe: Pipe) -> None:
    """The fake server's process: serves, and applies the 1% change on request."""
    from inventory.testing import FakeZisServer, sample_item

    with FakeZisServer() as server:
        for n in range(integrations):
            name = f"integration_{n:03d}"
            server.add_integration(ACCOUNT, name, TOKEN, generate(name, per_integration))
        pipe.send(server.base_url(ACCOUNT))
        while True:
            command = pipe.recv()
            if command == "stop":
                return
            rng = random.Random(42)
            changed = 0
            for name, fake in server.accounts[ACCOUNT].items():
                keys = sorted(fake.items)
                k = max(1, len(keys) // 100)
                for type_name, item_name in rng.sample(keys, k):
                    kind = changed % 3
                    if kind == 0:
                        server.delete(ACCOUNT, name, type_name, item_name)
                    elif kind == 1:
                        server.update(
                            ACCOUNT,
                            name,
                            type_name,
                            item_name,
                            allowed_domain="changed.example.com",
                        )
                    else:
                        server.put(
                            ACCOUNT, name, "api_key", sample_item("api_key", f"{item_name}_new")
                        )
                    changed += 1
            pipe.send(changed)


def step(args: argparse.Namespace) -> dict[str, Any]:
    """One measured step in this process: floor, or a sync."""
    from sqlalchemy import event

    from inventory import store
    from inventory.config import (
        Account,
        DatabaseSettings,
        Integration,
        ScheduleSettings,
        Secret,
        Settings,
        SyncSettings,
    )
    from inventory.records import parse_page
    from inventory.sync import run_sync
    from inventory.zis import ZisClient

    integrations = tuple(
        Integration(ACCOUNT, f"integration_{n:03d}", Secret(TOKEN))
        for n in range(args.integrations)
    )
    account = Account(ACCOUNT, args.base_url, integrations)
    sync = SyncSettings(concurrency=args.concurrency, max_removal_ratio=1.0)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    written: dict[str, int] = {}
    requests = 0
    if args.step == "floor":
        client = ZisClient(account, sync)
        lock = threading.Lock()
        parsed = [0]

        def read(integration: Integration) -> None:
            for page in client.pages(integration):
                n = len(parse_page(page.body, where="floor", page=page.number).connections)
                with lock:
                    parsed[0] += n

        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(read, integrations))
        requests = client.requests
        client.close()
    else:
        settings = Settings(
            "(bench)", args.database, DatabaseSettings(), sync, ScheduleSettings(), (account,)
        )
        engine = store.make_engine(args.database)
        store.ensure_schema(engine, migrate=True)

        @event.listens_for(engine, "after_cursor_execute")
        def count(
            conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool
        ) -> None:
            words = statement.split()
            verb = words[0].upper()
            if verb in ("INSERT", "UPDATE"):
                table = words[2] if verb == "INSERT" else words[1]
                n = cursor.rowcount if cursor.rowcount >= 0 else (len(params) if executemany else 1)
                written[table] = written.get(table, 0) + n

        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = run_sync(settings, engine)
        requests = sum(s.pages for s in result.snapshots)
        engine.dispose()
    return {
        "wall": time.perf_counter() - wall0,
        "cpu": time.process_time() - cpu0,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "requests": requests,
        "written": written,
    }


def run_step(name: str, args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--step",
        name,
        "--base-url",
        base_url,
        "--database",
        args.database,
        "--integrations",
        str(args.integrations),
        "--concurrency",
        str(args.concurrency),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"step {name} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--integrations", type=int, default=10)
    parser.add_argument("--connections", type=int, default=10_000, help="per integration")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--database", default=None, help="default: a new SQLite file in a temp dir")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(args)))
        return
    tmp = tempfile.TemporaryDirectory()
    args.database = args.database or f"sqlite:///{os.path.join(tmp.name, 'bench.db')}"
    ours, theirs = mp.Pipe()
    server = mp.Process(
        target=serve, args=(args.integrations, args.connections, theirs), daemon=True
    )
    server.start()
    base_url = ours.recv()
    total = args.integrations * args.connections
    from inventory.store import safe_url

    print(
        f"{args.integrations} integrations x {args.connections} connections = {total}; "
        f"concurrency {args.concurrency}; database {safe_url(args.database)}"
    )
    results = [("floor (fetch + parse only)", run_step("floor", args, base_url))]
    results.append(("first sync (empty database)", run_step("sync", args, base_url)))
    results.append(("resync, no change", run_step("sync", args, base_url)))
    ours.send("change")
    changed = ours.recv()
    results.append((f"resync, 1% changed ({changed})", run_step("sync", args, base_url)))
    ours.send("stop")
    server.join(timeout=10)
    floor = results[0][1]["wall"]
    header = f"{'step':34} {'wall s':>7} {'cpu s':>7} {'rss MB':>7} {'pages':>6} {'x floor':>7}  rows written"
    print(header)
    print("-" * len(header))
    for name, r in results:
        rows = ", ".join(f"{t}={n}" for t, n in sorted(r["written"].items())) or "-"
        print(
            f"{name:34} {r['wall']:7.2f} {r['cpu']:7.2f} {r['rss_mb']:7.0f} {r['requests']:6d} "
            f"{r['wall'] / floor:7.2f}  {rows}"
        )
    tmp.cleanup()


if __name__ == "__main__":
    main()
