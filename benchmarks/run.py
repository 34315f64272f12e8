"""Benchmarks: what a sync costs beyond reading the API, against the bundled fake ZIS server.

The floor is the same client code fetching and parsing the same pages with no diff and no
database. Every measured step runs in a process of its own (peak RSS is per step); the
fake server runs in another. Each run of a step comes right after a floor run of its own,
and its ratio is to that floor. Figures vary from run to run; the ratios are what matter.
Besides the step's own CPU, each row shows the CPU its database server used (`db cpu`:
PostgreSQL's processes, when they run on this machine; SQLite works inside the step) and
the fake server's (`api cpu`): on a machine that runs all three, their sum over its cores
is a time no step can beat (`cpu bound` in the throughput table). Under each table, the
step's CPU by phase of the sync (``inventory.phases``: the CPU time of the thread doing
each), with ``rest`` the step's CPU outside them (the run's own statements, the HTTP
client's threads, the interpreter).

By default a step is the whole product with one webhook sink configured (nothing is
delivered: a sync's delivery is the CLI's, after the run).

    python benchmarks/run.py                          # everything, on SQLite
    python benchmarks/run.py --database postgresql://postgres@127.0.0.1/test
    python benchmarks/run.py --only throughput --scale 0.1   # a quick look
    python benchmarks/run.py --million                # adds 100 x 10,000 to the scaling run
    python benchmarks/run.py --only startup           # start-up time of each command
    python benchmarks/run.py --only throughput --core-only   # the sync core alone
    python benchmarks/run.py --only throughput --no-sink     # no sink configured

``--core-only`` is a diagnostic: each snapshot's transaction has no consumers after its rows
(chain, findings, outbox), so that the core's own cost can be told from theirs. A database
written so holds snapshots with no chain hash (``db verify`` fails on it). The throughput
scenario measures a core-only first sync beside the whole product's in any case.
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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection as Pipe
from typing import Any

TYPES = ("api_key", "basic_auth", "bearer_token", "oauth")
ACCOUNT = "bench"
TOKEN = "bench-token"
INVENTORY_TABLES = ("connections", "connection_versions", "connection_changes")
# The phases of a sync, in the order its work runs (inventory.phases).
PHASES = ("fetch+parse", "diff", "rows", "chain", "findings", "outbox", "commit")


@dataclass(frozen=True)
class Account:
    integrations: int
    per_integration: int
    latency: float = 0.0
    rate_limit: tuple[int, float] | None = None
    quota_headers: bool = False

    @property
    def total(self) -> int:
        return self.integrations * self.per_integration


# --- the fake server's process ---------------------------------------------------------


def serve(spec: Account, pipe: Pipe) -> None:
    from inventory.testing import FakeZisServer, sample_item

    server = FakeZisServer(
        latency=spec.latency, rate_limit=spec.rate_limit, quota_headers=spec.quota_headers
    )
    with server:
        for n in range(spec.integrations):
            name = f"integration_{n:03d}"
            items = [
                (TYPES[i % 4], sample_item(TYPES[i % 4], f"{name}_c{i:07d}", **stamps(n, i)))
                for i in range(spec.per_integration)
            ]
            server.add_integration(ACCOUNT, name, TOKEN, items)
        pipe.send(server.base_url(ACCOUNT))
        cpu = time.process_time()  # the server's CPU since the last step
        while True:
            command = pipe.recv()
            if command == "stop":
                return
            if command == "stats":
                statuses = [r.status for r in server.requests]
                stats: dict[str, Any] = {"requests": len(statuses), "429": statuses.count(429)}
                now = time.process_time()
                stats["api_cpu"], cpu = now - cpu, now
                if spec.rate_limit is not None:  # (served, 429s) in each window used
                    windows: dict[int, list[int]] = {}
                    for r in server.requests:
                        counts = windows.setdefault(server.window(r.at), [0, 0])
                        counts[r.status == 429] += 1
                    used = range(min(windows, default=0), max(windows, default=-1) + 1)
                    stats["windows"] = [windows.get(w, [0, 0]) for w in used]
                pipe.send(stats)
                server.requests.clear()
                continue
            rng = random.Random(42)
            changed = 0
            for name, fake in server.accounts[ACCOUNT].items():
                keys = sorted(fake.items)
                for type_name, item_name in rng.sample(keys, max(1, len(keys) // 100)):
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
            cpu = time.process_time()  # changing the account is no step's work
            pipe.send(changed)


def stamps(integration: int, i: int) -> dict[str, str]:
    """Timestamps of their own for each connection, as a real account has: created at a
    different instant each, a third updated since, oauth tokens expiring on different
    days."""
    created = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(
        seconds=integration * 86_400 + i * 37, microseconds=i * 1001 % 1_000_000
    )
    updated = created + timedelta(days=i % 90) if i % 3 == 0 else created
    expiry = datetime(2027, 1, 1, tzinfo=UTC) + timedelta(days=i % 700, seconds=i)

    def text(value: datetime) -> str:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    if TYPES[i % 4] == "oauth":
        return {"token_expiry": text(expiry)}
    return {"created_at": text(created), "updated_at": text(updated)}


class Server:
    def __init__(self, spec: Account) -> None:
        self._pipe, theirs = mp.Pipe()
        self._process = mp.Process(target=serve, args=(spec, theirs), daemon=True)
        self._process.start()
        self.base_url: str = self._pipe.recv()

    def call(self, command: str) -> Any:
        self._pipe.send(command)
        return self._pipe.recv()

    def stop(self) -> None:
        self._pipe.send("stop")
        self._process.join(timeout=30)


# --- one measured step, in its own process ---------------------------------------------


def step(args: argparse.Namespace) -> dict[str, Any]:

    from inventory import phases, store
    from inventory.config import Account as AccountConfig
    from inventory.config import (
        DatabaseSettings,
        Integration,
        ScheduleSettings,
        Settings,
        Sink,
        SyncSettings,
    )
    from inventory.records import parse_page
    from inventory.secret import Secret
    from inventory.sync import run_sync
    from inventory.zis import ZisClient

    integrations = tuple(
        Integration(ACCOUNT, f"integration_{n:03d}", Secret(TOKEN))
        for n in range(args.integrations)
    )
    account = AccountConfig(ACCOUNT, args.base_url, integrations)
    sync = SyncSettings(concurrency=args.concurrency, max_removal_ratio=1.0, max_retries=20)
    written = dict.fromkeys(INVENTORY_TABLES, 0)
    phases.enable()
    if args.step == "floor":
        lock = threading.Lock()
        parsed = [0]

        def read(integration: Integration) -> None:
            with phases.phase("fetch+parse"):
                for page in client.pages(integration.name, integration.token):
                    got = parse_page(page.body, where="floor", page=page.number)
                    with lock:
                        parsed[0] += len(got.connections)

        # Timed as a sync is, making the client included, so that the ratio is the
        # sync's work only.
        cpu0, wall0 = time.process_time(), time.perf_counter()
        client = ZisClient(account.base_url, account.subdomain, sync)
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(read, integrations))
        client.close()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        db_cpu = None
        status = "floor"
    else:
        sinks = () if args.no_sink else (Sink("bench", "webhook", Secret(SINK_URL)),)
        settings = Settings(
            "(bench)", args.database, DatabaseSettings(), sync, ScheduleSettings(), (account,),
            notify=sinks,
        )  # fmt: skip
        engine = store.engine_for(settings)
        store.ensure_schema(engine, migrate=True)

        # Rows written, as each snapshot's transaction counts them (inserts and updates).
        transaction = store.integration_transaction

        @contextmanager
        def counted(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with transaction(*args, **kwargs) as tx:
                yield tx
            for table in INVENTORY_TABLES:  # the clients' tables: none in the benchmark
                written[table] += tx.written[table]

        store.integration_transaction = counted
        # --core-only, the diagnostic: no chain, findings or outbox
        consumers = () if args.core_only else store.CONSUMERS

        local_postgres = is_local_postgres(args.database)
        db_cpu0 = postgres_cpu() if local_postgres else 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = run_sync(settings, engine, consumers=consumers)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        db_cpu = postgres_cpu() - db_cpu0 if local_postgres else None
        engine.dispose()
        status = result.status
    return {
        "wall": wall,
        "cpu": cpu,
        "db_cpu": db_cpu,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "written": written,
        "status": status,
        "phases": phases.disable(),
    }


def measure(
    kind: str,
    server: Server,
    spec: Account,
    database: str | Callable[[], str],
    concurrency: int,
    *,
    repeat: int = 1,
    before: Callable[[], Any] | None = None,
    floors: list[dict[str, Any]] | None = None,
    core_only: bool = False,
) -> dict[str, Any]:
    """The median of ``repeat`` runs, each in a process of its own (``database`` may make a
    new database per run; ``before`` runs before each; ``core_only``: with no consumers
    after the rows, as ``--core-only`` makes every step).

    With ``floors``, each run comes right after a floor run of its own (kept in ``floors``)
    and the median is taken by the ratio to it: the speed of a shared VM drifts within a
    scenario, and two runs back to back share the drift. Otherwise by wall time."""
    runs = []
    for _ in range(repeat):
        floor = None
        if floors is not None:
            floor = measure_once("floor", server, spec, "sqlite://", concurrency)
            floors.append(floor)
        if before is not None:
            before()
        run = measure_once(
            kind,
            server,
            spec,
            database() if callable(database) else database,
            concurrency,
            core_only=core_only,
        )
        if floor is not None:
            run["ratio"], run["floor_wall"] = run["wall"] / floor["wall"], floor["wall"]
        runs.append(run)
    runs.sort(key=lambda f: f.get("ratio", f["wall"]))
    return median_of(runs)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The middle one of ``runs`` (sorted), with every run's wall time (and floor's)."""
    median = dict(runs[len(runs) // 2])
    median["walls"] = [(f["wall"], f.get("floor_wall")) for f in runs]
    return median


def floor_row(floors: list[dict[str, Any]]) -> Row:
    """The floor runs the steps were paired with: the median one, by wall time."""
    figures = median_of(sorted(floors, key=lambda f: f["wall"]))
    figures["ratio"] = 1.0
    return Row("floor (fetch + parse only)", figures)


def measure_once(
    kind: str,
    server: Server,
    spec: Account,
    database: str,
    concurrency: int,
    *,
    core_only: bool = False,
) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--step", kind, "--base-url", server.base_url, "--database", database,
        "--integrations", str(spec.integrations), "--concurrency", str(concurrency),
        *(["--core-only"] if CORE_ONLY or core_only else []), *(["--no-sink"] if NO_SINK else []),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"step {kind} failed:\n{done.stderr[-3000:]}")
    figures = dict(json.loads(done.stdout.splitlines()[-1]))
    figures.update(server.call("stats"))
    return figures


def is_local_postgres(database: str) -> bool:
    """A PostgreSQL server on this machine, whose processes /proc shows."""
    from sqlalchemy.engine import make_url

    if not database.startswith("postgresql") or not os.path.isdir("/proc"):
        return False
    return make_url(database).host in (None, "", "localhost", "127.0.0.1", "::1")


def postgres_cpu() -> float:
    """CPU seconds used so far by every PostgreSQL server process on this machine (the
    backends serving a step and the server's own writers), from /proc; with the children
    the server has reaped, so that a backend that ended still counts."""
    ticks = 0
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:  # not a process, or it ended meanwhile
            continue
        name, _, rest = stat.partition("(")[2].rpartition(")")
        if name == "postgres":
            fields = rest.split()
            ticks += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


# --- the scenarios ---------------------------------------------------------------------


@dataclass
class Row:
    name: str
    figures: dict[str, Any]  # "ratio": to the floor run paired with it, when there is one


def print_table(title: str, rows: list[Row], extra: Callable[[Row], str] = lambda r: "") -> None:
    print(f"\n{title}")
    if any(len(r.figures["walls"]) > 1 for r in rows):
        print(
            "(each step: the run with the median ratio to the floor run just before it; "
            "every run's wall time / its floor's at the end)"
        )
    header = f"{'step':36} {'wall s':>8} {'cpu s':>7} {'db cpu':>7} {'api cpu':>7} {'rss MB':>7} {'requests':>8} {'429s':>5} {'x floor':>8}  rows written (connections / versions / changes)"
    print(header)
    print("-" * len(header))
    for row in rows:
        f = row.figures
        ratio = f"{f['ratio']:8.2f}" if "ratio" in f else f"{'-':>8}"
        written = " / ".join(str(f["written"][t]) for t in INVENTORY_TABLES)
        db_cpu = f"{f['db_cpu']:7.2f}" if f.get("db_cpu") is not None else f"{'-':>7}"
        print(
            f"{row.name:36} {f['wall']:8.2f} {f['cpu']:7.2f} {db_cpu} {f['api_cpu']:7.2f} {f['rss_mb']:7.0f} {f['requests']:8d} {f['429']:5d} {ratio}  {written}{extra(row)}{spread(f)}"
        )
    print_phases(rows)


def print_phases(rows: list[Row]) -> None:
    """Each step's CPU seconds by phase (the run shown above); ``-``: a phase it never
    entered, ``rest``: its CPU outside every phase."""
    print("CPU by phase, seconds (the thread doing each; rest: the step's CPU outside them)")
    header = f"{'step':36} " + " ".join(f"{p:>11}" for p in (*PHASES, "rest", "cpu s"))
    print(header)
    print("-" * len(header))
    for row in rows:
        spent = row.figures["phases"]
        cells = [f"{spent[p]:11.2f}" if p in spent else f"{'-':>11}" for p in PHASES]
        rest = row.figures["cpu"] - sum(spent.values())
        print(f"{row.name:36} {' '.join(cells)} {rest:11.2f} {row.figures['cpu']:11.2f}")


def spread(figures: dict[str, Any]) -> str:
    walls = figures["walls"]
    if len(walls) < 2:
        return ""
    runs = (f"{w:.2f}" if floor is None else f"{w:.2f}/{floor:.2f}" for w, floor in walls)
    return "   (runs: " + ", ".join(runs) + " s)"


def new_database(args: argparse.Namespace, tmp: str, name: str) -> str:
    if args.database.startswith("postgresql"):
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(args.database)
        db = f"zis_inventory_bench_{name}_{os.getpid()}"
        admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
            conn.execute(f'CREATE DATABASE "{db}"')
        CREATED.append((admin, db))
        return url.set(database=db).render_as_string(hide_password=False)
    return f"sqlite:///{os.path.join(tmp, name + '.db')}"


def fresh_databases(args: argparse.Namespace, tmp: str, name: str) -> Callable[[], str]:
    """A new empty database at each call; .made lists them."""
    made: list[str] = []

    def fresh() -> str:
        made.append(new_database(args, tmp, f"{name}_{len(made)}"))
        return made[-1]

    fresh.made = made  # type: ignore[attr-defined]
    return fresh


def throughput(args: argparse.Namespace, tmp: str) -> list[Row]:
    spec = Account(10, int(10_000 * args.scale))
    server = Server(spec)
    empty = fresh_databases(args, tmp, "throughput")
    changed: list[int] = []
    floors: list[dict[str, Any]] = []
    try:
        first = measure(
            "sync", server, spec, empty, args.concurrency, repeat=args.repeat, floors=floors
        )
        core = None
        if not CORE_ONLY:  # the core alone beside the whole product, on the same pages
            core = measure(
                "sync",
                server,
                spec,
                fresh_databases(args, tmp, "core"),
                args.concurrency,
                repeat=args.repeat,
                floors=floors,
                core_only=True,
            )
        # The resyncs run against the database of the last first sync.
        last = empty.made[-1]  # type: ignore[attr-defined]
        again = measure(
            "sync", server, spec, last, args.concurrency, repeat=args.repeat, floors=floors
        )
        one_percent = measure(
            "sync",
            server,
            spec,
            last,
            args.concurrency,
            repeat=args.repeat,
            before=lambda: changed.append(server.call("change")),
            floors=floors,
        )
    finally:
        server.stop()
    rows = [
        floor_row(floors),
        Row("first sync, empty database", first),
        *([Row("first sync, core only", core)] if core is not None else []),
        Row("resync, no change", again),
        Row(f"resync, 1% changed ({max(changed)})", one_percent),
    ]
    print_table(
        f"1. Throughput: {spec.integrations} integrations x {spec.per_integration} = {spec.total} connections, concurrency {args.concurrency}",
        rows,
        cpu_bound,
    )
    return rows


def cpu_bound(row: Row) -> str:
    """The CPU of the step, its database server and the fake server, spread over every
    core of this machine: the wall time no run could beat here, as a ratio to the floor."""
    f = row.figures
    if "floor_wall" not in f:
        return ""
    busy = f["cpu"] + (f.get("db_cpu") or 0.0) + f["api_cpu"]
    return f"   cpu bound {busy / (os.cpu_count() or 1) / f['floor_wall']:.2f} x floor"


def scaling(args: argparse.Namespace, tmp: str) -> None:
    # Time per connection at one shape (10 integrations) and growing size; and 1 x 10,000
    # beside 10 x 10,000 for memory, which should follow the largest integration.
    sizes = [(10, 100), (10, 1000), (10, 10_000), (1, 10_000)] + (
        [(100, 10_000)] if args.million else []
    )
    rows = []
    for integrations, per in sizes:
        spec = Account(integrations, int(per * args.scale))
        server = Server(spec)
        repeat = 1 if integrations * per > 100_000 else args.repeat
        try:
            first = measure(
                "sync",
                server,
                spec,
                fresh_databases(args, tmp, f"scaling_{integrations}_{per}"),
                args.concurrency,
                repeat=repeat,
                floors=[],
            )
        finally:
            server.stop()
        first["per_connection_us"] = first["wall"] / spec.total * 1e6
        rows.append(Row(f"{integrations} x {spec.per_integration} first sync", first))
    print_table(
        "2. Scaling: first sync by size (time per connection should stay flat; memory should follow the largest integration)",
        rows,
        lambda r: f"   {r.figures['per_connection_us']:.1f} us/connection",
    )


def latency(args: argparse.Namespace, tmp: str) -> None:
    spec = Account(20, int(2000 * args.scale), latency=0.1)
    concurrency = 8
    server = Server(spec)
    floors: list[dict[str, Any]] = []
    try:
        figures = measure(
            "sync",
            server,
            spec,
            fresh_databases(args, tmp, "latency"),
            concurrency,
            repeat=args.repeat,
            floors=floors,
        )
    finally:
        server.stop()
    # An integration's pages come one after another, and each worker takes one integration
    # at a time: the integrations run in waves of `concurrency`, each as long as one
    # integration's pages take. No schedule ends sooner.
    pages = -(-figures["requests"] // spec.integrations)  # per integration
    waves = -(-spec.integrations // concurrency)
    bound = waves * pages * spec.latency
    print_table(
        f"3. Latency-bound: 100 ms per page, {spec.integrations} x {spec.per_integration}, concurrency {concurrency}",
        [floor_row(floors), Row("first sync", figures)],
        lambda r: (
            f"   schedule bound {bound:.2f} s ({waves} waves x {pages} pages x {spec.latency} s), "
            f"{r.figures['wall'] - bound:+.2f} s"
        ),
    )


def rate_limited(args: argparse.Namespace, tmp: str) -> None:
    rows = []
    for headers in (True, False):
        spec = Account(30, int(1000 * args.scale), rate_limit=(100, 10.0), quota_headers=headers)
        server = Server(spec)
        database = new_database(args, tmp, f"rate_{headers}")
        try:
            figures = measure("sync", server, spec, database, args.concurrency)
        finally:
            server.stop()
        # The server's windows are fixed: the first one the sync uses may be partly gone.
        # Its full windows (all but the first and the last) show the rate achieved.
        windows = figures["windows"]
        full = windows[1:-1] or windows
        limit = spec.rate_limit[0] if spec.rate_limit else 0
        figures["usage"] = (
            f"served per window {[w[0] for w in windows]}, 429s per window "
            f"{[w[1] for w in windows]}; full windows used at "
            f"{sum(w[0] for w in full) / (len(full) * limit):.0%} of the {limit} allowed"
        )
        rows.append(Row(f"first sync, quota headers {'on' if headers else 'off'}", figures))
    print_table(
        "4. Rate-limit-bound: 100 requests per 10 s per account, 30 integrations",
        rows,
        lambda r: f"   {r.figures['usage']}",
    )


STARTUP_COMMANDS = (
    ("--help",),
    ("--version",),
    ("sync", "--help"),
    ("connections",),
    ("changes",),
    ("snapshots",),
    ("check",),
    ("db", "current"),
)
STARTUP_RUNS = 5


def startup(args: argparse.Namespace, tmp: str) -> None:
    """Whole-process start-up time of each command (the median of 5), on an empty
    inventory at the schema head: what a user waits for before the first line."""
    config = os.path.join(tmp, "startup.toml")
    with open(config, "w") as handle:
        handle.write(
            f'[database]\nurl = "sqlite:///{os.path.join(tmp, "startup.db")}"\n'
            '[[accounts]]\nsubdomain = "bench"\ntoken_env = "BENCH_ZIS_TOKEN"\n'
            'integrations = ["billing"]\n'
        )
    env = {**os.environ, "INVENTORY_CONFIG": config}
    env.pop("INVENTORY_DATABASE_URL", None)
    run = [sys.executable, "-m", "inventory"]
    subprocess.run([*run, "db", "upgrade"], env=env, check=True, capture_output=True)
    print(f"\nstart-up: whole process, median of {STARTUP_RUNS} (min-max), seconds")
    floor = [sys.executable, "-c", "pass"]  # the interpreter alone, for scale
    for name, argv in [("(python -c pass)", floor)] + [
        (" ".join(c), [*run, *c]) for c in STARTUP_COMMANDS
    ]:
        times = []
        for _ in range(STARTUP_RUNS):
            began = time.perf_counter()
            done = subprocess.run(argv, env=env, capture_output=True)
            times.append(time.perf_counter() - began)
            assert done.returncode in (0, 1), done.stderr  # check exits 1: nothing synced yet
        times.sort()
        print(f"  {name:<16} {times[len(times) // 2]:6.3f}  ({times[0]:.3f}-{times[-1]:.3f})")


def verify_chains(args: argparse.Namespace, tmp: str) -> None:
    """`db verify` over a database of 100 integrations x 10,000 connections (x --scale),
    written through the real snapshot write path (so chained as a sync chains them): a
    first snapshot adding every connection, then two that modify 5% of them each. Prints
    the time to write it and the time `db verify` takes over it."""
    from inventory import store
    from inventory.diff import diff
    from inventory.records import Connection
    from inventory.store import verify as chain

    integrations, per = 100, max(1, int(10_000 * args.scale))
    url = new_database(args, tmp, "verify")
    engine = store.make_engine(url)
    store.ensure_schema(engine, migrate=True)
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    began = time.perf_counter()
    for round_ in range(3):
        run = store.start_run(engine, "cli")
        for n in range(integrations):
            at = store.now()  # each snapshot's own started_at, as a sync gives it
            name = f"integration_{n:03d}"
            fetched = [
                Connection(
                    TYPES[i % 4], f"{name}_c{i:07d}", f"d{i}.example.com", stamp, stamp,
                    token_type="bearer" if i % 4 == 3 else None,
                    token_expiry=stamp + timedelta(days=i % 700) if i % 4 == 3 else None,
                    username=f"u{i}-{round_ if i % 20 == round_ else 0}@example.com",
                )
                for i in range(per)
            ]  # fmt: skip
            with store.integration_transaction(engine, ACCOUNT, name) as tx:
                result = diff(tx.load_state(), fetched)
                c = result.counts()
                counts = (c["added"], c["removed"], c["modified"], c["restored"])
                row = store.SnapshotRow(
                    run.id, ACCOUNT, name, at, "complete", connection_count=per, counts=counts
                )
                tx.write(row, result)
        store.finish_run(engine, run, "complete")
    written = time.perf_counter() - began
    with engine.connect() as conn:
        versions = conn.exec_driver_sql("SELECT count(*) FROM connection_versions").scalar()
        events = conn.exec_driver_sql("SELECT count(*) FROM connection_changes").scalar()
    engine.dispose()
    postgres = url.startswith("postgresql")
    # PostgreSQL plans by its tables' statistics: the database as written (a server
    # running without autovacuum never gathers them), then as autovacuum's ANALYZE leaves it.
    for analyzed in (False, True) if postgres else (False,):
        if analyzed:
            owner = store.make_engine(url)
            with owner.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
            owner.dispose()
        reader = store.make_engine(url, readonly=True)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = chain.verify(reader)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        reader.dispose()
        assert not result.problems, result.problems[:5]
        if not analyzed:
            print(
                f"\ndb verify: {versions:,} versions, {events:,} events, {result.snapshots} "
                f"snapshots in {len(result.chains)} chains (written in {written:.1f} s)"
            )
        said = " (after ANALYZE)" if analyzed else " (tables not analyzed)" if postgres else ""
        print(
            f"  verified{said} in {wall:.1f} s wall, {cpu:.1f} s CPU "
            f"({wall / max(versions or 1, 1) * 1e6:.1f} us per version)"
        )


SCENARIOS = {
    "throughput": throughput,
    "scaling": scaling,
    "latency": latency,
    "rate": rate_limited,
    "startup": startup,
    "verify": verify_chains,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database",
        default="sqlite",
        help="sqlite (default: new files in a temp dir) or a postgresql:// URL where databases may be created",
    )
    parser.add_argument(
        "--only",
        choices=sorted(SCENARIOS),
        action="append",
        help="run only this scenario (repeatable)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every connection count (0.1 for a quick look)",
    )
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per step (not the rate-limited ones); the median run is shown (default 3)",
    )
    parser.add_argument(
        "--million", action="store_true", help="add 100 x 10,000 connections to the scaling run"
    )
    parser.add_argument(
        "--core-only",
        action="store_true",
        help="a diagnostic: skip the chain, findings and outbox in each snapshot's transaction",
    )
    parser.add_argument(
        "--no-sink",
        action="store_true",
        help="configure no sink (by default one webhook sink, to which nothing is delivered)",
    )
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--integrations", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global CORE_ONLY, NO_SINK
    CORE_ONLY, NO_SINK = args.core_only, args.no_sink
    if args.step:
        print(json.dumps(step(args)))
        return
    import platform

    print(
        f"zis-inventory benchmarks on {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, database {args.database.split('@')[-1]}"
        + (
            " (--core-only: no chain, findings or outbox)"
            if CORE_ONLY
            else " (--no-sink: no sink)"
            if NO_SINK
            else " (one webhook sink, nothing delivered)"
        )
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.only or list(SCENARIOS):
                SCENARIOS[name](args, tmp)
    finally:
        drop_created()


CREATED: list[tuple[str, str]] = []  # (admin URL, database) made for this run
CORE_ONLY = False  # --core-only, passed on to each step
NO_SINK = False  # --no-sink, passed on to each step
SINK_URL = "http://127.0.0.1:9/never"  # the one sink's: nothing is delivered to it


def drop_created() -> None:
    import psycopg

    for admin, db in CREATED:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
