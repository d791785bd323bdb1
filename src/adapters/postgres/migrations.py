"""Schema migrations: yoyo SQL files, applied under a PostgreSQL advisory lock so
several workers or hosts starting at once take turns instead of racing.

The files live in the repository's top-level ``migrations/`` directory, which
``pyproject.toml`` maps to the ``gemini_migrations`` package: a wheel ships
them as package data, and an editable install points at the directory itself.
It is a namespace package on purpose: yoyo would read an ``__init__.py`` there
as a migration.

Synchronous (yoyo is); call it from a thread when an event loop is running.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from yoyo import get_backend, read_migrations
from yoyo.migrations import MigrationList

log = logging.getLogger(__name__)

MIGRATIONS_PACKAGE = "gemini_migrations"
# Any constant bigint works; this one spells "gemini" in ASCII.
_LOCK_KEY = 0x67656D696E69


@dataclass(frozen=True, slots=True)
class MigrationState:
    id: str
    applied: bool


class MigrationsNotFoundError(RuntimeError):
    """The SQL migrations are not installed, or their directory holds none."""


def migrations_directory() -> Path:
    """The directory holding the SQL files of the ``gemini_migrations`` package.

    Found through the import system rather than ``importlib.resources``: in an
    editable install the namespace package's path also holds setuptools'
    placeholder entry, which ``resources.files`` rejects on Python 3.11.
    """
    spec = importlib.util.find_spec(MIGRATIONS_PACKAGE)
    locations = (spec.submodule_search_locations or []) if spec is not None else []
    for location in map(Path, locations):
        if location.is_dir():
            return location
    raise MigrationsNotFoundError(
        f"the {MIGRATIONS_PACKAGE} package is not installed; install the project "
        "(pip install . or make run) rather than running it from a bare checkout"
    )


def _read(directory: Path | None) -> MigrationList:
    directory = directory or migrations_directory()
    migrations = read_migrations(str(directory))
    # An empty list would look like "nothing to do" against any database.
    if not migrations:
        raise MigrationsNotFoundError(f"no migrations in {directory}")
    return migrations


def _yoyo_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if scheme not in {"postgres", "postgresql"} or not sep:
        raise ValueError("a PostgreSQL URL must start with postgresql://")
    return f"postgresql+psycopg://{rest}"


@contextmanager
def _advisory_lock(url: str) -> Iterator[None]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def apply(url: str, directory: Path | None = None) -> list[str]:
    """Apply every pending migration; return the ids applied."""
    with _advisory_lock(url):
        backend = get_backend(_yoyo_url(url))
        try:
            migrations = _read(directory)
            with backend.lock():
                pending = backend.to_apply(migrations)
                backend.apply_migrations(pending)
            applied = [m.id for m in pending]
        finally:
            backend.connection.close()
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    return applied


def rollback(url: str, count: int = 1, directory: Path | None = None) -> list[str]:
    """Roll back the ``count`` most recently applied migrations; return their ids."""
    with _advisory_lock(url):
        backend = get_backend(_yoyo_url(url))
        try:
            migrations = _read(directory)
            with backend.lock():
                chosen = backend.to_rollback(migrations)[:count]
                backend.rollback_migrations(chosen)
            rolled_back = [m.id for m in chosen]
        finally:
            backend.connection.close()
    if rolled_back:
        log.info("rolled back migrations: %s", ", ".join(rolled_back))
    return rolled_back


def status(url: str, directory: Path | None = None) -> list[MigrationState]:
    """Every known migration, in order, and whether it is applied."""
    backend = get_backend(_yoyo_url(url))
    try:
        migrations = _read(directory)
        applied = {m.id for m in migrations if backend.is_applied(m)}
    finally:
        backend.connection.close()
    return [MigrationState(id=m.id, applied=m.id in applied) for m in migrations]
