"""The composition root: the one place that picks adapters and wires them.

``open_container(settings)`` reads nothing but the settings it is given: it
starts the embedded PostgreSQL when no database is configured, applies the
migrations, opens the pool and yields a ``Container``; leaving the context
closes everything in reverse order. ``memory_container`` wires the in-memory
adapters, for tests and for other Python services that embed the core.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlsplit

from adapters.cache import InMemoryCache
from adapters.clock import SystemClock
from adapters.llm import EchoLlmClient, GeminiLlmClient, OpenAiCompatibleLlmClient
from adapters.mail import ConsoleMailer, RecordingMailer, SmtpMailer
from adapters.memory import InMemoryDatabaseProbe, InMemoryRepositories
from adapters.passwords import Argon2PasswordHasher
from adapters.postgres import migrations
from adapters.postgres.embedded import EmbeddedPostgres
from adapters.postgres.pool import Database
from adapters.postgres.repositories import (
    PostgresChatRepository,
    PostgresFileUploadRepository,
    PostgresMessageRepository,
    PostgresOtpRepository,
    PostgresSessionRepository,
    PostgresStatsRepository,
    PostgresUserRepository,
)
from adapters.ratelimit import InMemoryRateLimiter
from adapters.redis import RedisCache, RedisConnection, RedisRateLimiter
from adapters.storage import local_file_storage, memory_file_storage, s3_file_storage
from adapters.tokens import JwtTokenCodec
from gemini_core.accounts import AccountService, SessionRules
from gemini_core.admin import AdminService
from gemini_core.chats import ChatRules, ChatService, StoredImages
from gemini_core.codes import CodeRules, OneTimeCodes
from gemini_core.files import UploadRules, UploadService
from gemini_core.health import HealthService
from gemini_core.llm import LlmClient
from gemini_core.ports import (
    Cache,
    ChatRepository,
    Clock,
    DatabaseProbe,
    FileUploadRepository,
    Mailer,
    MessageRepository,
    OtpRepository,
    PasswordHasher,
    RateLimiter,
    SessionRepository,
    StatsRepository,
    UserRepository,
)
from gemini_core.storage import FileStorage
from web.container import Container
from web.metrics import MeteredCache, metrics
from web.settings import Settings

log = logging.getLogger(__name__)


def app_version() -> str:
    try:
        return version("gemini-backend")
    except PackageNotFoundError:
        return "0.0.0"


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The configured database's URL, or the embedded server's for as long as
    the context lasts. A configured database never touches pgserver."""
    configured = settings.resolved_database_url
    if configured is not None:
        yield configured
        return
    embedded = EmbeddedPostgres(settings.embedded_database_dir)
    url = embedded.start()
    try:
        yield url
    finally:
        embedded.stop()


def mailer_for(settings: Settings) -> Mailer:
    if settings.smtp_host is None:
        return ConsoleMailer()
    return SmtpMailer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password,
        security=settings.smtp_security,
        from_email=settings.from_email,
    )


# Paces the offline model's pieces, so a browser shows its answer streaming.
ECHO_PIECE_DELAY_SECONDS = 0.02


def llm_for(settings: Settings) -> LlmClient:
    if settings.llm_provider == "gemini":
        assert settings.google_api_key is not None  # load_settings insists on it
        return GeminiLlmClient(api_key=settings.google_api_key, base_url=settings.gemini_base_url)
    if settings.llm_provider == "openai":
        assert settings.openai_base_url is not None  # load_settings insists on it
        return OpenAiCompatibleLlmClient(
            base_url=settings.openai_base_url, api_key=settings.openai_api_key
        )
    return EchoLlmClient(piece_delay_seconds=ECHO_PIECE_DELAY_SECONDS)


def chat_service_for(
    settings: Settings, *, repositories: Repositories, storage: FileStorage
) -> ChatService:
    return ChatService(
        chats=repositories.chats,
        messages=repositories.messages,
        files=repositories.files,
        images=StoredImages(storage, max_bytes=settings.max_upload_size),
        llm=llm_for(settings),
        rules=ChatRules(
            models=settings.llm_models,
            max_history_messages=settings.llm_max_history_messages,
            timeout_seconds=settings.llm_timeout_seconds,
            # The offline model would only echo the request for a title back.
            model_titles=settings.llm_provider != "echo",
            shutdown_grace_seconds=settings.shutdown_timeout_seconds / 4,
        ),
    )


def answer_grace_seconds(settings: Settings) -> float:
    """How long answers still streaming may go on after a stop signal.

    Granian kills a worker still busy ``SHUTDOWN_TIMEOUT_SECONDS`` after the
    signal. Answers get the first half, then are abandoned (``web.shutdown``);
    the background work left at close gets a quarter (``chat_service_for``),
    and the last quarter is for storing abandoned answers, closing and exiting.
    """
    return settings.shutdown_timeout_seconds / 2


def storage_for(settings: Settings) -> FileStorage:
    if settings.storage_backend == "s3":
        assert settings.s3_bucket is not None  # load_settings insists on it
        return s3_file_storage(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.aws_access_key_id,
            secret_access_key=settings.aws_secret_access_key,
        )
    return local_file_storage(settings.upload_dir)


def accounts_for(
    settings: Settings,
    *,
    users: UserRepository,
    sessions: SessionRepository,
    otps: OtpRepository,
    mailer: Mailer,
    hasher: PasswordHasher,
    clock: Clock,
) -> AccountService:
    # Codes get their own key, derived from SECRET_KEY, so a code hash can
    # never double as a token signature or the other way round.
    code_key = hmac.new(settings.secret_key.encode(), b"one-time codes", hashlib.sha256).digest()
    codes = OneTimeCodes(
        otps=otps,
        mailer=mailer,
        clock=clock,
        key=code_key,
        rules=CodeRules(
            ttl_seconds=settings.otp_ttl_seconds,
            max_attempts=settings.otp_max_attempts,
            resend_cooldown_seconds=settings.otp_resend_cooldown_seconds,
            max_per_hour=settings.otp_max_per_hour,
        ),
    )
    return AccountService(
        users=users,
        sessions=sessions,
        codes=codes,
        hasher=hasher,
        tokens=JwtTokenCodec(secret_key=settings.secret_key),
        clock=clock,
        rules=SessionRules(
            access_token_ttl=timedelta(minutes=settings.access_token_expire_minutes),
            refresh_token_ttl=timedelta(days=settings.refresh_token_expire_days),
        ),
    )


def redis_for(settings: Settings, database_url: str) -> RedisConnection | None:
    """Redis for the rate limits and the cache, when ``REDIS_URL`` is set.

    Its keys are namespaced by the database's name: the workers and hosts of
    one deployment share a database, so they share one budget, while another
    deployment (or test) on the same Redis counts apart.
    """
    if settings.redis_url is None:
        return None
    database = urlsplit(database_url).path.lstrip("/") or "postgres"
    return RedisConnection(settings.redis_url, namespace=f"gemini:{database}")


async def bootstrap_admin(settings: Settings, accounts: AccountService) -> None:
    if settings.admin_email and settings.admin_password:
        await accounts.ensure_admin(settings.admin_email, settings.admin_password)


@asynccontextmanager
async def open_container(settings: Settings) -> AsyncIterator[Container]:
    async with AsyncExitStack() as stack:
        # Starting the embedded server takes a moment: keep it off the event loop.
        url = await asyncio.to_thread(stack.enter_context, database_url(settings))
        await asyncio.to_thread(migrations.apply, url)
        database = Database(
            url,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            pool_timeout=settings.db_pool_timeout_seconds,
            connect_timeout=settings.db_connect_timeout_seconds,
        )
        await database.open()
        stack.push_async_callback(database.close)
        hasher = Argon2PasswordHasher()
        stack.callback(hasher.close)
        redis = redis_for(settings, url)
        if redis is not None:
            stack.push_async_callback(redis.close)
        container = assemble(
            settings,
            clock=SystemClock(),
            database=database,
            repositories=Repositories(
                users=PostgresUserRepository(database),
                chats=PostgresChatRepository(database),
                messages=PostgresMessageRepository(database),
                files=PostgresFileUploadRepository(database),
                otps=PostgresOtpRepository(database),
                sessions=PostgresSessionRepository(database),
                stats=PostgresStatsRepository(database),
            ),
            mailer=mailer_for(settings),
            hasher=hasher,
            storage=storage_for(settings),
            redis=redis,
        )
        # Before the pool closes: answers being stored and titles need it.
        stack.push_async_callback(container.chat.aclose)
        await bootstrap_admin(settings, container.accounts)
        yield container


def memory_container(
    settings: Settings,
    *,
    clock: Clock | None = None,
    mailer: Mailer | None = None,
    hasher: PasswordHasher | None = None,
    storage: FileStorage | None = None,
) -> Container:
    """Every port on in-memory adapters: no database, no network. Mail is
    recorded (``RecordingMailer``) unless another mailer is given."""
    clock = clock or SystemClock()
    repos = InMemoryRepositories(clock=clock)
    return assemble(
        settings,
        clock=clock,
        database=InMemoryDatabaseProbe(),
        repositories=Repositories(
            users=repos.users,
            chats=repos.chats,
            messages=repos.messages,
            files=repos.files,
            otps=repos.otps,
            sessions=repos.sessions,
            stats=repos.stats,
        ),
        mailer=mailer or RecordingMailer(),
        hasher=hasher or Argon2PasswordHasher(),
        storage=storage or memory_file_storage(),
    )


@dataclass(frozen=True, slots=True)
class Repositories:
    users: UserRepository
    chats: ChatRepository
    messages: MessageRepository
    files: FileUploadRepository
    otps: OtpRepository
    sessions: SessionRepository
    stats: StatsRepository


def assemble(
    settings: Settings,
    *,
    clock: Clock,
    database: DatabaseProbe,
    repositories: Repositories,
    mailer: Mailer,
    hasher: PasswordHasher,
    storage: FileStorage,
    redis: RedisConnection | None = None,
) -> Container:
    """The services over the given repositories; the rest follows the settings.
    Rate limits and the cache live in ``redis`` when one is given, else in memory."""
    repos = repositories
    rate_limiter: RateLimiter
    cache: Cache
    if redis is None:
        rate_limiter, cache = InMemoryRateLimiter(clock=clock), InMemoryCache(clock=clock)
    else:
        rate_limiter, cache = RedisRateLimiter(redis), RedisCache(redis)
    if settings.metrics_enabled:
        cache = MeteredCache(cache, metrics())
    accounts = accounts_for(
        settings,
        users=repos.users,
        sessions=repos.sessions,
        otps=repos.otps,
        mailer=mailer,
        hasher=hasher,
        clock=clock,
    )
    return Container(
        settings=settings,
        clock=clock,
        database=database,
        users=repos.users,
        chats=repos.chats,
        messages=repos.messages,
        files=repos.files,
        otps=repos.otps,
        sessions=repos.sessions,
        rate_limiter=rate_limiter,
        cache=cache,
        health=HealthService(database=database, rate_limiter=rate_limiter, cache=cache),
        accounts=accounts,
        chat=chat_service_for(settings, repositories=repos, storage=storage),
        uploads=UploadService(
            files=repos.files,
            storage=storage,
            rules=UploadRules(
                max_size=settings.max_upload_size, quota_bytes=settings.upload_quota_bytes
            ),
            # A deletion drops the cached record only where it happens: a cache
            # private to this process would outlive deletions made by others.
            cache=cache if redis is not None else None,
        ),
        admin=AdminService(
            users=repos.users, sessions=repos.sessions, stats=repos.stats, clock=clock
        ),
        version=app_version(),
    )


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
