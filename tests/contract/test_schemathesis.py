"""The OpenAPI document holds against the live server (issue 11).

Schemathesis reads the server's own document and runs every check, on valid
and invalid data, through its examples, coverage, fuzzing and stateful phases,
signed in as a normal user (see ``schemathesis_auth.py``). No operation is
excluded, and one heuristic check is (see ``schemathesis_command``);
``schemathesis.toml`` names the few statuses that count as accepting valid data
where no schema can tell valid from right (a wrong code, an opaque cursor).
Any finding fails the test, with one line per distinct finding, and
schemathesis's full report under "Captured stdout call".

Deterministic: a fixed seed, no example database, one worker (the same cases go
in the same order to a server on a fresh database), and a fresh working
directory, where schemathesis would otherwise keep the failures it found and
replay them first on the next run. ``--continue-on-failure`` lists every
finding, not only the first per operation. Two runs gave the same findings.

Cost: ``CONTRACT_MAX_EXAMPLES`` cases per operation in the fuzzing phase, and
at most as many stateful scenarios; the coverage phase adds its own (dozens an
operation). ``make contract`` (and CI) use 300: about 11,000 cases in 220 to 400 s
on 2 cores. ``POST /chats/{chat_id}/messages`` takes the most: the coverage
phase spends a minute or more drawing a body one character over the 32,000 a
message may hold (py-spy on ``st``), and the offline model answers piece by
piece. ``make test`` uses the default of 100, without the coverage phase
(``CONTRACT_PHASES``), to stay quick. The run is killed
after ``CONTRACT_TIMEOUT`` seconds (420 by default, 900 in ``make contract``).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .live import LiveServer

ST = Path(sys.executable).with_name("st")
HOOKS = Path(__file__).with_name("schemathesis_auth.py")
CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 42
MAX_EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "100"))
# The coverage phase costs minutes whatever the number of examples (see above):
# `make contract` and CI run it; `make test` leaves it to them.
PHASES = os.environ.get("CONTRACT_PHASES", "examples,fuzzing,stateful")
TIMEOUT = int(os.environ.get("CONTRACT_TIMEOUT", "420"))


def schemathesis_command(server: LiveServer, reports: Path) -> list[str]:
    return [
        str(ST),
        "--config-file",
        str(CONFIG),
        "run",
        server.document_url,
        "--url",
        server.base_url,
        "--checks",
        "all",
        # But not this heuristic of the stateful phase: after POST /chats it reads
        # any 404 from POST /chats/{chat_id}/messages as the new chat being gone,
        # where the contract answers 404 for a file or a parent message in the body
        # that is not the caller's. (The settings file cannot turn off a check that
        # --checks all names.) That a created chat is there, tests/integration
        # proves over HTTP.
        "--exclude-checks",
        "ensure_resource_availability",
        "--phases",
        PHASES,
        "--mode",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--continue-on-failure",
        "--no-color",
        "--report",
        "ndjson",
        "--report-dir",
        str(reports),
    ]


@pytest.mark.timeout(TIMEOUT + 120)
def test_the_document_holds_against_the_live_server(
    live_server: LiveServer, tmp_path: Path
) -> None:
    user = live_server.sign_up("fuzzer")
    spare = live_server.sign_up("spare")
    reports = tmp_path / "schemathesis"
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": str(HOOKS),
        "CONTRACT_BASE_URL": live_server.base_url,
        "CONTRACT_USER_EMAIL": user.email,
        "CONTRACT_SPARE_EMAIL": spare.email,
        "CONTRACT_PASSWORD": user.password,
    }
    try:
        run = subprocess.run(
            schemathesis_command(live_server, reports),
            cwd=tmp_path,  # fresh every time, and out of the checkout
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        print(output)
        found = "\n".join(distinct_findings(reports))  # the report is written as it goes
        message = f"schemathesis ran over {TIMEOUT} s (CONTRACT_TIMEOUT); so far:\n{found}"
        pytest.fail(message, pytrace=False)
    print(run.stdout)  # the full report: pytest shows it under the failure
    findings = "\n".join(distinct_findings(reports))
    assert run.returncode == 0, (
        f"schemathesis exited {run.returncode}; its report is under 'Captured stdout call', "
        f"the server's log in {live_server.log}.\n{findings or run.stderr or run.stdout[-3000:]}"
    )


# --- reading the report --------------------------------------------------------------

Finding = tuple[str, str, str]  # operation, check, status
MOST_DETAILS = 5


def distinct_findings(reports: Path) -> Iterator[str]:
    """The run's failures from its NDJSON event stream: a line per operation,
    check and status, with how many cases and the check's reason, then the
    server's distinct ``detail``s (why it answered as it did), the commonest first."""
    reasons: dict[Finding, str] = {}
    details: dict[Finding, Counter[str]] = {}
    errors: list[str] = []
    for path in sorted(reports.glob("*.ndjson")):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if "ScenarioFinished" in event:
                recorder = event["ScenarioFinished"].get("recorder", {})
                for finding, reason, detail in _failures(recorder):
                    reasons.setdefault(finding, reason)
                    details.setdefault(finding, Counter())[detail] += 1
            elif "NonFatalError" in event:
                error = event["NonFatalError"]
                errors.append(f"{error.get('label', '?')}: {str(error.get('value'))[:300]}")
    for finding in sorted(reasons):
        operation, check, status = finding
        count = details[finding].total()
        yield f"{operation:<34} {check:<36} {status:>4} x{count:<4} {reasons[finding]}"
        said = [(n, detail) for detail, n in details[finding].most_common() if detail]
        for n, detail in said[:MOST_DETAILS]:
            yield f"{'':>8}x{n:<4} server: {detail}"
        if len(said) > MOST_DETAILS:
            yield f"{'':>8}... and {len(said) - MOST_DETAILS} more"
    for error in errors:
        yield f"error: {error}"


def _failures(recorder: dict[str, Any]) -> Iterator[tuple[Finding, str, str]]:
    interactions = recorder.get("interactions", {})
    for case_id, checks in recorder.get("checks", {}).items():
        interaction = interactions.get(case_id) or {}
        response = interaction.get("response") or {}
        for check in checks:
            if check.get("status") != "failure":
                continue
            failure = check["failure_info"]["failure"]
            # The request's own method: some checks send one the operation does not have.
            method = (interaction.get("request") or {}).get("method")
            _, _, path = failure.get("operation", recorder.get("label", "? ?")).partition(" ")
            title = f"{failure.get('code', '')} {failure.get('title', check['name'])}".strip()
            lines = failure.get("message", "").splitlines()[:2]
            reason = " / ".join(line for line in lines if line and not line.startswith("Expected:"))
            status = str(response.get("status_code", "-"))
            yield (f"{method} {path}", title, status), reason, _problem_detail(response)


def _problem_detail(response: dict[str, Any]) -> str:
    """The ``detail`` of a problem details body, or ``""`` if there is none."""
    content = response.get("content")
    if not isinstance(content, dict) or "$base64" not in content:
        return ""
    try:
        body = json.loads(base64.b64decode(content["$base64"]))
    except ValueError:
        return ""
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else ""
