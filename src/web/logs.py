"""Logging for the server process: readable lines in development, JSON lines
and rotating files in production.

Every record of a request carries its ``request_id`` and, once the caller is
authenticated, its ``user_id``: the request middleware and the principal
provider set a context variable, and a filter copies it onto each record.

Production writes ``LOG_DIR/app.log`` (every record at ``LOG_LEVEL``) and
``LOG_DIR/error.log`` (errors only), both rotated at 10 MB with 5 backups, and
warnings and errors to stderr for the service manager's journal.

The libraries do the hard parts. python-json-logger formats the lines (with
msgspec, under the guide's field names). concurrent-log-handler writes the
files: several worker processes share them, and ``RotatingFileHandler`` alone
would let two of them rotate at once, or one keep writing into a renamed file.
It takes a lock on a file next to each log (``.__app.lock``) around every write
and rotation, and reopens the log when another process rotated it.

Records are written on the thread that logs them. Under the lock that is a
``write`` to the page cache, so no writer thread is needed. Without one, a
forked worker cannot inherit a lock held by a thread that it does not have.
"""

from __future__ import annotations

import logging
import os
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from concurrent_log_handler import ConcurrentRotatingFileHandler
from pythonjsonlogger.msgspec import MsgspecFormatter

from web.settings import Settings

__all__ = [
    "ConsoleFormatter",
    "JsonFormatter",
    "RequestContext",
    "RequestContextFilter",
    "bind_user",
    "configure_logging",
    "log_file",
    "request_context",
]


@dataclass(slots=True)
class RequestContext:
    """What the log records of one request share. Mutable, and shared rather
    than copied: Litestar may resolve dependencies in tasks of their own, whose
    context variables are copies, and the user is named in one of them."""

    request_id: str
    user_id: int | None = None


request_context: ContextVar[RequestContext | None] = ContextVar("request_context", default=None)

ROTATE_BYTES = 10 * 1024 * 1024
BACKUPS = 5

# Libraries whose INFO lines are noise at our INFO.
_QUIET = ("psycopg.pool", "pgserver", "yoyo", "httpx", "httpx2", "httpcore", "google_genai")

# The names of the root handlers configure_logging adds, so that a later call
# replaces them and leaves any other handler (a test's capture) in place.
_APP_LOG, _ERROR_LOG, _STDERR = "gemini.app_log", "gemini.error_log", "gemini.stderr"
_OURS = frozenset({_APP_LOG, _ERROR_LOG, _STDERR})


def bind_user(user_id: int) -> None:
    """Name the authenticated user on every later record of this request."""
    context = request_context.get()
    if context is not None:
        context.user_id = user_id


class RequestContextFilter(logging.Filter):
    """Copies the request's id and user onto the record (an explicit
    ``extra={"user_id": ...}`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = request_context.get()
        attributes = record.__dict__
        if "request_id" not in attributes:
            attributes["request_id"] = context.request_id if context else None
        if "user_id" not in attributes:
            attributes["user_id"] = context.user_id if context else None
        return True


class JsonFormatter(MsgspecFormatter):
    """One JSON object per line: the original guide's fields, the request's id
    and user, any ``extra`` fields, and the stack trace (``exception``) when
    there is one."""

    def __init__(self) -> None:
        super().__init__(
            [
                *("asctime", "levelname", "name", "message"),
                *("module", "funcName", "lineno", "request_id", "user_id"),
            ],
            rename_fields={
                "asctime": "timestamp",
                "levelname": "level",
                "name": "logger",
                "funcName": "function",
                "lineno": "line",
                "exc_info": "exception",
                "stack_info": "stack",
            },
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """UTC with milliseconds, as the guide shows: ``2024-01-01T12:00:00.000Z``."""
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_COLOURS = {
    logging.DEBUG: "\x1b[2m",
    logging.INFO: "\x1b[32m",
    logging.WARNING: "\x1b[33m",
    logging.ERROR: "\x1b[31m",
    logging.CRITICAL: "\x1b[1;31m",
}
_DIM, _RESET = "\x1b[2m", "\x1b[0m"


class ConsoleFormatter(logging.Formatter):
    """``12:00:00 INFO    gemini.access [request id] message``, coloured on a terminal."""

    def __init__(self, *, colour: bool) -> None:
        super().__init__(datefmt="%H:%M:%S")
        self._colour = colour

    def format(self, record: logging.LogRecord) -> str:
        time = self.formatTime(record, self.datefmt)
        level = f"{record.levelname:<7}"
        name = record.name
        request_id = getattr(record, "request_id", None)
        context = f" [{request_id}]" if request_id else ""
        if self._colour:
            colour = _COLOURS.get(record.levelno, "")
            time, level = f"{_DIM}{time}{_RESET}", f"{colour}{level}{_RESET}"
            name, context = f"\x1b[36m{name}{_RESET}", f"{_DIM}{context}{_RESET}"
        line = f"{time} {level} {name}{context}: {record.getMessage()}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def log_file(
    path: Path, *, max_bytes: int = ROTATE_BYTES, backups: int = BACKUPS
) -> ConcurrentRotatingFileHandler:
    """A rotating log file that several processes may write at once.

    Raises ``OSError`` now, rather than at the first record, when the file
    cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8"):
        pass
    return ConcurrentRotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
    )


def configure_logging(settings: Settings) -> None:
    """Set up this process's logging from the settings; safe to call again
    (the CLI calls it, then ``create_app`` in each worker). It keeps no state
    of its own: a later call finds the handlers an earlier one added on the
    root logger, by name, and replaces them."""
    # No output shows thread or process names; not looking them up halves
    # the cost of a record (one access record per request adds up).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if handler.name in _OURS:  # ours only: a test's capture stays
            root.removeHandler(handler)
            handler.close()
    root.setLevel(settings.log_level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("_granian", "granian.access"):  # through our handlers, not to stdout
        granian = logging.getLogger(name)
        granian.handlers.clear()
        granian.propagate = True

    # Handlers filter by level too: a logger may be set lower than LOG_LEVEL
    # for another listener of its records (the metrics of "gemini.llm").
    level = logging.getLevelName(settings.log_level)
    handlers: dict[str, logging.Handler] = {}
    problem: OSError | None = None
    if settings.is_production:
        try:
            app_log = log_file(settings.log_dir / "app.log")
            error_log = log_file(settings.log_dir / "error.log")
        except OSError as exc:
            problem = exc
        else:
            app_log.setLevel(level)
            error_log.setLevel(max(level, logging.ERROR))
            handlers = {_APP_LOG: app_log, _ERROR_LOG: error_log}
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(max(level, logging.WARNING) if handlers else level)
    handlers[_STDERR] = stderr

    json = settings.log_format == "json"
    colour = not json and sys.stderr.isatty() and "NO_COLOR" not in os.environ
    formatter = JsonFormatter() if json else ConsoleFormatter(colour=colour)
    context = RequestContextFilter()
    for name, handler in handlers.items():
        handler.set_name(name)
        handler.setFormatter(formatter)
        handler.addFilter(context)
        root.addHandler(handler)
    if problem is not None:
        logging.getLogger(__name__).warning(
            "cannot write log files in %s (%s); logging to stderr only",
            settings.log_dir,
            problem.strerror or problem,
        )
