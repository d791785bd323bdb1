"""Logging set-up for the server process."""

from __future__ import annotations

import logging.config

from web.settings import Settings


def configure_logging(settings: Settings) -> None:
    """Readable lines on stderr; production formats arrive with the operations work."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "console": {
                    "format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                    "datefmt": "%H:%M:%S",
                }
            },
            "handlers": {
                "stderr": {"class": "logging.StreamHandler", "formatter": "console"},
            },
            "root": {"level": settings.log_level, "handlers": ["stderr"]},
            "loggers": {
                # Their INFO lines are noise at our INFO.
                "psycopg.pool": {"level": "WARNING"},
                "pgserver": {"level": "WARNING"},
                "yoyo": {"level": "WARNING"},
            },
        }
    )
