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

The files are written by a thread of each process (``LogFileWriter``): the
request only queues its records, and the thread writes whatever queued up
meanwhile under one lock, with one rollover check and one ``write``. Taking
the lock and checking for a rotation for every line cost more than half of a
simple request. The thread starts at the first record in each process, so a
forked worker starts its own and never shares one (or its lock) with the
process it was forked from; ``flush_logs`` waits until everything queued is
written, and the files are flushed at exit.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# portalocker, which concurrent-log-handler locks the files with, loads its
# Redis lock, and so the whole Redis client (6 MB a process), whenever redis is
# installed. Only its file locks are used here: its Redis lock is marked
# missing, as if that optional part were not installed, which it allows for.
sys.modules.setdefault("portalocker.redis", None)  # type: ignore[arg-type]

from concurrent_log_handler import ConcurrentRotatingFileHandler  # noqa: E402
from pythonjsonlogger.msgspec import MsgspecFormatter  # noqa: E402

from web.settings import Settings  # noqa: E402

__all__ = [
    "ConsoleFormatter",
    "JsonFormatter",
    "LogFileWriter",
    "RequestContext",
    "RequestContextFilter",
    "bind_user",
    "configure_logging",
    "flush_logs",
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
_FILES, _STDERR = "gemini.log_files", "gemini.stderr"
_OURS = frozenset({_FILES, _STDERR})


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


class RotatingLogFile(ConcurrentRotatingFileHandler):
    """A rotating log file that several processes may write at once, written a
    batch of records at a time (``write``)."""

    def reopened(self) -> RotatingLogFile:
        """The same file for a forked process: its locks may have been held by a
        thread of the process it was forked from, which the fork did not copy."""
        again = RotatingLogFile(
            self.baseFilename,
            maxBytes=self.maxBytes,
            backupCount=self.backupCount,
            encoding=self.encoding,
        )
        again.setLevel(self.level)
        again.setFormatter(self.formatter)
        return again

    def write(self, lines: Sequence[str]) -> None:
        """Formatted records, under one lock: one check for a rotation and one
        ``write`` for all of them."""
        if not lines:
            return
        try:
            self._do_lock()
            try:
                self._check_stream()
                if self._shouldRollover():
                    self.doRollover()
                self.do_write(self.terminator.join(lines))
            finally:
                self._do_unlock()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": lines[0]}))


_FLUSHED = object()  # tells the writer it may stop


class LogFileWriter(logging.Handler):
    """Takes records on any thread and has a thread of this process write them
    to ``files`` in batches. The record is filtered (the request's context)
    and formatted on the thread that logs: the writer only takes the locks and
    writes, which waits on the disk rather than holding the interpreter, so it
    does not slow the event loop."""

    def __init__(
        self, files: Sequence[RotatingLogFile], *, batch: int = 1000, linger: float = 0.02
    ) -> None:
        super().__init__(min(f.level for f in files))
        self._files = tuple(files)
        self._batch = batch
        self._linger = linger
        self._pid = -1
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._started().put((record.levelno, line))

    def _started(self) -> queue.SimpleQueue[object]:
        """This process's queue, its writer started (a fork starts afresh)."""
        if self._pid != os.getpid():
            assert self.lock is not None  # made by Handler.__init__
            with self.lock:
                if self._pid != os.getpid():
                    if self._pid != -1:  # forked: the files' locks may be held
                        self._files = tuple(file.reopened() for file in self._files)
                    self._queue = queue.SimpleQueue()
                    self._thread = threading.Thread(
                        target=self._write_all, name="gemini-log-writer", daemon=True
                    )
                    self._thread.start()
                    self._pid = os.getpid()
        return self._queue

    def _write_all(self) -> None:
        waiting = self._queue
        while True:
            batch = [waiting.get()]
            while len(batch) < self._batch:
                try:
                    batch.append(waiting.get_nowait())
                except queue.Empty:
                    break
            lines = [item for item in batch if isinstance(item, tuple)]
            if lines:
                for file in self._files:
                    file.write([line for level, line in lines if level >= file.level])
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()
            if _FLUSHED in batch:
                return
            if len(batch) < self._batch:
                # Let records gather: a wake-up per record would take the
                # interpreter from the event loop hundreds of times a second.
                time.sleep(self._linger)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (at most ``timeout`` seconds) until what is queued is written."""
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            written = threading.Event()
            self._queue.put(written)
            written.wait(timeout)

    def close(self) -> None:
        """Write what is queued, stop the writer, close the files; in a process
        forked from the one that wrote them, leave them to that one."""
        if self._pid == os.getpid():
            if self._thread is not None and self._thread.is_alive():
                self._queue.put(_FLUSHED)
                self._thread.join(5.0)
            for file in self._files:
                file.close()
        elif self._pid == -1:  # never written
            for file in self._files:
                file.close()
        super().close()


def flush_logs() -> None:
    """Wait until the log files hold every record logged so far (tests read them)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LogFileWriter):
            handler.flush()


def log_file(
    path: Path, *, max_bytes: int = ROTATE_BYTES, backups: int = BACKUPS
) -> RotatingLogFile:
    """A rotating log file that several processes may write at once.

    Raises ``OSError`` now, rather than at the first record, when the file
    cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8"):
        pass
    return RotatingLogFile(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")


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
    json = settings.log_format == "json"
    colour = not json and sys.stderr.isatty() and "NO_COLOR" not in os.environ
    formatter = JsonFormatter() if json else ConsoleFormatter(colour=colour)
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
            handlers = {_FILES: LogFileWriter([app_log, error_log])}
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(max(level, logging.WARNING) if handlers else level)
    handlers[_STDERR] = stderr

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
