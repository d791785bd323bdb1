"""A client generated from the document works (issue 11): openapi-python-client
writes a package from the live server's document into a temporary folder, and a
short flow runs through its functions against that server. Successes come back
as the generated models, and errors as the generated ``Problem``.

``--fail-on-warning``: a part of the document the generator cannot read is left
out of the client, so it fails here rather than in a consumer's hands.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .live import PASSWORD, LiveServer

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PACKAGE = "contract_client"
CONFIG = {
    "content_type_overrides": {
        # 0.29 reads any +json type as JSON by itself; the mapping is for the
        # older releases pyproject.toml allows, and says what is meant.
        "application/problem+json": "application/json",
        # It reads only application/octet-stream as bytes: the uploaded images are.
        **dict.fromkeys(
            ("image/jpeg", "image/png", "image/gif", "image/webp"), "application/octet-stream"
        ),
    },
    # No ruff run over the generated code: it is imported, not kept.
    "post_hooks": [],
}


def generate_client(document: dict[str, Any], folder: Path) -> None:
    """Write the client for ``document`` as the package ``PACKAGE`` in ``folder``."""
    document_file, config_file = folder / "openapi.json", folder / "generator.json"
    document_file.write_text(json.dumps(document))
    config_file.write_text(json.dumps(CONFIG))
    generated = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(document_file),
            "--config",
            str(config_file),
            "--meta",
            "none",  # a bare package: on sys.path, nothing to install
            "--output-path",
            str(folder / PACKAGE),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert generated.returncode == 0, f"the generator failed:\n{generated.stdout}{generated.stderr}"


@pytest.fixture
def importable(tmp_path: Path) -> Iterator[Path]:
    """A folder on ``sys.path`` for the test's duration; what was imported from
    it is forgotten afterwards."""
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def test_a_generated_client_signs_up_chats_and_reads_problems(
    live_server: LiveServer, importable: Path
) -> None:
    generate_client(live_server.document(), importable)
    client_module = importlib.import_module(f"{PACKAGE}.client")
    models = importlib.import_module(f"{PACKAGE}.models")

    def operation(tag: str, name: str) -> ModuleType:
        return importlib.import_module(f"{PACKAGE}.api.{tag}.{name}")

    # Undocumented statuses raise instead of parsing to None.
    anonymous = client_module.Client(base_url=live_server.base_url, raise_on_unexpected_status=True)
    email = "generated@example.com"

    sent = operation("auth", "send_otp").sync_detailed(
        client=anonymous,
        body=models.SendOtpIn(email=email, purpose=models.SendOtpInPurpose.EMAIL_VERIFICATION),
    )
    assert sent.status_code == 202, sent.content

    registered = operation("auth", "register").sync_detailed(
        client=anonymous,
        body=models.RegisterIn(
            email=email,
            otp_code=live_server.smtp.wait_for_code(email),
            user_data=models.UserDataIn(
                email=email, username="generated", password=PASSWORD, full_name="Gen Client"
            ),
        ),
    )
    assert registered.status_code == 201, registered.content
    tokens = registered.parsed
    assert isinstance(tokens, models.TokenPairOut)

    signed_in = client_module.AuthenticatedClient(
        base_url=live_server.base_url,
        token=tokens.access_token,
        headers={"Accept": "application/json"},  # JSON mode: the answer in one 201
        raise_on_unexpected_status=True,
        timeout=30,
    )
    chat = operation("chats", "create_chat").sync(client=signed_in, body=models.NewChatIn())
    assert isinstance(chat, models.ChatOut)

    exchange = operation("chats", "send_message").sync_detailed(
        chat.id, client=signed_in, body=models.NewMessageIn(content="Hello, generated client")
    )
    assert exchange.status_code == 201, exchange.content
    assert isinstance(exchange.parsed, models.ExchangeOut)
    assert isinstance(exchange.parsed.assistant_message, models.MessageOut)
    assert exchange.parsed.user_message.content == "Hello, generated client"
    assert exchange.parsed.assistant_message.content

    page = operation("chats", "list_chats").sync(client=signed_in)
    assert isinstance(page, models.ChatPageOut)
    assert [listed.id for listed in page.items] == [chat.id]

    missing = operation("chats", "get_chat").sync_detailed(999_999, client=signed_in)
    assert missing.status_code == 404, missing.content
    assert isinstance(missing.parsed, models.Problem)
    assert missing.parsed.status == 404

    invalid = operation("chats", "list_chats").sync_detailed(client=signed_in, limit=0)
    assert invalid.status_code == 422, invalid.content
    assert isinstance(invalid.parsed, models.Problem)
    assert invalid.parsed.status == 422
    assert [error.field for error in invalid.parsed.errors] == ["limit"]
