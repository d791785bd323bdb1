"""Settings for tests that need production's behaviour without its services."""

from __future__ import annotations

import uuid
from pathlib import Path

from web.settings import Settings, load_settings


def production_settings(tmp_path: Path, **env: str) -> Settings:
    """Production, with a fresh strong key, a mail host that is never called,
    the offline model on purpose, limits off unless ``env`` turns them on."""
    return load_settings(
        environ={
            "ENVIRONMENT": "production",
            "DATA_DIR": str(tmp_path),
            "LOG_DIR": str(tmp_path / "logs"),
            "SECRET_KEY": "k3y-" + uuid.uuid4().hex + uuid.uuid4().hex,
            "SMTP_HOST": "mail.example.com",
            "LLM_PROVIDER": "echo",
            "ALLOWED_HOSTS": "testserver.local",
            # Production refuses to start without a database; tests inject theirs.
            "DATABASE_URL": "postgresql://unused@127.0.0.1:5432/unused",
            "RATE_LIMIT_ENABLED": "false",
            **env,
        },
        env_file=None,
    )
