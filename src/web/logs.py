"""Logging for the server process: readable lines in development, JSON lines
and rotating files in production.

Every record of a request carries its ``request_id`` and, once the caller is
authenticated, its ``user_id``: the request middleware and the principal
provider set two context variables, and a filter copies them onto each record.

Production writes ``LOG_DIR/app.log`` (every record at ``LOG_LEVEL``) and
``LOG_DIR/error.log`` (errors only), both rotated at 10 MB with 5 backups, and
warnings and errors to stderr for the service manager's journal.

Several worker processes write the same files. ``RotatingFileHandler`` alone
is not safe for that: two processes would each rotate, and one would keep
writing into a renamed file. So each write, and each rotation, happens under an
``fcntl.flock`` on a lock file next to the log, and a writer that finds the
file rotated under it reopens it first. The writing itself happens on a
thread of each process (``QueueHandler`` + ``QueueListener``), so the event
loop never waits on the disk or on another worker's lock.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import logging.handlers
import multiprocessing.util
import os
import queue
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import msgspec

from web.settings import Settings

__all__ = [
    "ConsoleFormatter",
    "JsonFormatter",
    "LockedRotatingFileHandler",
    "RequestContext",
    "RequestContextFilter",
    "bind_user",
    "configure_logging",
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


_STANDARD_ATTRIBUTES = frozenset(
    {
        *logging.makeLogRecord({}).__dict__,
        "message",
        "asctime",
        "taskName",
        "request_id",
        "user_id",
    }
)


def _extras(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
    for key, value in record.__dict__.items():
        if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
            yield key, value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: the original guide's fields, the request's id
    and user, any ``extra`` fields, and the stack trace when there is one."""

    def __init__(self) -> None:
        super().__init__()
        self._encoder = msgspec.json.Encoder(enc_hook=str)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "module": record.module,
            "function": record.funcName,
            "line": record.lineno,
            "request_id": getattr(record, "request_id", None),
            "user_id": getattr(record, "user_id", None),
        }
        entry.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return self._encoder.encode(entry).decode()


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


class LockedRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A ``RotatingFileHandler`` that several processes may share.

    Each write takes an exclusive ``flock`` on ``<file>.lock``; under it the
    handler reopens the file if another process rotated it, rotates it itself
    when the next line would pass ``maxBytes``, and appends the line.
    """

    def __init__(self, filename: Path, *, max_bytes: int, backup_count: int) -> None:
        super().__init__(
            filename, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8", delay=True
        )
        self._lock_path = f"{self.baseFilename}.lock"
        self._lock_fd: int | None = None

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _current_stream(self) -> TextIO:
        """The open file, reopened when it is no longer the file at our path."""
        stream: TextIO | None = self.stream
        if stream is not None:
            try:
                on_disk = os.stat(self.baseFilename)
                ours = os.fstat(stream.fileno())
                if (on_disk.st_dev, on_disk.st_ino) == (ours.st_dev, ours.st_ino):
                    return stream
            except FileNotFoundError:
                pass
            stream.close()
        self.stream = stream = self._open()
        return stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            with self._file_lock():
                stream = self._current_stream()
                size = os.fstat(stream.fileno()).st_size
                # Characters, not bytes: close enough for a rotation threshold.
                if self.maxBytes and size and size + len(line) > self.maxBytes:
                    self.doRollover()  # closes, renames the backups, leaves no file open
                    stream = self._current_stream()
                stream.write(line)
                stream.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        super().close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands records to this process's writer thread, with the message and any
    stack trace rendered here (the arguments may not outlive the call) but not
    yet formatted, so each output formats them its own way."""

    _traceback = logging.Formatter()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        prepared = logging.makeLogRecord(record.__dict__)
        prepared.msg = record.getMessage()
        prepared.args = None
        if record.exc_info:
            prepared.exc_text = record.exc_text or self._traceback.formatException(record.exc_info)
            prepared.exc_info = None
        return prepared


class _State:
    """What ``configure_logging`` set up in this process."""

    handler: logging.Handler | None = None
    listener: logging.handlers.QueueListener | None = None
    pid: int = 0
    paused: bool = False
    hooks_pid: int = 0
    fork_hooks_pid: int = 0


def _stop_listener() -> None:
    listener, _State.listener = _State.listener, None
    paused, _State.paused = _State.paused, False
    # A forked worker inherits the object but not the thread: leave it be.
    if listener is not None and _State.pid == os.getpid():
        if not paused:
            listener.stop()  # drains the queue
        for handler in listener.handlers:
            handler.close()


def _pause_listener() -> None:
    """Before a fork: no writer thread may hold a lock (a file's, stderr's)
    that the child would inherit held."""
    listener = _State.listener
    if listener is not None and _State.pid == os.getpid() and not _State.paused:
        listener.stop()
        _State.paused = True


def _resume_listener() -> None:
    if _State.paused and _State.listener is not None:
        _State.listener.start()
    _State.paused = False


def _install_process_hooks() -> None:
    """Drain the writer thread at exit (atexit in the main process, the
    multiprocessing finaliser in worker processes, which leave by ``os._exit``)
    and pause it around forks (granian forks its workers)."""
    if _State.hooks_pid == os.getpid():
        return
    _State.hooks_pid = os.getpid()
    atexit.register(_stop_listener)
    multiprocessing.util.Finalize(None, _stop_listener, exitpriority=10)
    if _State.fork_hooks_pid == 0:  # inherited by children: register once
        os.register_at_fork(before=_pause_listener, after_in_parent=_resume_listener)
        _State.fork_hooks_pid = os.getpid()


def _file_handlers(settings: Settings, formatter: logging.Formatter) -> list[logging.Handler]:
    log_dir = settings.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    app_log = LockedRotatingFileHandler(
        log_dir / "app.log", max_bytes=ROTATE_BYTES, backup_count=BACKUPS
    )
    error_log = LockedRotatingFileHandler(
        log_dir / "error.log", max_bytes=ROTATE_BYTES, backup_count=BACKUPS
    )
    error_log.setLevel(logging.ERROR)
    for handler in (app_log, error_log):
        handler.setFormatter(formatter)
    return [app_log, error_log]


def configure_logging(settings: Settings) -> None:
    """Set up this process's logging from the settings; safe to call again
    (each call replaces what the last one set up)."""
    _stop_listener()
    json = settings.log_format == "json"
    colour = not json and sys.stderr.isatty() and "NO_COLOR" not in os.environ
    formatter = JsonFormatter() if json else ConsoleFormatter(colour=colour)

    # No output shows thread or process names; not looking them up halves
    # the cost of a record (one access record per request adds up).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    if _State.handler is not None:
        root.removeHandler(_State.handler)  # ours only: a test's capture stays
        _State.handler.close()
    root.setLevel(settings.log_level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("_granian", "granian.access"):  # through our handlers, not to stdout
        granian = logging.getLogger(name)
        granian.handlers.clear()
        granian.propagate = True

    problem: OSError | None = None
    files: list[logging.Handler] = []
    if settings.is_production:
        try:
            files = _file_handlers(settings, formatter)
        except OSError as exc:
            problem = exc
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(formatter)
    # Handlers filter by level too: a logger may be set lower than LOG_LEVEL
    # for another listener of its records (the metrics of "gemini.llm").
    level = logging.getLevelName(settings.log_level)
    stderr.setLevel(max(level, logging.WARNING) if files else level)
    entry: logging.Handler = stderr
    if files:
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        listener = logging.handlers.QueueListener(
            records, *files, stderr, respect_handler_level=True
        )
        entry = _QueueHandler(records)
        entry.setLevel(level)
        listener.start()
        _State.listener, _State.pid = listener, os.getpid()
        _install_process_hooks()
    entry.addFilter(RequestContextFilter())
    root.addHandler(entry)
    _State.handler = entry
    if problem is not None:
        logging.getLogger(__name__).warning(
            "cannot write log files in %s (%s); logging to stderr only",
            settings.log_dir,
            problem.strerror or problem,
        )
