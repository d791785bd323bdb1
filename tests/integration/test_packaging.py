"""The project as a user installs it (issue 10): a wheel, installed with pip
(not editable) into a fresh virtual environment, whose ``gemini-backend``
command migrates a new database and serves, run from outside the checkout so
nothing can come from the source tree. And the lock files: they must still
satisfy the ranges in pyproject.toml.

For speed, the fresh environment borrows this one's third-party packages (one
``.pth`` line) instead of downloading them. The wheel goes in first, alone, and
its own directory comes first on ``sys.path``, so what runs is what it ships.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .pgutil import create_database, drop_database, unique_dbname, url_with_dbname
from .server import free_port

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
MIGRATIONS = ROOT / "migrations"
# What a build reads: the metadata, the readme it names, the code and the SQL.
BUILD_INPUTS = ("pyproject.toml", "README.md", "src", "migrations")


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def migration_ids() -> list[str]:
    return sorted(
        path.name.removesuffix(".sql")
        for path in MIGRATIONS.glob("*.sql")
        if not path.name.endswith(".rollback.sql")
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy: a build writes build/ and *.egg-info into the
    tree it builds, which would litter the checkout and race other test runs."""
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(ROOT / name, source / name, ignore=skip)
        else:
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", out, source)
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed, not editable."""
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--no-deps", "--quiet", wheel)
    site_packages = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    # Lines of a .pth file go on sys.path after the venv's own site-packages,
    # and the .pth files inside them are not run: this environment's editable
    # hook, which would import the checkout, stays off.
    borrowed = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    Path(site_packages.strip(), "_borrowed_dependencies.pth").write_text("\n".join(borrowed) + "\n")
    return venv


@pytest.fixture
def empty_database_url(pg_server_url: str, pg_admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A database of this test's own, with no schema at all."""
    name = unique_dbname("gemini_packaging")
    create_database(pg_admin, name)
    try:
        yield url_with_dbname(pg_server_url, name)
    finally:
        drop_database(pg_admin, name)


def test_the_wheel_ships_every_source_file_and_migration(wheel: Path) -> None:
    expected = {
        path.relative_to(SRC).as_posix()
        for path in SRC.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and not any(part.endswith(".egg-info") for part in path.relative_to(SRC).parts)
    } | {f"gemini_migrations/{path.name}" for path in MIGRATIONS.glob("*.sql")}
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    missing = sorted(expected - shipped)
    assert not missing, (
        f"not in the wheel: {missing}; list a new subpackage under [tool.setuptools] "
        "packages in pyproject.toml, and data files under package-data"
    )


@pytest.mark.postgres
def test_the_installed_wheel_migrates_and_serves(
    venv: Path, empty_database_url: str, tmp_path: Path
) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POSTGRES_", "DATABASE_", "PYTHON"))
    }
    env.update(DATABASE_URL=empty_database_url, DATA_DIR=str(tmp_path), HOST="127.0.0.1")
    command = venv / "bin" / "gemini-backend"

    where = run(
        venv / "bin" / "python",
        "-c",
        "import web, adapters.postgres.migrations as m; print(web.__file__);"
        " print(m.migrations_directory())",
        cwd=tmp_path,
        env=env,
    )
    for path in where.split():
        assert Path(path).is_relative_to(venv), f"{path} is not the installed copy"

    every = migration_ids()
    assert every
    status = run(command, "migrate", "status", cwd=tmp_path, env=env).splitlines()
    assert status == [f"pending  {migration}" for migration in every]
    applied = run(command, "migrate", "apply", cwd=tmp_path, env=env).splitlines()
    assert applied == [f"applied: {', '.join(every)}"]
    status = run(command, "migrate", "status", cwd=tmp_path, env=env).splitlines()
    assert status == [f"applied  {migration}" for migration in every]

    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [command, "serve"],
            cwd=tmp_path,
            env={**env, "PORT": str(port), "WORKERS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # a group of its own, so its worker goes with it
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"serve exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no /health within 60 s:\n{log.read_text()}"
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            break
        assert health.status_code == 200, health.text
        assert health.json()["services"]["database"]["status"] == "healthy"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def locked_versions(lock: Path) -> dict[str, list[str]]:
    """Each package pinned in ``lock`` whose marker holds here, and its versions."""
    pins: dict[str, list[str]] = {}
    for line in lock.read_text().splitlines():
        if not line[:1].isalnum():
            continue  # hashes, comments and "# via" notes
        pin = Requirement(line.rstrip(" \\"))
        if pin.marker is None or pin.marker.evaluate():
            (version,) = (spec.version for spec in pin.specifier)
            pins.setdefault(canonicalize_name(pin.name), []).append(version)
    return pins


@pytest.mark.parametrize(
    ("lock", "extras"), [("requirements.lock", ()), ("requirements-dev.lock", ("dev",))]
)
def test_the_locks_satisfy_pyproject(lock: str, extras: tuple[str, ...]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    pins = locked_versions(ROOT / lock)
    for line in wanted:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        versions = pins.get(canonicalize_name(requirement.name), [])
        assert len(versions) == 1, f"{lock} pins {requirement.name} {versions}: run make lock"
        assert requirement.specifier.contains(versions[0], prereleases=True), (
            f"{lock} pins {requirement.name}=={versions[0]}, outside {requirement.specifier}:"
            " run make lock"
        )
