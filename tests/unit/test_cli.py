"""The command line refuses bad settings with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "DATABASE_"))}
    clean.update(env, PYTHONPATH=str(SRC), DATA_DIR=str(tmp_path / "data"))
    return subprocess.run(
        [sys.executable, "-m", "web.cli", *args],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"ENVIRONMENT": "production", "SECRET_KEY": "short"}, "SECRET_KEY"),
        ({"WORKERS": "0"}, "WORKERS"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_the_variable(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    for command in ("serve", "check"):
        result = run_cli(tmp_path, command, **env)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert all(line.startswith("gemini-backend: invalid setting: ") for line in lines)
        assert lines[0].startswith(f"gemini-backend: invalid setting: {variable}: ")
        assert "Traceback" not in result.stderr


def test_every_bad_setting_is_named_at_once_one_line_each(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "check", PORT="abc", WORKERS="0", LOG_LEVEL="loud")

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "gemini-backend: invalid setting: PORT: expected an integer, got 'abc'",
        "gemini-backend: invalid setting: WORKERS: must be at least 1, got '0'",
        "gemini-backend: invalid setting: LOG_LEVEL: expected one of DEBUG, INFO, WARNING, "
        "ERROR, CRITICAL, got 'loud'",
    ]


def test_a_bad_setting_in_the_env_file_is_named_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PORT=99999\n")
    result = run_cli(tmp_path, "check")
    assert result.returncode == 2
    assert "PORT" in result.stderr


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--help")
    assert result.returncode == 0
    for command in ("serve", "migrate", "check"):
        assert command in result.stdout
