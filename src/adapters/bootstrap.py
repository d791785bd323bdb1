"""The composition root: the core's services, wired from a plain configuration.

Any Python program uses the product through here, with no web framework::

    async with open_services(CoreConfig(secret_key=..., database=DatabaseConfig(url=...))) as s:
        await s.accounts.send_code("ann@example.com", OtpPurpose.EMAIL_VERIFICATION)

``open_services`` starts an embedded PostgreSQL when no database URL is given,
applies the migrations, opens the pool, picks the adapters the configuration
names and yields the ``Services``; leaving the context stops background work
and closes everything in reverse order. ``memory_services`` gives the same
services over in-memory adapters: no database, no network, nothing to close
but the password hasher's threads.

Nothing here reads the environment: the caller (the HTTP layer's settings, a
script, a test) decides every value.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from adapters.clock import SystemClock
from adapters.mail import ConsoleMailer, SmtpMailer, SmtpSecurity
from adapters.memory import (
    InMemoryAnswerOwner,
    InMemoryAnswerSignals,
    InMemoryCache,
    InMemoryDatabaseProbe,
    InMemoryExclusiveLock,
    InMemoryRateLimiter,
    InMemoryRepositories,
    InMemorySignalHub,
    RecordingMailer,
    RecordingTelemetry,
    memory_file_storage,
)
from adapters.passwords import Argon2PasswordHasher
from adapters.postgres import migrations
from adapters.postgres.embedded import EmbeddedPostgres
from adapters.postgres.locks import PostgresExclusiveLock
from adapters.postgres.owners import PostgresAnswerOwner
from adapters.postgres.pool import Database
from adapters.postgres.repositories import (
    PostgresChatRepository,
    PostgresFileUploadRepository,
    PostgresMessageRepository,
    PostgresOtpRepository,
    PostgresSessionRepository,
    PostgresStatsRepository,
    PostgresUsageRepository,
    PostgresUserRepository,
)
from adapters.postgres.signals import PostgresAnswerSignals
from adapters.storage import local_file_storage, s3_file_storage
from adapters.telemetry import LogTelemetry
from adapters.tokens import JwtTokenCodec
from gemini_core.accounts import AccountService, SessionRules
from gemini_core.admin import AdminService
from gemini_core.chats import ChatRules, ChatService, StoredImages
from gemini_core.codes import CodeRules, OneTimeCodes
from gemini_core.files import UploadRules, UploadService
from gemini_core.health import HealthService
from gemini_core.housekeeping import Housekeeping, HousekeepingRules
from gemini_core.links import FileLinks
from gemini_core.llm import LlmClient
from gemini_core.ports import (
    AnswerOwner,
    AnswerSignals,
    Cache,
    ChatRepository,
    Clock,
    DatabaseProbe,
    ExclusiveLock,
    FileUploadRepository,
    Mailer,
    MessageRepository,
    OtpRepository,
    PasswordHasher,
    RateLimiter,
    SessionRepository,
    StatsRepository,
    UsageRepository,
    UserRepository,
)
from gemini_core.storage import FileStorage
from gemini_core.tasks import stop
from gemini_core.telemetry import Telemetry
from gemini_core.usage import QuotaRules, Quotas, UsageService

if TYPE_CHECKING:
    from adapters.redis import RedisConnection

__all__ = [
    "CoreConfig",
    "DatabaseConfig",
    "LlmConfig",
    "LlmModel",
    "RecordingMailer",
    "RecordingTelemetry",
    "Services",
    "SmtpConfig",
    "StorageConfig",
    "memory_services",
    "open_services",
]

log = logging.getLogger(__name__)

CacheWrapper = Callable[[Cache], Cache]

# --- the configuration ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str | None = None
    """A PostgreSQL URL; ``None`` starts an embedded server in ``embedded_dir``."""
    embedded_dir: Path = Path("data/postgres")
    pool_min_size: int = 2
    pool_max_size: int = 20
    pool_timeout_seconds: float = 5.0
    connect_timeout_seconds: int = 5


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    from_email: str
    port: int = 587
    username: str | None = None
    password: str | None = None
    security: SmtpSecurity = "starttls"


LlmProvider = Literal["gemini", "openai", "echo"]


@dataclass(frozen=True, slots=True)
class LlmModel:
    """A model and the provider that serves it."""

    id: str
    """The model's name, as the chats and the core's ``LlmRequest`` know it."""
    provider: LlmProvider


@dataclass(frozen=True, slots=True)
class LlmConfig:
    provider: LlmProvider = "echo"
    """The default provider: it serves every model ``models`` does not name."""
    models: tuple[LlmModel, ...] = ()
    """Which provider serves each model (``ChatRules.models`` says which a chat
    may pick); one deployment may offer several providers' models side by side."""
    google_api_key: str | None = None
    gemini_base_url: str | None = None
    """Another address for Google's API (a proxy, or a stand-in in tests)."""
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    echo_piece_delay_seconds: float = 0.02
    """Paces the offline model's pieces, so a browser shows its answer streaming."""


@dataclass(frozen=True, slots=True)
class StorageConfig:
    backend: Literal["local", "s3", "memory"] = "local"
    upload_dir: Path = Path("data/uploads")
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Everything the services need to know, as plain values."""

    secret_key: str
    """Signs tokens and keys code hashes; at least 32 characters."""
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    smtp: SmtpConfig | None = None
    """``None``: mail goes to the log (development)."""
    llm: LlmConfig = field(default_factory=LlmConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    redis_url: str | None = None
    """Rate limits and the cache in Redis, shared by every process; else in memory."""
    chats: ChatRules = field(default_factory=lambda: ChatRules(models=("echo",)))
    codes: CodeRules = field(default_factory=CodeRules)
    sessions: SessionRules = field(default_factory=SessionRules)
    uploads: UploadRules = field(default_factory=UploadRules)
    quotas: QuotaRules = field(default_factory=QuotaRules)
    """The deployment's daily limits per user (a user's own replace them)."""
    housekeeping: HousekeepingRules = field(default_factory=HousekeepingRules)
    """How often expired codes and ended sessions are purged, and how long kept."""
    admin_email: str | None = None
    admin_password: str | None = None
    """The first admin, created at start-up if no account has that email."""


# --- what it builds -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Services:
    """The core's use cases, wired; and the two ports a front door needs besides."""

    accounts: AccountService
    chats: ChatService
    files: UploadService
    admin: AdminService
    usage: UsageService
    health: HealthService
    housekeeping: Housekeeping
    """Runs by itself under ``open_services``; call ``purge()`` to run it now."""
    rate_limiter: RateLimiter
    clock: Clock


@dataclass(frozen=True, slots=True)
class Repositories:
    users: UserRepository
    chats: ChatRepository
    messages: MessageRepository
    files: FileUploadRepository
    otps: OtpRepository
    sessions: SessionRepository
    stats: StatsRepository
    usage: UsageRepository

    @classmethod
    def in_memory(cls, repos: InMemoryRepositories) -> Repositories:
        return cls(
            repos.users,
            repos.chats,
            repos.messages,
            repos.files,
            repos.otps,
            repos.sessions,
            repos.stats,
            repos.usage,
        )

    @classmethod
    def on_postgres(cls, database: Database) -> Repositories:
        return cls(
            PostgresUserRepository(database),
            PostgresChatRepository(database),
            PostgresMessageRepository(database),
            PostgresFileUploadRepository(database),
            PostgresOtpRepository(database),
            PostgresSessionRepository(database),
            PostgresStatsRepository(database),
            PostgresUsageRepository(database),
        )


# --- on PostgreSQL --------------------------------------------------------------


@asynccontextmanager
async def open_services(
    config: CoreConfig,
    *,
    telemetry: Telemetry | None = None,
    mailer: Mailer | None = None,
    wrap_cache: CacheWrapper | None = None,
) -> AsyncIterator[Services]:
    """The services on PostgreSQL, for as long as the context lasts.

    ``telemetry`` receives the core's events (the log by default); ``mailer``
    replaces the one ``config.smtp`` names (a ``RecordingMailer`` lets a
    script read its codes); ``wrap_cache`` may wrap the cache (to count its
    hits, say).
    """
    async with AsyncExitStack() as stack:
        # Starting the embedded server takes a moment: keep it off the event loop.
        url = await asyncio.to_thread(stack.enter_context, database_url(config.database))
        await asyncio.to_thread(migrations.apply, url)
        db = config.database
        database = Database(
            url,
            min_size=db.pool_min_size,
            max_size=db.pool_max_size,
            pool_timeout=db.pool_timeout_seconds,
            connect_timeout=db.connect_timeout_seconds,
        )
        await database.open()
        stack.push_async_callback(database.close)
        hasher = Argon2PasswordHasher()
        stack.callback(hasher.close)
        redis = _redis(config.redis_url, url)
        if redis is not None:
            stack.push_async_callback(redis.close)
        rate_limiter: RateLimiter = InMemoryRateLimiter(clock=SystemClock())
        shared_cache: Cache | None = None
        # Stopping and following answers across processes: through Redis when
        # there is one, else through PostgreSQL's LISTEN/NOTIFY.
        signals: AnswerSignals = PostgresAnswerSignals(url)
        if redis is not None:
            from adapters.redis import RedisCache, RedisRateLimiter
            from adapters.redis_signals import RedisAnswerSignals

            rate_limiter, shared_cache = RedisRateLimiter(redis), RedisCache(redis)
            signals = RedisAnswerSignals(
                config.redis_url or "", channel=f"{redis.namespace}:answers"
            )
        services = _assemble(
            config,
            clock=SystemClock(),
            database=database,
            repositories=Repositories.on_postgres(database),
            mailer=mailer or _mailer(config.smtp),
            hasher=hasher,
            storage=_storage(config.storage),
            rate_limiter=rate_limiter,
            lock=PostgresExclusiveLock(database),
            owner=PostgresAnswerOwner(url),
            signals=signals,
            # Only a cache every process shares can be told of a deletion.
            shared_cache=shared_cache,
            wrap_cache=wrap_cache,
            telemetry=telemetry or LogTelemetry(),
        )
        # Before the pool closes: answers being stored and titles need it.
        stack.push_async_callback(services.chats.aclose)
        purging = asyncio.create_task(services.housekeeping.run(), name="gemini-housekeeping")
        stack.push_async_callback(stop, purging)
        # This process's answer key, the other processes' signals, and the
        # answers of processes that died, before the first request.
        await services.chats.start()
        if config.admin_email and config.admin_password:
            await services.accounts.ensure_admin(config.admin_email, config.admin_password)
        yield services


@contextmanager
def database_url(config: DatabaseConfig) -> Iterator[str]:
    """The configured database's URL, or the embedded server's for as long as
    the context lasts. A configured database never touches pgserver."""
    if config.url is not None:
        yield config.url
        return
    embedded = EmbeddedPostgres(config.embedded_dir)
    url = embedded.start()
    try:
        yield url
    finally:
        embedded.stop()


def _redis(redis_url: str | None, database_url: str) -> RedisConnection | None:
    """Redis, namespaced by the database's name: the workers and hosts of one
    deployment share a database, so they share one budget, while another
    deployment (or test) on the same Redis counts apart."""
    if redis_url is None:
        return None  # and the Redis client is never loaded: 6 MB a process
    from adapters.redis import RedisConnection

    database = urlsplit(database_url).path.lstrip("/") or "postgres"
    return RedisConnection(redis_url, namespace=f"gemini:{database}")


def _mailer(smtp: SmtpConfig | None) -> Mailer:
    if smtp is None:
        return ConsoleMailer()
    return SmtpMailer(
        host=smtp.host,
        port=smtp.port,
        username=smtp.username,
        password=smtp.password,
        security=smtp.security,
        from_email=smtp.from_email,
    )


def _storage(config: StorageConfig) -> FileStorage:
    if config.backend == "s3":
        if config.s3_bucket is None:
            raise ValueError("S3 storage needs a bucket")
        return s3_file_storage(
            bucket=config.s3_bucket,
            endpoint_url=config.s3_endpoint_url,
            region=config.s3_region,
            access_key_id=config.aws_access_key_id,
            secret_access_key=config.aws_secret_access_key,
        )
    if config.backend == "memory":
        return memory_file_storage()
    return local_file_storage(config.upload_dir)


def llm_client(config: LlmConfig) -> LlmClient:
    """The model client: the default provider's, or, when ``config.models``
    names others, one that sends each call to its model's provider. Each
    provider's client is built once, and its module (and SDK) imported only
    when that provider is used."""
    clients = {config.provider: _provider_client(config.provider, config)}
    for model in config.models:
        if model.provider not in clients:
            clients[model.provider] = _provider_client(model.provider, config)
    if len(clients) == 1:
        return clients[config.provider]
    from adapters.llm.routing import RoutingLlmClient

    routes = {model.id: clients[model.provider] for model in config.models}
    return RoutingLlmClient(routes, fallback=clients[config.provider])


def provider_of(config: LlmConfig) -> Callable[[str], str]:
    """The provider that serves a model, by the model's name (as ``llm_client`` routes)."""
    providers: dict[str, str] = {model.id: model.provider for model in config.models}
    return lambda model: providers.get(model, config.provider)


def _provider_client(provider: LlmProvider, config: LlmConfig) -> LlmClient:
    if provider == "gemini":
        from adapters.llm.gemini import GeminiLlmClient

        if config.google_api_key is None:
            raise ValueError("the Gemini provider needs an API key")
        return GeminiLlmClient(api_key=config.google_api_key, base_url=config.gemini_base_url)
    if provider == "openai":
        from adapters.llm.openai import OpenAiCompatibleLlmClient

        if config.openai_base_url is None:
            raise ValueError("the OpenAI-compatible provider needs a base URL")
        return OpenAiCompatibleLlmClient(
            base_url=config.openai_base_url, api_key=config.openai_api_key
        )
    from adapters.llm.echo import EchoLlmClient

    return EchoLlmClient(piece_delay_seconds=config.echo_piece_delay_seconds)


# --- in memory ------------------------------------------------------------------


def memory_services(
    config: CoreConfig,
    *,
    clock: Clock | None = None,
    repositories: InMemoryRepositories | None = None,
    mailer: Mailer | None = None,
    hasher: PasswordHasher | None = None,
    storage: FileStorage | None = None,
    llm: LlmClient | None = None,
    telemetry: Telemetry | None = None,
    signals: InMemorySignalHub | None = None,
) -> Services:
    """The services on in-memory adapters. Mail is recorded (``RecordingMailer``)
    unless another mailer is given; pass ``repositories`` to look at the rows,
    and the same ``repositories`` and ``signals`` hub to several calls for
    services that behave as processes of one deployment. The database, Redis
    and storage settings of ``config`` are not used."""
    clock = clock or SystemClock()
    repos = repositories or InMemoryRepositories(clock=clock)
    return _assemble(
        config,
        clock=clock,
        database=InMemoryDatabaseProbe(),
        repositories=Repositories.in_memory(repos),
        mailer=mailer or RecordingMailer(),
        hasher=hasher or Argon2PasswordHasher(),
        storage=storage or memory_file_storage(),
        rate_limiter=InMemoryRateLimiter(clock=clock),
        lock=InMemoryExclusiveLock(),
        owner=InMemoryAnswerOwner(repos.store),
        signals=InMemoryAnswerSignals(signals or InMemorySignalHub()),
        shared_cache=None,
        llm=llm,
        telemetry=telemetry or LogTelemetry(),
    )


# --- the wiring both share ------------------------------------------------------


def _assemble(
    config: CoreConfig,
    *,
    clock: Clock,
    database: DatabaseProbe,
    repositories: Repositories,
    mailer: Mailer,
    hasher: PasswordHasher,
    storage: FileStorage,
    rate_limiter: RateLimiter,
    lock: ExclusiveLock,
    owner: AnswerOwner,
    signals: AnswerSignals,
    shared_cache: Cache | None,
    telemetry: Telemetry,
    wrap_cache: CacheWrapper | None = None,
    llm: LlmClient | None = None,
) -> Services:
    repos = repositories
    cache = shared_cache
    if cache is not None and wrap_cache is not None:
        cache = wrap_cache(cache)
    # Codes get their own key, derived from the secret key, so a code hash can
    # never double as a token signature or the other way round.
    code_key = hmac.new(config.secret_key.encode(), b"one-time codes", hashlib.sha256).digest()
    codes = OneTimeCodes(
        otps=repos.otps, mailer=mailer, clock=clock, key=code_key, rules=config.codes
    )
    accounts = AccountService(
        users=repos.users,
        sessions=repos.sessions,
        codes=codes,
        hasher=hasher,
        tokens=JwtTokenCodec(secret_key=config.secret_key),
        clock=clock,
        rules=config.sessions,
        telemetry=telemetry,
    )
    quotas = Quotas(config.quotas, clock=clock, users=repos.users)
    chats = ChatService(
        chats=repos.chats,
        messages=repos.messages,
        files=repos.files,
        images=StoredImages(storage, max_bytes=config.uploads.max_size),
        llm=llm or llm_client(config.llm),
        rules=config.chats,
        telemetry=telemetry,
        owner=owner,
        signals=signals,
        quotas=quotas,
    )
    return Services(
        accounts=accounts,
        chats=chats,
        files=UploadService(
            files=repos.files,
            storage=storage,
            rules=config.uploads,
            telemetry=telemetry,
            cache=cache,
            # Signed links get their own key too, so one never checks the other.
            links=FileLinks(
                key=hmac.new(config.secret_key.encode(), b"file links", hashlib.sha256).digest()
            ),
            clock=clock,
        ),
        admin=AdminService(
            users=repos.users, sessions=repos.sessions, stats=repos.stats, clock=clock
        ),
        usage=UsageService(usage=repos.usage, quotas=quotas, clock=clock),
        health=HealthService(
            database=database,
            rate_limiter=rate_limiter,
            cache=cache if cache is not None else InMemoryCache(clock=clock),
            clock=clock,
        ),
        housekeeping=Housekeeping(
            otps=repos.otps,
            sessions=repos.sessions,
            clock=clock,
            lock=lock,
            rules=config.housekeeping,
        ),
        rate_limiter=rate_limiter,
        clock=clock,
    )
