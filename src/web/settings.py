"""Typed, validated configuration read from the environment and an optional `.env` file.

`load_settings()` is the only entry point; nothing is read at import time. Every invalid
value raises `SettingsError`, whose message is one line naming the variable, so the process
never starts half-configured. The variables, their defaults and meaning are described in
the configuration spec and listed, with defaults, in `.env.example`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec

__all__ = [
    "Environment",
    "LlmProvider",
    "LogFormat",
    "LogLevel",
    "Settings",
    "SettingsError",
    "SmtpSecurity",
    "StorageBackend",
    "load_settings",
]

Environment = Literal["development", "production", "test"]
LlmProvider = Literal["gemini", "openai", "echo"]
SmtpSecurity = Literal["starttls", "tls", "none"]
StorageBackend = Literal["local", "s3"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["json", "console"]

_T = TypeVar("_T", bound=str)

_MIN_PRODUCTION_SECRET_KEY_LENGTH = 32
# Lower-cased fragments of the placeholder keys found in guides and example files.
_PLACEHOLDER_KEY_FRAGMENTS = (
    "change",
    "your_super_secure",
    "your-super-secure",
    "your_secret",
    "your-secret",
    "replace_me",
    "replace-me",
    "placeholder",
    "example",
)
_PLACEHOLDER_KEYS = frozenset({"secret", "secret_key", "secret-key", "secretkey", "password"})

# Shown as "***" by repr(): they must never reach a log line.
_HIDDEN_FIELDS = frozenset(
    {
        "secret_key",
        "postgres_password",
        "admin_password",
        "smtp_password",
        "google_api_key",
        "openai_api_key",
        "aws_access_key_id",
        "aws_secret_access_key",
    }
)
# URLs that may carry a password in their user-info part.
_URL_FIELDS_WITH_CREDENTIALS = frozenset({"database_url", "redis_url"})

_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)*")
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s?#]+", re.IGNORECASE)
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BOOLEANS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


class SettingsError(Exception):
    """An invalid or missing configuration value; `str()` is one line naming the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """The whole configuration of one process, validated. Build it with `load_settings()`."""

    environment: Environment = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    shutdown_timeout_seconds: float = 30.0

    database_url: str | None = None
    postgres_user: str | None = None
    postgres_password: str | None = None
    postgres_db: str | None = None
    postgres_host: str | None = None
    postgres_port: int = 5432
    data_dir: Path = Path("data")
    db_pool_min_size: int = 2
    db_pool_max_size: int = 20
    db_pool_timeout_seconds: float = 5.0
    db_connect_timeout_seconds: int = 5

    secret_key: str
    access_token_expire_minutes: int = 15
    refresh_token_expire_days: int = 30
    admin_email: str | None = None
    admin_password: str | None = None

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_security: SmtpSecurity = "starttls"
    from_email: str = "noreply@localhost"
    otp_ttl_seconds: int = 600
    otp_max_attempts: int = 5
    otp_resend_cooldown_seconds: int = 60
    otp_max_per_hour: int = 5

    llm_provider: LlmProvider = "echo"
    google_api_key: str | None = None
    gemini_model: str = "gemini-2.5-flash"
    gemini_base_url: str | None = None
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    openai_model: str | None = None
    llm_models: tuple[str, ...] = ("echo",)
    llm_timeout_seconds: float = 60.0
    llm_max_history_messages: int = 50

    storage_backend: StorageBackend = "local"
    upload_dir: Path = Path("uploads")
    max_upload_size: int = 10_485_760
    upload_quota_bytes: int = 1_073_741_824
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None

    rate_limit_requests: int = 100
    rate_limit_window_seconds: int = 3600
    auth_rate_limit_requests: int = 10
    auth_rate_limit_window_seconds: int = 60
    rate_limit_enabled: bool = True
    redis_url: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ("*",)

    log_level: LogLevel = "INFO"
    log_format: LogFormat = "console"
    log_dir: Path = Path("logs")
    metrics_enabled: bool = True
    docs_enabled: bool = True

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def is_development(self) -> bool:
        return self.environment == "development"

    @property
    def resolved_database_url(self) -> str | None:
        """`DATABASE_URL`, else one built from `POSTGRES_*`; `None` means the embedded server."""
        if self.database_url is not None:
            return self.database_url
        if self.postgres_host is None:
            return None
        userinfo = ""
        if self.postgres_user is not None:
            userinfo = quote(self.postgres_user, safe="")
            if self.postgres_password is not None:
                userinfo += ":" + quote(self.postgres_password, safe="")
            userinfo += "@"
        host = self.postgres_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        database = "/" + quote(self.postgres_db, safe="") if self.postgres_db else ""
        return f"postgresql://{userinfo}{host}:{self.postgres_port}{database}"

    @property
    def embedded_database_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def default_model(self) -> str:
        """The model new chats use: the configured provider's own default."""
        if self.llm_provider == "gemini":
            return self.gemini_model
        if self.llm_provider == "openai":
            return self.openai_model or ""
        return "echo"

    def _safe_items(self) -> Iterator[tuple[str, Any]]:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not None and name in _HIDDEN_FIELDS:
                value = "***"
            elif value is not None and name in _URL_FIELDS_WITH_CREDENTIALS:
                value = _mask_url_password(value)
            yield name, value

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self._safe_items())
        return f"Settings({fields})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return list(self._safe_items())


def load_settings(
    environ: Mapping[str, str] | None = None, *, env_file: Path | None = Path(".env")
) -> Settings:
    """Read, validate and return the settings, or raise `SettingsError`.

    `environ` defaults to `os.environ`; `env_file` is read when it exists, and the
    environment wins over it. Empty or blank values count as unset. Outside production a
    missing `SECRET_KEY` is read from (or created in) `<DATA_DIR>/secret_key`.
    """
    raw = _read_env_file(env_file) if env_file is not None and env_file.exists() else {}
    for key, value in (os.environ if environ is None else environ).items():
        if value.strip():
            raw[key] = value
    env = _Env(raw)

    environment = env.choice("ENVIRONMENT", get_args(Environment), "development")
    production = environment == "production"
    google_api_key = env.text("GOOGLE_API_KEY")
    smtp_security = env.choice("SMTP_SECURITY", get_args(SmtpSecurity), "starttls")

    settings = Settings(
        environment=environment,
        host=env.text("HOST") or "127.0.0.1",
        port=env.integer("PORT", 8000, maximum=65535),
        workers=env.integer("WORKERS", 1),
        shutdown_timeout_seconds=env.number("SHUTDOWN_TIMEOUT_SECONDS", 30.0, allow_zero=True),
        database_url=env.url("DATABASE_URL", ("postgresql", "postgres")),
        postgres_user=env.text("POSTGRES_USER"),
        postgres_password=env.verbatim("POSTGRES_PASSWORD"),
        postgres_db=env.text("POSTGRES_DB"),
        postgres_host=env.text("POSTGRES_HOST"),
        postgres_port=env.integer("POSTGRES_PORT", 5432, maximum=65535),
        data_dir=Path(env.text("DATA_DIR") or "data"),
        db_pool_min_size=env.integer("DB_POOL_MIN_SIZE", 2),
        db_pool_max_size=env.integer("DB_POOL_MAX_SIZE", 20),
        db_pool_timeout_seconds=env.number("DB_POOL_TIMEOUT_SECONDS", 5.0),
        db_connect_timeout_seconds=env.integer("DB_CONNECT_TIMEOUT_SECONDS", 5),
        secret_key=env.text("SECRET_KEY") or "",
        access_token_expire_minutes=env.integer("ACCESS_TOKEN_EXPIRE_MINUTES", 15),
        refresh_token_expire_days=env.integer("REFRESH_TOKEN_EXPIRE_DAYS", 30),
        admin_email=env.email("ADMIN_EMAIL"),
        admin_password=env.verbatim("ADMIN_PASSWORD"),
        smtp_host=env.text("SMTP_HOST"),
        smtp_port=env.integer("SMTP_PORT", 465 if smtp_security == "tls" else 587, maximum=65535),
        smtp_username=env.text("SMTP_USERNAME"),
        smtp_password=env.verbatim("SMTP_PASSWORD"),
        smtp_security=smtp_security,
        from_email=env.email("FROM_EMAIL") or "noreply@localhost",
        otp_ttl_seconds=env.integer("OTP_TTL_SECONDS", 600),
        otp_max_attempts=env.integer("OTP_MAX_ATTEMPTS", 5),
        otp_resend_cooldown_seconds=env.integer("OTP_RESEND_COOLDOWN_SECONDS", 60, minimum=0),
        otp_max_per_hour=env.integer("OTP_MAX_PER_HOUR", 5),
        llm_provider=env.choice(
            "LLM_PROVIDER", get_args(LlmProvider), "gemini" if google_api_key else "echo"
        ),
        google_api_key=google_api_key,
        gemini_model=env.text("GEMINI_MODEL") or "gemini-2.5-flash",
        gemini_base_url=env.url("GEMINI_BASE_URL", ("http", "https")),
        openai_base_url=env.url("OPENAI_BASE_URL", ("http", "https")),
        openai_api_key=env.text("OPENAI_API_KEY"),
        openai_model=env.text("OPENAI_MODEL"),
        llm_models=env.items("LLM_MODELS", ()),
        llm_timeout_seconds=env.number("LLM_TIMEOUT_SECONDS", 60.0),
        llm_max_history_messages=env.integer("LLM_MAX_HISTORY_MESSAGES", 50),
        storage_backend=env.choice("STORAGE_BACKEND", get_args(StorageBackend), "local"),
        upload_dir=Path(env.text("UPLOAD_DIR") or "uploads"),
        max_upload_size=env.integer("MAX_UPLOAD_SIZE", 10_485_760),
        upload_quota_bytes=env.integer("UPLOAD_QUOTA_BYTES", 1_073_741_824),
        s3_bucket=env.text("S3_BUCKET"),
        s3_endpoint_url=env.url("S3_ENDPOINT_URL", ("http", "https")),
        s3_region=env.text("S3_REGION"),
        aws_access_key_id=env.text("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.text("AWS_SECRET_ACCESS_KEY"),
        rate_limit_requests=env.integer("RATE_LIMIT_REQUESTS", 100),
        rate_limit_window_seconds=env.integer("RATE_LIMIT_WINDOW_SECONDS", 3600),
        auth_rate_limit_requests=env.integer("AUTH_RATE_LIMIT_REQUESTS", 10),
        auth_rate_limit_window_seconds=env.integer("AUTH_RATE_LIMIT_WINDOW_SECONDS", 60),
        rate_limit_enabled=env.boolean("RATE_LIMIT_ENABLED", True),
        redis_url=env.url("REDIS_URL", ("redis", "rediss", "unix")),
        trusted_proxies=env.items("TRUSTED_PROXIES", (), check=_check_network),
        cors_origins=env.items("CORS_ORIGINS", (), check=_check_origin),
        allowed_hosts=env.items("ALLOWED_HOSTS", () if production else ("*",)),
        log_level=env.choice("LOG_LEVEL", get_args(LogLevel), "INFO"),
        log_format=env.choice(
            "LOG_FORMAT", get_args(LogFormat), "json" if production else "console"
        ),
        log_dir=Path(env.text("LOG_DIR") or "logs"),
        metrics_enabled=env.boolean("METRICS_ENABLED", not production),
        docs_enabled=env.boolean("DOCS_ENABLED", not production),
    )
    _check_consistency(settings, provider_explicit=env.is_set("LLM_PROVIDER"))
    return msgspec.structs.replace(
        settings,
        secret_key=settings.secret_key or _persistent_secret_key(settings.data_dir),
        llm_models=_allowed_models(settings.default_model, settings.llm_models),
    )


def _check_consistency(settings: Settings, *, provider_explicit: bool) -> None:
    """The rules that involve more than one variable, then the production-only ones."""
    if settings.db_pool_min_size > settings.db_pool_max_size:
        raise SettingsError(
            "DB_POOL_MIN_SIZE",
            f"must not exceed DB_POOL_MAX_SIZE "
            f"({settings.db_pool_min_size} > {settings.db_pool_max_size})",
        )
    if (settings.admin_email is None) != (settings.admin_password is None):
        missing = "ADMIN_PASSWORD" if settings.admin_password is None else "ADMIN_EMAIL"
        raise SettingsError(missing, "ADMIN_EMAIL and ADMIN_PASSWORD must be set together")
    if settings.llm_provider == "gemini" and settings.google_api_key is None:
        raise SettingsError("GOOGLE_API_KEY", "must be set when LLM_PROVIDER=gemini")
    if settings.llm_provider == "openai":
        for variable, value in (
            ("OPENAI_BASE_URL", settings.openai_base_url),
            ("OPENAI_MODEL", settings.openai_model),
        ):
            if value is None:
                raise SettingsError(variable, "must be set when LLM_PROVIDER=openai")
    if settings.storage_backend == "s3" and settings.s3_bucket is None:
        raise SettingsError("S3_BUCKET", "must be set when STORAGE_BACKEND=s3")

    if not settings.is_production:
        return
    _check_production_secret_key(settings.secret_key)
    if settings.smtp_host is None:
        raise SettingsError("SMTP_HOST", "must be set in production, or no code can be mailed")
    if settings.llm_provider == "echo" and not provider_explicit:
        raise SettingsError(
            "LLM_PROVIDER",
            "would fall back to the offline echo model in production; set GOOGLE_API_KEY, "
            "configure LLM_PROVIDER=openai, or set LLM_PROVIDER=echo explicitly",
        )
    if not settings.allowed_hosts:
        raise SettingsError("ALLOWED_HOSTS", "must list the host names in production")


def _check_production_secret_key(key: str) -> None:
    if not key:
        raise SettingsError("SECRET_KEY", "must be set in production")
    if len(key) < _MIN_PRODUCTION_SECRET_KEY_LENGTH:
        raise SettingsError(
            "SECRET_KEY",
            f"must be at least {_MIN_PRODUCTION_SECRET_KEY_LENGTH} characters in production",
        )
    lowered = key.strip().lower()
    if (
        lowered in _PLACEHOLDER_KEYS
        or any(fragment in lowered for fragment in _PLACEHOLDER_KEY_FRAGMENTS)
        or len(set(lowered)) < 8
    ):
        raise SettingsError(
            "SECRET_KEY",
            "looks like a placeholder; generate one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))'",
        )


def _allowed_models(default_model: str, configured: tuple[str, ...]) -> tuple[str, ...]:
    """`LLM_MODELS` without duplicates, the default model always first among them."""
    return tuple(dict.fromkeys((default_model, *configured)))


def _persistent_secret_key(data_dir: Path) -> str:
    """The development key kept in `<data_dir>/secret_key`, created on first use."""
    path = data_dir / "secret_key"
    try:
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            _publish_new_secret_key(path)
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingsError("SECRET_KEY", f"not set, and {path} cannot be used: {reason}") from exc
    if not key:
        raise SettingsError(
            "SECRET_KEY", f"not set, and {path} is empty; delete it to get a new one"
        )
    return key


def _publish_new_secret_key(path: Path) -> None:
    """Write a fresh key to `path` atomically, unless another process gets there first."""
    descriptor, temporary_name = tempfile.mkstemp(prefix=".secret_key.", dir=path.parent)
    temporary = Path(temporary_name)  # mkstemp creates it with mode 0600
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            # Unlike a rename, a hard link never replaces an existing file: when several
            # workers start at once, the first key written wins and the others read it.
            os.link(temporary, path)
        except FileExistsError:
            pass
        except OSError:
            if not path.exists():  # a filesystem without hard links
                os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _read_env_file(path: Path) -> dict[str, str]:
    """Parse `KEY=VALUE` lines: `#` comments, blank lines, `export `, quotes stripped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(str(path), f"cannot read the env file: {exc}") from exc
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        location = f"{path}:{number}"
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped.removeprefix("export ").lstrip()
        key, equals, value = stripped.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not _ENV_KEY.fullmatch(key):
            raise SettingsError(location, "expected KEY=VALUE")
        if value[:1] in ("'", '"'):
            end = value.find(value[0], 1)
            if end == -1:
                raise SettingsError(location, f"{key}: the opening quote is never closed")
            rest = value[end + 1 :].strip()
            if rest and not rest.startswith("#"):
                raise SettingsError(location, f"{key}: unexpected text after the closing quote")
            value = value[1:end]
        else:
            value = re.split(r"\s#", value, maxsplit=1)[0].rstrip()
        if value.strip():
            values[key] = value
    return values


class _Env:
    """Typed access to the raw variables; every failure names the variable."""

    def __init__(self, raw: Mapping[str, str]) -> None:
        self._raw = raw

    def is_set(self, name: str) -> bool:
        return name in self._raw

    def verbatim(self, name: str) -> str | None:
        """The value exactly as given: a password may begin or end with a space."""
        return self._raw.get(name)

    def text(self, name: str) -> str | None:
        value = self._raw.get(name)
        return None if value is None else value.strip()

    def integer(
        self, name: str, default: int, *, minimum: int = 1, maximum: int | None = None
    ) -> int:
        text = self.text(name)
        if text is None:
            return default
        if not _INTEGER.fullmatch(text):
            raise SettingsError(name, f"expected an integer, got {_show(text)}")
        bounds = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        try:
            value = int(text)
        except ValueError:  # more digits than int() accepts
            raise SettingsError(name, f"must be {bounds}, got {_show(text)}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise SettingsError(name, f"must be {bounds}, got {_show(text)}")
        return value

    def number(self, name: str, default: float, *, allow_zero: bool = False) -> float:
        text = self.text(name)
        if text is None:
            return default
        if not _NUMBER.fullmatch(text) or not math.isfinite(value := float(text)):
            raise SettingsError(name, f"expected a number of seconds, got {_show(text)}")
        if value < 0 or (value == 0 and not allow_zero):
            bound = "at least" if allow_zero else "more than"
            raise SettingsError(name, f"must be {bound} 0, got {text}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        text = self.text(name)
        if text is None:
            return default
        try:
            return _BOOLEANS[text.lower()]
        except KeyError:
            raise SettingsError(name, f"expected true or false, got {_show(text)}") from None

    def choice(self, name: str, options: tuple[_T, ...], default: _T) -> _T:
        text = self.text(name)
        if text is None:
            return default
        for option in options:
            if option.lower() == text.lower():
                return option
        raise SettingsError(name, f"expected one of {', '.join(options)}, got {_show(text)}")

    def items(
        self,
        name: str,
        default: tuple[str, ...],
        *,
        check: Callable[[str], str | None] | None = None,
    ) -> tuple[str, ...]:
        text = self.text(name)
        if text is None:
            return default
        items = tuple(item.strip() for item in text.split(",") if item.strip())
        for item in items:
            problem = None if check is None else check(item)
            if problem is not None:
                raise SettingsError(name, problem)
        return items

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        text = self.text(name)
        if text is None:
            return None
        scheme, separator, rest = text.partition("://")
        if not separator or scheme.lower() not in schemes or not rest:
            # Only the scheme is echoed: the rest may hold a password.
            found = f"a {_show(scheme)} URL" if separator else "no URL scheme"
            expected = " or ".join(f"{option}://" for option in schemes)
            raise SettingsError(name, f"expected a {expected} URL, got {found}")
        return text

    def email(self, name: str) -> str | None:
        text = self.text(name)
        if text is not None and not _EMAIL.fullmatch(text):
            raise SettingsError(name, f"expected an email address, got {_show(text)}")
        return text


def _check_network(item: str) -> str | None:
    try:
        ipaddress.ip_network(item, strict=False)
    except ValueError:
        return f"expected IP addresses or CIDR networks, got {_show(item)}"
    return None


def _check_origin(item: str) -> str | None:
    if item == "*" or _ORIGIN.fullmatch(item):
        return None
    return f"expected origins like https://example.com (no path) or *, got {_show(item)}"


def _show(value: str, limit: int = 60) -> str:
    """A value quoted on one line, shortened when long."""
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def _mask_url_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return "***"
    if not has_password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    username = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{username}:***@{hostinfo}"))
