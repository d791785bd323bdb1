"""The core as a library: the example script, run as a user would run it, in
memory and on PostgreSQL, without the web layer ever being imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "library_chat.py"

# Runs the example, then lists what it imported that a library user must not pay for.
RUN_AND_REPORT = f"""
import runpy, sys
runpy.run_path({str(EXAMPLE)!r}, run_name="__main__")
heavy = ("litestar", "web", "google", "prometheus_client", "granian")
print("imported:", sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy)))
"""


def run_example(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "POSTGRES_"))}
    environ.update(env, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_REPORT],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_conversation(output: str) -> None:
    lines = output.splitlines()
    assert lines[0].startswith("signed up ada-")
    assert lines[1].startswith("answer: I am the offline echo model")
    assert "Hello from a script!" in lines[1]
    assert lines[2].startswith("stored as message ")
    assert lines[2].endswith("(complete)")
    assert lines[3] == "imported: []"


def test_the_example_chats_in_memory() -> None:
    check_conversation(run_example())


@pytest.mark.postgres
def test_the_example_chats_on_postgres(database_url: str) -> None:
    check_conversation(run_example(DATABASE_URL=database_url))


def test_the_readme_shows_the_example_as_it_is() -> None:
    code = EXAMPLE.read_text()
    body = code[code.index("import asyncio") :]
    assert body in (ROOT / "README.md").read_text()
