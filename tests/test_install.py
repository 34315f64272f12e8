"""The real install: the wheel built from this tree, installed with its dependencies into a
fresh virtual environment, run from a directory outside the checkout.

No editable install, no PYTHONPATH and no file of the checkout is within reach of the
installed tool: what it runs is what a user gets. The dependencies come from a wheelhouse
packed from this test environment's installed distributions (the same versions, offline:
no registry and no network)."""

from __future__ import annotations

import base64
import email
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from inventory import __version__

from .helpers import HEAD, ROOT

SKIPPED_IN_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def source_files() -> set[str]:
    """What the wheel must carry: every module of the source tree, and the data files."""
    package = ROOT / "inventory"
    found = {p.relative_to(ROOT).as_posix() for p in package.rglob("*.py")}
    found |= {p.relative_to(ROOT).as_posix() for p in package.glob("templates/*.j2")}
    return found | {"inventory/migrations/script.py.mako", "inventory/migrations/README"}


def module_name(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def run(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def build_wheel(out: Path) -> Path:
    """`python -m build` as a packager runs it: the sdist, then the wheel from the unpacked
    sdist (so nothing left in the checkout's build/ can slip in). Without isolation: the
    build backend is this environment's setuptools, and no registry is asked."""
    done = run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)], cwd=out
    )
    # No warning (such as a package "absent from the `packages` configuration"), but the
    # one that PYTHONDONTWRITEBYTECODE brings.
    warnings = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if "warning" in line.lower() and "byte-compiling is disabled" not in line
    ]
    assert warnings == []
    (wheel,) = out.glob("zis_inventory-*.whl")
    return wheel


def requirement_closure(wheel: Path) -> list[metadata.Distribution]:
    """The installed distributions the wheel's Requires-Dist lead to, extras included."""
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        requires = email.message_from_bytes(zf.read(name)).get_all("Requires-Dist") or []
    environment: dict[str, str] = dict(default_environment())
    found: dict[str, metadata.Distribution] = {}
    walked: set[tuple[str, str]] = set()  # (distribution, extra) whose requirements are queued
    todo = [(Requirement(r), "") for r in requires]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**environment, "extra": extra}):
            continue
        key = canonicalize_name(req.name)
        dist = found.setdefault(key, metadata.distribution(req.name))
        assert req.specifier.contains(dist.version, prereleases=True), (str(req), dist.version)
        for wanted in {"", *req.extras} - {e for k, e in walked if k == key}:
            walked.add((key, wanted))
            todo += [(Requirement(line), wanted) for line in dist.requires or []]
    return list(found.values())


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack(dist: metadata.Distribution, into: Path) -> Path:
    """An installed distribution back into a wheel: its files as its RECORD lists them
    (scripts are made anew from entry_points.txt by pip), its tags from its WHEEL file."""
    files = dist.files or []
    (info,) = {f.parts[0] for f in files if f.parts[0].endswith(".dist-info")}
    tags = [
        v.split("-")
        for k, v in email.message_from_string(dist.read_text("WHEEL") or "").items()
        if k == "Tag"
    ]
    assert tags, f"{dist.name}: no Tag in its WHEEL file"
    tag = "-".join(".".join(dict.fromkeys(t[i] for t in tags)) for i in range(3))
    name = canonicalize_name(dist.name).replace("-", "_")
    wheel = into / f"{name}-{dist.version}-{tag}.whl"
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as zf:
        for f in files:
            if f.parts[0] == ".." or "__pycache__" in f.parts:
                continue
            if f.parts[0] == info and f.name in SKIPPED_IN_DIST_INFO:
                continue
            data = Path(str(dist.locate_file(f))).read_bytes()
            zf.writestr(f.as_posix(), data)
            record.append(f"{f.as_posix()},{_digest(data)},{len(data)}")
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


# Run by the commands below rather than imported: __main__ runs the CLI, env.py migrates.
NOT_IMPORTED = {"inventory.__main__", "inventory.migrations.env"}

PROBE = """\
import importlib, json, sys
print(json.dumps({name: importlib.import_module(name).__file__ for name in sys.argv[1:]}))
"""


def test_the_wheel_installs_into_a_fresh_venv_and_runs_outside_the_checkout(
    tmp_path: Path,
) -> None:
    assert not tmp_path.is_relative_to(ROOT)
    dist = tmp_path / "dist"
    dist.mkdir()
    wheel = build_wheel(dist)
    with zipfile.ZipFile(wheel) as zf:
        carried = {n for n in zf.namelist() if n.startswith("inventory/")}
    assert carried == source_files()

    house = tmp_path / "wheelhouse"
    house.mkdir()
    for distribution in requirement_closure(wheel):
        repack(distribution, house)

    # A user's environment: nothing of this test's Python, pip configuration or checkout.
    home = tmp_path / "venv"
    bin_dir = home / "bin"
    path = [p for p in os.environ["PATH"].split(os.pathsep) if not Path(p).is_relative_to(ROOT)]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV", "INVENTORY_"))
    }
    env |= {
        "PATH": os.pathsep.join([str(bin_dir), *path]),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "HOME": str(tmp_path / "home"),
    }
    outside = tmp_path / "outside"
    outside.mkdir()
    run([sys.executable, "-m", "venv", str(home)], cwd=outside, env=env)
    python = str(bin_dir / "python")
    run(
        [python, "-m", "pip", "install", "--no-index", "--find-links", str(house), str(wheel)],
        cwd=outside,
        env=env,
    )

    modules = sorted({module_name(p) for p in carried if p.endswith(".py")} - NOT_IMPORTED)
    loaded = json.loads(run([python, "-c", PROBE, *modules], cwd=outside, env=env).stdout)
    assert sorted(loaded) == modules
    site = Path(
        run(
            [python, "-c", "import inventory; print(inventory.__file__)"], cwd=outside, env=env
        ).stdout.strip()
    ).parent.parent
    assert site.is_relative_to(home)
    assert {n: Path(f).relative_to(site).as_posix() for n, f in loaded.items()} == {
        n: next(p for p in carried if module_name(p) == n) for n in modules
    }

    done = run(["zis-inventory", "--version"], cwd=outside, env=env)
    assert done.stdout == f"zis-inventory, version {__version__}\n"

    run([python, "-m", "inventory", "demo"], cwd=outside, env=env)
    with sqlite3.connect(outside / "demo.db") as conn:
        statuses = set(conn.execute("SELECT DISTINCT run_id, status FROM snapshots"))
    assert statuses == {(1, "complete"), (2, "complete")}

    url = f"sqlite:///{outside / 'inventory.db'}"
    done = run(
        ["zis-inventory", "db", "upgrade"], cwd=outside, env={**env, "INVENTORY_DATABASE_URL": url}
    )
    assert done.stdout == f"{url}: migrated from empty to {HEAD}\n"
    with sqlite3.connect(outside / "inventory.db") as conn:
        assert list(conn.execute("SELECT version_num FROM alembic_version")) == [(HEAD,)]
