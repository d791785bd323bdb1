"""The embedded PostgreSQL: a real server from the ``pgserver`` package, for
running with no database configured.

Its files live in the directory given (``<DATA_DIR>/postgres``) and are kept
across restarts; the server is started with the application and stopped with
it. Only ever used when no database URL is configured.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Start with ``start()`` (returns the URL), stop with ``stop()``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self._server: Any = None

    def start(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # pgserver asks platformdirs for a runtime directory it never
            # uses for our data; most containers do not set XDG_RUNTIME_DIR.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            # Imported lazily: a configured database never loads it.
            from pgserver.postgres_server import get_server

            # "stop" shuts the server down when the last process using it lets
            # go, and keeps the data directory.
            self._server = get_server(self.directory, cleanup_mode="stop")
        url: str = self._server.get_uri()
        log.info("embedded PostgreSQL: data in %s", self.directory)
        return url

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
