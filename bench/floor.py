"""The framework's floor: a bare Litestar app on msgspec with one GET route that
returns a constant small JSON body, served by granian exactly as ``gemini-backend
serve`` serves the real app (``web.cli._serve``: ASGI, ``Loops.auto``, no access
log, a factory). What the real app's routes reach is measured against it.

    python bench/floor.py PORT [WORKERS]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import msgspec
from litestar import Litestar, get

# What gemini-backend serve passes as workers_kill_timeout by default
# (SHUTDOWN_TIMEOUT_SECONDS): kept equal so the two servers differ only in the app.
SHUTDOWN_TIMEOUT_SECONDS = 30.0


class Floor(msgspec.Struct):
    status: str
    service: str


FLOOR = Floor(status="ok", service="floor")


@get("/")
async def floor() -> Floor:
    return FLOOR


def create_app() -> Litestar:
    return Litestar(route_handlers=[floor], openapi_config=None)


def serve(port: int, workers: int) -> None:
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    Server(
        "floor:create_app",
        factory=True,
        interface=Interfaces.ASGI,
        loop=Loops.auto,
        address="127.0.0.1",
        port=port,
        workers=workers,
        reload=False,
        respawn_failed_workers=True,
        workers_kill_timeout=max(1, math.ceil(SHUTDOWN_TIMEOUT_SECONDS)),
        log_access=False,
    ).serve()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # granian imports "floor"
    serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1)
