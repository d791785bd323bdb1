"""Logging: JSON lines with the guide's fields in production, written to
rotating files that several processes may share; readable lines otherwise."""

from __future__ import annotations

import json
import logging
import logging.handlers
import multiprocessing
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.config import production_settings
from web.app import create_app
from web.composition import memory_container
from web.logs import (
    ConsoleFormatter,
    JsonFormatter,
    LogFileWriter,
    RequestContext,
    RequestContextFilter,
    configure_logging,
    flush_logs,
    log_file,
    request_context,
)
from web.settings import Settings, load_settings

GUIDE_FIELDS = {"timestamp", "level", "logger", "message", "module", "function", "line"}


@pytest.fixture(autouse=True)
def restore_logging(tmp_path: Path) -> Iterator[None]:
    yield
    # Closes any log file a test opened, and puts plain logging back.
    configure_logging(
        load_settings(environ={"ENVIRONMENT": "test", "DATA_DIR": str(tmp_path)}, env_file=None)
    )


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def make_record(message: str = "hello %s", *args: object, **extra: Any) -> logging.LogRecord:
    return logging.getLogger("gemini.test").makeRecord(
        "gemini.test", logging.INFO, __file__, 42, message, args or ("world",), None, "fn", extra
    )


def test_json_lines_have_the_guides_fields_and_the_extras() -> None:
    record = make_record(event="login_failed", email="a@example.com")
    RequestContextFilter().filter(record)
    entry = json.loads(JsonFormatter().format(record))
    assert set(entry) >= GUIDE_FIELDS
    assert entry["message"] == "hello world"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "gemini.test"
    assert entry["function"] == "fn"
    assert entry["line"] == 42
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["timestamp"])
    assert entry["event"] == "login_failed"
    assert entry["email"] == "a@example.com"
    assert entry["request_id"] is None
    assert entry["user_id"] is None


def test_the_request_context_lands_on_records_but_an_explicit_user_wins() -> None:
    token = request_context.set(RequestContext("req-1", user_id=7))
    try:
        record = make_record()
        explicit = make_record(user_id=99)
        RequestContextFilter().filter(record)
        RequestContextFilter().filter(explicit)
    finally:
        request_context.reset(token)
    assert (record.request_id, record.user_id) == ("req-1", 7)  # type: ignore[attr-defined]
    assert explicit.user_id == 99  # type: ignore[attr-defined]


def test_a_stack_trace_is_one_field_of_one_line() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: bad" in json.loads(line)["exception"]


def test_console_lines_are_coloured_only_when_asked() -> None:
    record = make_record()
    RequestContextFilter().filter(record)
    record.request_id = "abc"  # type: ignore[attr-defined]
    plain = ConsoleFormatter(colour=False).format(record)
    assert "\x1b[" not in plain
    assert plain.endswith("INFO    gemini.test [abc]: hello world")
    assert "\x1b[32m" in ConsoleFormatter(colour=True).format(record)


async def test_production_writes_json_files_with_request_and_user(tmp_path: Path) -> None:
    settings = production_settings(tmp_path)
    container = memory_container(settings)
    await container.accounts.ensure_admin("ann@example.com", "a fine passphrase")
    app = create_app(container)
    async with AsyncTestClient(app, base_url="http://testserver.local") as client:
        wrong = {"email": "ann@example.com", "password": "not the passphrase"}
        assert (await client.post("/auth/login", json=wrong)).status_code == 401
        login = await client.post(
            "/auth/login", json={"email": "ann@example.com", "password": "a fine passphrase"}
        )
        token = login.json()["access_token"]
        me = await client.get(
            "/auth/me", headers={"Authorization": f"Bearer {token}", "X-Request-ID": "trace-me"}
        )
        assert me.status_code == 200
        user_id = me.json()["id"]
        logging.getLogger("gemini.test").error("something broke", extra={"event": "boom"})
    flush_logs()  # a thread writes the files
    app_log = read_json_lines(tmp_path / "logs" / "app.log")
    for entry in app_log:
        assert GUIDE_FIELDS | {"request_id", "user_id"} <= set(entry)
    access = [e for e in app_log if e["logger"] == "gemini.access"]
    assert [e["route"] for e in access] == ["/auth/login", "/auth/login", "/auth/me"]
    me_record = access[2]
    assert me_record["request_id"] == "trace-me"
    assert me_record["user_id"] == user_id
    assert me_record["method"] == "GET"
    assert me_record["status"] == 200
    assert me_record["client"] == "testclient"
    assert isinstance(me_record["duration_ms"], float)
    security = [e for e in app_log if e["logger"] == "gemini.security"]
    assert [e["event"] for e in security] == ["login_failed"]
    assert security[0]["request_id"] == access[0]["request_id"]
    errors = read_json_lines(tmp_path / "logs" / "error.log")
    assert [e["message"] for e in errors] == ["something broke"]
    assert errors[0]["event"] == "boom"


def test_unwritable_log_dir_falls_back_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings = production_settings(tmp_path, LOG_DIR=str(blocker / "logs"))
    configure_logging(settings)  # no exception: the service still starts
    logging.getLogger("gemini.test").info("still logging")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [e["level"] for e in lines] == ["WARNING", "INFO"]
    assert lines[0]["message"].startswith(f"cannot write log files in {blocker / 'logs'}")
    assert lines[1]["message"] == "still logging"  # all of LOG_LEVEL, not just warnings


def _write_lines(path: str, writer: int, count: int) -> None:
    handler = log_file(Path(path), max_bytes=20_000, backups=500)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"writer{writer}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    for n in range(count):
        logger.info("line", extra={"writer": writer, "n": n, "padding": "x" * 50})
    handler.close()


def test_several_processes_share_the_rotating_file_without_losing_a_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.log"
    writers, count = 4, 1500
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_write_lines, args=(str(path), w, count)) for w in range(writers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    files = [path, *tmp_path.glob("app.log.*")]
    assert len(files) > 10, "the test should have rotated many times"
    seen: set[tuple[int, int]] = set()
    for file in files:
        assert file.stat().st_size <= 20_000 + 300
        for entry in read_json_lines(file):  # a torn line would not parse
            seen.add((entry["writer"], entry["n"]))
    assert seen == {(w, n) for w in range(writers) for n in range(count)}


def _log_from_a_forked_worker(settings: Settings) -> None:
    # granian's own lines come through the inherited handlers first.
    logging.getLogger("gemini.child").warning("from the child, as forked")
    configure_logging(settings)  # as create_app does in each granian worker
    logging.getLogger("gemini.child").warning("from the child")
    flush_logs()  # as the app's lifespan does at its end


def test_a_forked_worker_logs_to_the_same_files(tmp_path: Path) -> None:
    settings = production_settings(tmp_path)
    configure_logging(settings)
    logging.getLogger("gemini.parent").warning("before the fork")
    flush_logs()
    child = multiprocessing.get_context("fork").Process(
        target=_log_from_a_forked_worker, args=(settings,)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    logging.getLogger("gemini.parent").warning("after the fork")
    flush_logs()
    messages = [e["message"] for e in read_json_lines(tmp_path / "logs" / "app.log")]
    assert messages == [
        "before the fork",
        "from the child, as forked",
        "from the child",
        "after the fork",
    ]


def test_configuring_again_replaces_our_handlers_and_keeps_others(tmp_path: Path) -> None:
    settings = production_settings(tmp_path)
    root = logging.getLogger()
    capture = logging.handlers.BufferingHandler(capacity=10)
    root.addHandler(capture)
    try:
        configure_logging(settings)
        configure_logging(settings)  # the CLI, then create_app in the same process
        logging.getLogger("gemini.test").warning("once")
        flush_logs()
    finally:
        root.removeHandler(capture)
    assert [record.getMessage() for record in capture.buffer] == ["once"]
    messages = [e["message"] for e in read_json_lines(tmp_path / "logs" / "app.log")]
    assert messages == ["once"]


def test_the_writer_thread_writes_every_record_in_order_and_close_drains_it(
    tmp_path: Path,
) -> None:
    files = [log_file(tmp_path / "app.log"), log_file(tmp_path / "error.log")]
    files[1].setLevel(logging.ERROR)
    writer = LogFileWriter(files, batch=7)
    writer.setFormatter(JsonFormatter())
    logger = logging.getLogger("gemini.batched")
    logger.propagate = False
    logger.addHandler(writer)
    try:
        for n in range(500):
            logger.info("line %d of %s", n, "many", extra={"n": n})
        logger.error("the one error")
        writer.flush()
        lines = read_json_lines(tmp_path / "app.log")
        assert [e["n"] for e in lines[:-1]] == list(range(500))
        assert lines[0]["message"] == "line 0 of many"
        assert [e["message"] for e in read_json_lines(tmp_path / "error.log")] == ["the one error"]
        logger.info("last words")
    finally:
        logger.removeHandler(writer)
        writer.close()
    assert read_json_lines(tmp_path / "app.log")[-1]["message"] == "last words"
