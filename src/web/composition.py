"""The composition root of the HTTP layer: settings in, a ``Container`` out.

It turns the settings into the bootstrap's plain ``CoreConfig`` and lets
``adapters.bootstrap`` build the services; what it adds is only what HTTP
needs (the settings themselves, the version, Prometheus for ``/metrics``).
``open_container`` serves on PostgreSQL (embedded when none is configured);
``memory_container`` on in-memory adapters, for tests. The command line's
database chores (migrations, the check) live here too.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from adapters import bootstrap
from adapters.bootstrap import (
    CoreConfig,
    DatabaseConfig,
    LlmConfig,
    LlmModel,
    Services,
    SmtpConfig,
    StorageConfig,
)
from adapters.postgres import migrations
from adapters.postgres.pool import Database
from adapters.prometheus import MeteredCache, PrometheusTelemetry
from adapters.telemetry import FanOutTelemetry, LogTelemetry
from gemini_core.accounts import SessionRules
from gemini_core.chats import ChatRules
from gemini_core.codes import CodeRules
from gemini_core.files import UploadRules
from gemini_core.ports import Cache
from gemini_core.telemetry import Telemetry
from gemini_core.usage import QuotaRules
from web.container import Container
from web.metrics import Metrics
from web.settings import Settings

log = logging.getLogger(__name__)


def app_version() -> str:
    try:
        return version("gemini-backend")
    except PackageNotFoundError:
        return "0.0.0"


def core_config(settings: Settings) -> CoreConfig:
    """The settings the services need, as the bootstrap's plain configuration."""
    s = settings
    return CoreConfig(
        secret_key=s.secret_key,
        database=DatabaseConfig(
            url=s.resolved_database_url,
            embedded_dir=s.embedded_database_dir,
            pool_min_size=s.db_pool_min_size,
            pool_max_size=s.db_pool_max_size,
            pool_timeout_seconds=s.db_pool_timeout_seconds,
            connect_timeout_seconds=s.db_connect_timeout_seconds,
        ),
        smtp=None
        if s.smtp_host is None
        else SmtpConfig(
            host=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password,
            security=s.smtp_security,
            from_email=s.from_email,
        ),
        llm=LlmConfig(
            provider=s.llm_provider,
            models=tuple(LlmModel(offer.id, offer.provider) for offer in s.models),
            google_api_key=s.google_api_key,
            gemini_base_url=s.gemini_base_url,
            openai_base_url=s.openai_base_url,
            openai_api_key=s.openai_api_key,
        ),
        storage=StorageConfig(
            backend=s.storage_backend,
            upload_dir=s.upload_dir,
            s3_bucket=s.s3_bucket,
            s3_endpoint_url=s.s3_endpoint_url,
            s3_region=s.s3_region,
            aws_access_key_id=s.aws_access_key_id,
            aws_secret_access_key=s.aws_secret_access_key,
        ),
        redis_url=s.redis_url,
        chats=ChatRules(
            models=tuple(offer.id for offer in s.models),
            max_history_messages=s.llm_max_history_messages,
            timeout_seconds=s.llm_timeout_seconds,
            # The offline model would only echo the request for a title back.
            model_titles=s.llm_provider != "echo",
            shutdown_grace_seconds=s.shutdown_timeout_seconds / 4,
            max_running_per_user=s.max_running_answers_per_user,
        ),
        codes=CodeRules(
            ttl_seconds=s.otp_ttl_seconds,
            max_attempts=s.otp_max_attempts,
            resend_cooldown_seconds=s.otp_resend_cooldown_seconds,
            max_per_hour=s.otp_max_per_hour,
        ),
        sessions=SessionRules(
            access_token_ttl=timedelta(minutes=s.access_token_expire_minutes),
            refresh_token_ttl=timedelta(days=s.refresh_token_expire_days),
        ),
        uploads=UploadRules(max_size=s.max_upload_size, quota_bytes=s.upload_quota_bytes),
        quotas=QuotaRules(daily_tokens=s.daily_token_quota, daily_messages=s.daily_message_quota),
        admin_email=s.admin_email,
        admin_password=s.admin_password,
    )


def answer_grace_seconds(settings: Settings) -> float:
    """How long answers still streaming may go on after a stop signal.

    Granian kills a worker still busy ``SHUTDOWN_TIMEOUT_SECONDS`` after the
    signal. Answers get the first half, then are abandoned (``web.shutdown``);
    the background work left at close gets a quarter (``ChatRules`` above),
    and the last quarter is for storing abandoned answers, closing and exiting.
    """
    return settings.shutdown_timeout_seconds / 2


def _telemetry(metrics: Metrics | None, llm: bootstrap.LlmConfig) -> Telemetry:
    if metrics is None:
        return LogTelemetry()
    prometheus = PrometheusTelemetry(metrics.registry, provider_of=bootstrap.provider_of(llm))
    return FanOutTelemetry([LogTelemetry(), prometheus])


@asynccontextmanager
async def open_container(
    settings: Settings, *, metrics: Metrics | None = None
) -> AsyncIterator[Container]:
    """The services on PostgreSQL for the app's lifetime; with ``metrics``,
    the core's events and cache lookups are counted in its registry."""

    def metered(cache: Cache) -> Cache:
        return cache if metrics is None else MeteredCache(cache, metrics.registry)

    config = core_config(settings)
    async with bootstrap.open_services(
        config, telemetry=_telemetry(metrics, config.llm), wrap_cache=metered
    ) as services:
        yield _container(services, settings)


def memory_container(settings: Settings, **adapters: Any) -> Container:
    """Every port on in-memory adapters: no database, no network. Mail is
    recorded unless another mailer is given; ``adapters`` are those of
    ``bootstrap.memory_services`` (``clock``, ``repositories``, ``mailer``, ...)."""
    services = bootstrap.memory_services(core_config(settings), **adapters)
    return _container(services, settings)


def _container(services: Services, settings: Settings) -> Container:
    return Container(
        settings=settings,
        version=app_version(),
        clock=services.clock,
        accounts=services.accounts,
        chats=services.chats,
        files=services.files,
        admin=services.admin,
        usage=services.usage,
        health=services.health,
        rate_limiter=services.rate_limiter,
    )


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The configured database's URL, or the embedded server's for as long as
    the context lasts (the command line starts it once, for every worker)."""
    with bootstrap.database_url(core_config(settings).database) as url:
        yield url


def migrate(url: str, action: str, count: int = 1) -> list[str]:
    """``apply`` / ``rollback`` for the command line; returns the ids touched."""
    if action == "apply":
        return migrations.apply(url)
    if action == "rollback":
        return migrations.rollback(url, count)
    raise ValueError(f"unknown migration action {action!r}")


def migration_status(url: str) -> list[tuple[str, bool]]:
    return [(state.id, state.applied) for state in migrations.status(url)]


async def check_database(url: str) -> bool:
    """Whether the database answers; for ``gemini-backend check``."""
    database = Database(url, min_size=1, max_size=1, pool_timeout=5.0)
    try:
        await database.open(wait_seconds=10.0)
    except Exception:
        log.exception("cannot open a connection to the database")
        return False
    try:
        return (await database.check()).healthy
    finally:
        await database.close()
