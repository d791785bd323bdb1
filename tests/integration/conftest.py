"""PostgreSQL for integration tests, in any environment.

The server is ``DATABASE_URL`` when set, else an embedded one (pgserver)
started for the session. The migrations run once, into a template database;
each test gets a fresh clone of it (``CREATE DATABASE ... TEMPLATE``), so
every test starts from a clean, migrated schema and none sees another's rows.
All names carry the pid and a random part, so concurrent runs on one server
never collide.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.postgres import migrations
from adapters.postgres.embedded import EmbeddedPostgres
from adapters.postgres.pool import Database

from .pgutil import (
    connect_admin,
    create_database,
    drop_database,
    unique_dbname,
    url_with_dbname,
)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A URL to a PostgreSQL server's maintenance database."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    # A short path: the unix socket lives in it and must stay under ~100 bytes.
    directory = Path(tempfile.mkdtemp(prefix="gmpg"))
    server = EmbeddedPostgres(directory)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin(pg_server_url: str) -> Iterator[psycopg.Connection[Any]]:
    """One autocommit connection for creating and dropping databases."""
    with connect_admin(pg_server_url) as conn:
        yield conn


@pytest.fixture(scope="session")
def template_database(pg_server_url: str, pg_admin: psycopg.Connection[Any]) -> Iterator[str]:
    """The name of a migrated database to clone; nothing ever connects to it after."""
    name = unique_dbname("gemini_template")
    create_database(pg_admin, name)
    try:
        migrations.apply(url_with_dbname(pg_server_url, name))
        yield name
    finally:
        drop_database(pg_admin, name)


@pytest.fixture
def database_url(
    pg_server_url: str, pg_admin: psycopg.Connection[Any], template_database: str
) -> Iterator[str]:
    """A URL to a fresh, migrated database of this test's own."""
    name = unique_dbname("gemini_test")
    create_database(pg_admin, name, template=template_database)
    try:
        yield url_with_dbname(pg_server_url, name)
    finally:
        drop_database(pg_admin, name)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """An open pool on this test's database."""
    db = Database(database_url, min_size=1, max_size=5)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


# Fixtures defined beside their helpers, offered to every integration test.
from .api import api  # noqa: E402, F401
from .smtp import smtp_server  # noqa: E402, F401
