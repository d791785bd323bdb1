"""The ``gemini-backend`` command: ``serve``, ``migrate`` and ``check``.

Settings are read once here; bad ones stop the command with exit status 2 and
one line for each, naming its variable.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from collections.abc import Sequence

from web import composition
from web.logs import configure_logging
from web.metrics import multiprocess_directory
from web.settings import Settings, SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemini-backend", description="Backend of a Gemini-style AI chat application."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the HTTP API with granian")
    serve.add_argument("--host", help="address to listen on (default: HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default: PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (default: WORKERS)")
    serve.add_argument("--reload", action="store_true", help="restart on code changes")

    migrate = commands.add_parser("migrate", help="apply, roll back or list schema migrations")
    migrate.add_argument("action", choices=["apply", "rollback", "status"])
    migrate.add_argument("--count", type=int, default=1, help="migrations to roll back")

    commands.add_parser("check", help="validate the settings and reach the database")
    return parser


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    workers = args.workers or settings.workers
    # Set up before any worker starts: each picks its metrics store at start-up.
    with multiprocess_directory(workers), composition.database_url(settings) as url:
        # Migrate once here, then hand the URL to every worker, so the embedded
        # server belongs to this process and workers never race to start it.
        composition.migrate(url, "apply")
        os.environ["DATABASE_URL"] = url
        Server(
            "web.app:create_app",
            factory=True,
            interface=Interfaces.ASGI,
            loop=Loops.auto,  # uvloop where it is installed (Linux, macOS)
            address=args.host or settings.host,
            port=args.port or settings.port,
            workers=workers,
            reload=args.reload,
            respawn_failed_workers=not args.reload,
            workers_kill_timeout=max(1, math.ceil(settings.shutdown_timeout_seconds)),
            log_access=False,
        ).serve()
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    with composition.database_url(settings) as url:
        if args.action == "status":
            for migration_id, applied in composition.migration_status(url):
                print(f"{'applied' if applied else 'pending'}  {migration_id}")
            return 0
        touched = composition.migrate(url, args.action, args.count)
    verb = "applied" if args.action == "apply" else "rolled back"
    print(f"{verb}: {', '.join(touched)}" if touched else f"nothing to do ({args.action})")
    return 0


def _check(settings: Settings) -> int:
    with composition.database_url(settings) as url:
        ok = asyncio.run(composition.check_database(url))
    print("settings: ok")
    print(f"database: {'ok' if ok else 'unreachable'}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        for error in exc.errors:
            print(f"gemini-backend: invalid setting: {error}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if args.command == "serve":
        return _serve(settings, args)
    if args.command == "migrate":
        return _migrate(settings, args)
    return _check(settings)


if __name__ == "__main__":
    sys.exit(main())
