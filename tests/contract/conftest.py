"""The contract tests run against the real server process (``live.py``) on a
fresh, migrated PostgreSQL database: the integration tests' fixtures, one
server per session (``DATABASE_URL``, else an embedded one), a template
migrated once and a clone for each test."""

from tests.integration.conftest import (  # noqa: F401
    database_url,
    pg_admin,
    pg_server_url,
    template_database,
)
from tests.integration.smtp import smtp_server  # noqa: F401

from .live import live_server  # noqa: F401
