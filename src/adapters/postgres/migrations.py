"""Schema migrations: yoyo SQL files in ``<project>/migrations``, applied under a
PostgreSQL advisory lock so several workers or hosts starting at once take
turns instead of racing.

Synchronous (yoyo is); call it from a thread when an event loop is running.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from yoyo import get_backend, read_migrations

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"
# Any constant bigint works; this one spells "gemini" in ASCII.
_LOCK_KEY = 0x67656D696E69


@dataclass(frozen=True, slots=True)
class MigrationState:
    id: str
    applied: bool


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


def apply(url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration; return the ids applied."""
    with _advisory_lock(url):
        backend = get_backend(_yoyo_url(url))
        try:
            migrations = read_migrations(str(directory))
            with backend.lock():
                pending = backend.to_apply(migrations)
                backend.apply_migrations(pending)
            applied = [m.id for m in pending]
        finally:
            backend.connection.close()
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    return applied


def rollback(url: str, count: int = 1, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Roll back the ``count`` most recently applied migrations; return their ids."""
    with _advisory_lock(url):
        backend = get_backend(_yoyo_url(url))
        try:
            migrations = read_migrations(str(directory))
            with backend.lock():
                chosen = backend.to_rollback(migrations)[:count]
                backend.rollback_migrations(chosen)
            rolled_back = [m.id for m in chosen]
        finally:
            backend.connection.close()
    if rolled_back:
        log.info("rolled back migrations: %s", ", ".join(rolled_back))
    return rolled_back


def status(url: str, directory: Path = MIGRATIONS_DIR) -> list[MigrationState]:
    """Every known migration, in order, and whether it is applied."""
    backend = get_backend(_yoyo_url(url))
    try:
        migrations = read_migrations(str(directory))
        applied = {m.id for m in migrations if backend.is_applied(m)}
    finally:
        backend.connection.close()
    return [MigrationState(id=m.id, applied=m.id in applied) for m in migrations]
