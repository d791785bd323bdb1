"""The configuration, declared once as `Settings` and read by `load_settings()`.

Each field is read from the variable of the same name in upper case, from the environment
or a `.env` file (read with python-dotenv; the environment wins); nothing is read at import
time. msgspec checks every value against its declared type and `Meta` constraints, then the
rules that involve several variables, or production, are checked. Every wrong variable is
reported at once, each on one line naming it, so the process never starts half-configured.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import quote

import msgspec
from dotenv.parser import parse_stream
from msgspec import Meta

__all__ = ["ModelOffer", "Provider", "Settings", "SettingsError", "load_settings"]

Port = Annotated[int, Meta(ge=1, le=65535)]
Count = Annotated[int, Meta(ge=1)]
Seconds = Annotated[float, Meta(gt=0)]
Email = Annotated[
    str, Meta(pattern=r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)*$", description="an email address")
]
Origin = Annotated[
    str,
    Meta(
        pattern=r"^(\*|[A-Za-z][A-Za-z0-9+.-]*://[^/\s?#]+)$",
        description="origins like https://example.com (no path) or *",
    ),
]
HttpUrl = Annotated[str, Meta(pattern=r"(?i)^https?://.", description="an http(s):// URL")]
PostgresUrl = Annotated[
    str, Meta(pattern=r"(?i)^postgres(ql)?://.", description="a postgresql:// URL")
]
RedisUrl = Annotated[
    str,
    Meta(pattern=r"(?i)^(rediss?|unix)://.", description="a redis://, rediss:// or unix:// URL"),
]

Provider = Literal["gemini", "openai", "echo"]
PROVIDERS: tuple[Provider, ...] = get_args(Provider)

_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_BOOLEANS = dict.fromkeys(("true", "1", "yes", "on"), True) | dict.fromkeys(
    ("false", "0", "no", "off"), False
)
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MIN_PRODUCTION_SECRET_KEY_LENGTH = 32
# The placeholder keys of guides and example files, lower-cased.
_PLACEHOLDER_KEY = re.compile(
    r"change|your[_-](super[_-]secure|secret)|replace[_-]me|placeholder|example"
    r"|^(secret([_-]?key)?|password)$"
)


class SettingsError(Exception):
    """A wrong configuration. `str()` is one line naming `variable`; `errors` holds this error
    first and then one for every other wrong variable found in the same reading."""

    def __init__(self, variable: str, problem: str, *others: SettingsError) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem
        self.errors: tuple[SettingsError, ...] = (self, *others)


class ModelOffer(msgspec.Struct, frozen=True):
    """A model a chat may pick: its `id` (what a chat stores and a request names, the
    model's own name) and the provider that serves it."""

    id: str
    provider: Provider


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """The whole configuration of one process, validated. Build it with `load_settings()`."""

    environment: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: Port = 8000
    workers: Count = 1
    shutdown_timeout_seconds: Annotated[float, Meta(ge=0)] = 30.0

    database_url: PostgresUrl | None = None
    postgres_user: str | None = None
    postgres_password: str | None = None
    postgres_db: str | None = None
    postgres_host: str | None = None
    postgres_port: Port = 5432
    data_dir: Path = Path("data")
    db_pool_min_size: Count = 2
    db_pool_max_size: Count = 20
    db_pool_timeout_seconds: Seconds = 5.0
    db_connect_timeout_seconds: Count = 5

    secret_key: str = ""  # outside production, unset means <data_dir>/secret_key
    access_token_expire_minutes: Count = 15
    refresh_token_expire_days: Count = 30
    admin_email: Email | None = None
    admin_password: str | None = None

    smtp_host: str | None = None
    smtp_port: Port = 587  # 465 when SMTP_SECURITY=tls
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    from_email: Email = "noreply@localhost"
    otp_ttl_seconds: Count = 600
    otp_max_attempts: Count = 5
    otp_resend_cooldown_seconds: Annotated[int, Meta(ge=0)] = 60
    otp_max_per_hour: Count = 5

    llm_provider: Provider = "echo"  # gemini with GOOGLE_API_KEY
    google_api_key: str | None = None
    gemini_model: str = "gemini-2.5-flash"
    gemini_base_url: HttpUrl | None = None
    openai_base_url: HttpUrl | None = None
    openai_api_key: str | None = None
    openai_model: str | None = None
    llm_models: tuple[str, ...] = ()  # [provider:]model, as given; see `models`
    llm_timeout_seconds: Seconds = 60.0
    llm_max_history_messages: Count = 50
    max_running_answers_per_user: Count = 3
    daily_token_quota: Annotated[int, Meta(ge=0)] | None = None  # unset: no limit
    daily_message_quota: Annotated[int, Meta(ge=0)] | None = None

    storage_backend: Literal["local", "s3"] = "local"
    upload_dir: Path = Path("uploads")
    max_upload_size: Count = 10_485_760
    upload_quota_bytes: Count = 1_073_741_824
    s3_bucket: str | None = None
    s3_endpoint_url: HttpUrl | None = None
    s3_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None

    rate_limit_requests: Count = 100
    rate_limit_window_seconds: Count = 3600
    auth_rate_limit_requests: Count = 10
    auth_rate_limit_window_seconds: Count = 60
    rate_limit_enabled: bool = True
    redis_url: RedisUrl | None = None
    trusted_proxies: tuple[str, ...] = ()
    cors_origins: tuple[Origin, ...] = ()
    allowed_hosts: tuple[str, ...] = ("*",)  # production: none, and it must be set

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] = "console"  # production: json
    log_dir: Path = Path("logs")
    metrics_enabled: bool = True  # production: false
    docs_enabled: bool = True  # production: false

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def is_development(self) -> bool:
        return self.environment == "development"

    @property
    def resolved_database_url(self) -> str | None:
        """`DATABASE_URL`, else one built from `POSTGRES_*`; `None` means the embedded server."""
        if self.database_url is not None or self.postgres_host is None:
            return self.database_url
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

    @property
    def models(self) -> tuple[ModelOffer, ...]:
        """The models a chat may pick, the default model first, then `LLM_MODELS` in order."""
        return _model_offers(self)[0]

    def _safe_items(self) -> Iterator[tuple[str, Any]]:
        """The fields, with secrets and URL passwords masked: they must never reach a log."""
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not None and name.endswith(("_password", "_key", "_key_id")):
                value = "***"
            elif value is not None and name.endswith("_url"):
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
    """Read, validate and return the settings, or raise `SettingsError` naming every wrong one.

    `environ` defaults to `os.environ`; `env_file` is read when it exists, and the
    environment wins over it. Empty or blank values count as unset. Outside production a
    missing `SECRET_KEY` is read from (or created in) `<DATA_DIR>/secret_key`.
    """
    problems: dict[str, str] = {}  # variable (or file:line) -> what is wrong with it
    from_file = _read_env_file(env_file, problems) if env_file and env_file.exists() else {}
    sources = (from_file, os.environ if environ is None else environ)  # the last one wins
    raw = {key: value for source in sources for key, value in source.items() if value.strip()}

    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(Settings):
        variable = field.name.upper()
        if variable not in raw:
            continue
        # A password may begin or end with a space.
        text = raw[variable] if field.name.endswith("_password") else raw[variable].strip()
        value = _parse(_unwrap(field.type)[0], text)
        try:
            values[field.name] = msgspec.convert(value, field.type)
        except msgspec.ValidationError as exc:
            problems[variable] = _problem(field.name, field.type, value, text, exc)

    # The defaults that depend on other variables. A value refused above counts as unset,
    # so the rules below still run; they never name a variable already refused.
    production = values.get("environment") == "production"
    derived_defaults = {
        "smtp_port": 465 if values.get("smtp_security") == "tls" else 587,
        "llm_provider": "gemini" if values.get("google_api_key") else "echo",
        "allowed_hosts": () if production else ("*",),
        "log_format": "json" if production else "console",
        "metrics_enabled": not production,
        "docs_enabled": not production,
    }
    settings = Settings(**(derived_defaults | values))
    for variable, problem in _rule_breaches(settings, provider_given="LLM_PROVIDER" in raw):
        problems.setdefault(variable, problem)
    if problems:
        first, *others = (SettingsError(*item) for item in problems.items())
        raise SettingsError(first.variable, first.problem, *others)
    return msgspec.structs.replace(
        settings, secret_key=settings.secret_key or _persistent_secret_key(settings.data_dir)
    )


def _model_offers(s: Settings) -> tuple[tuple[ModelOffer, ...], list[str]]:
    """The models on offer, the default first, and what is wrong with `LLM_MODELS`.

    An entry is `provider:model` (the provider's name in any case; the model's name may hold
    colons of its own, as Ollama's `llama3.2:3b`) or a bare `model` of `LLM_PROVIDER`. A model
    is known by its own name, so two providers may not offer the same one.
    """
    offers: dict[str, ModelOffer] = {}
    if s.default_model:
        offers[s.default_model] = ModelOffer(s.default_model, s.llm_provider)
    problems = []
    for entry in s.llm_models:
        prefix, colon, name = entry.partition(":")
        if not colon:
            offer = ModelOffer(entry, s.llm_provider)
        elif (provider := _provider_named(prefix)) is not None:
            offer = ModelOffer(name.strip(), provider)
        else:
            problems.append(
                f"unknown provider {_show(prefix)} in {_show(entry)}; expected "
                f"{', '.join(PROVIDERS)} before the colon (a model whose name has a colon "
                f"is written with its provider first: {s.llm_provider}:{entry})"
            )
            continue
        if not offer.id:
            problems.append(f"{_show(entry)} names no model after its provider")
            continue
        known = offers.setdefault(offer.id, offer)
        if known.provider != offer.provider:
            problems.append(
                f"{_show(offer.id)} is offered by both {known.provider} and {offer.provider}; "
                "a model is chosen by its name, so the names must differ"
            )
    return tuple(offers.values()), problems


def _provider_named(name: str) -> Provider | None:
    return next((provider for provider in PROVIDERS if provider == name.strip().lower()), None)


def _rule_breaches(s: Settings, *, provider_given: bool) -> Iterator[tuple[str, str]]:
    """The rules that involve more than one variable, then the production-only ones."""
    if s.db_pool_min_size > s.db_pool_max_size:
        low, high = s.db_pool_min_size, s.db_pool_max_size
        yield "DB_POOL_MIN_SIZE", f"must not exceed DB_POOL_MAX_SIZE ({low} > {high})"
    if (s.admin_email is None) != (s.admin_password is None):
        missing = "ADMIN_PASSWORD" if s.admin_password is None else "ADMIN_EMAIL"
        yield missing, "ADMIN_EMAIL and ADMIN_PASSWORD must be set together"
    offers, model_problems = _model_offers(s)
    yield from (("LLM_MODELS", problem) for problem in model_problems)
    # Each provider a model uses needs its settings, whether it is the default or not.
    for variable, value, provider in (
        ("GOOGLE_API_KEY", s.google_api_key, "gemini"),
        ("OPENAI_BASE_URL", s.openai_base_url, "openai"),
    ):
        named = next((offer for offer in offers if offer.provider == provider), None)
        if value is None and provider == s.llm_provider:
            yield variable, f"must be set when LLM_PROVIDER={provider}"
        elif value is None and named is not None:
            yield variable, f"must be set when LLM_MODELS names {provider}:{named.id}"
    for variable, value, chooser, choice in (
        ("OPENAI_MODEL", s.openai_model, "LLM_PROVIDER", "openai"),
        ("S3_BUCKET", s.s3_bucket, "STORAGE_BACKEND", "s3"),
    ):
        if value is None and getattr(s, chooser.lower()) == choice:
            yield variable, f"must be set when {chooser}={choice}"
    for proxy in s.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            yield "TRUSTED_PROXIES", f"expected IP addresses or CIDR networks, got {_show(proxy)}"

    if not s.is_production:
        if s.secret_key and len(s.secret_key) < _MIN_PRODUCTION_SECRET_KEY_LENGTH:
            # The token signer refuses it anyway; say so here, naming the variable.
            why = (
                f"must be at least {_MIN_PRODUCTION_SECRET_KEY_LENGTH} characters "
                "(or unset, outside production, for one kept in DATA_DIR)"
            )
            yield "SECRET_KEY", why
        return
    if problem := _weakness(s.secret_key):
        yield "SECRET_KEY", problem
    if s.smtp_host is None:
        yield "SMTP_HOST", "must be set in production, or no code can be mailed"
    if s.llm_provider == "echo" and not provider_given:
        why = (
            "would fall back to the offline echo model in production; set GOOGLE_API_KEY, "
            "configure LLM_PROVIDER=openai, or set LLM_PROVIDER=echo explicitly"
        )
        yield "LLM_PROVIDER", why
    if not s.allowed_hosts:
        yield "ALLOWED_HOSTS", "must list the host names in production"
    if s.resolved_database_url is None:
        why = (
            "must be set in production (or POSTGRES_HOST and the other POSTGRES_* variables); "
            "the embedded PostgreSQL is for development only"
        )
        yield "DATABASE_URL", why


def _weakness(key: str) -> str | None:
    """Why `key` must not sign production's tokens, if it must not."""
    if not key:
        return "must be set in production"
    if len(key) < _MIN_PRODUCTION_SECRET_KEY_LENGTH:
        return f"must be at least {_MIN_PRODUCTION_SECRET_KEY_LENGTH} characters in production"
    lowered = key.strip().lower()
    if _PLACEHOLDER_KEY.search(lowered) or len(set(lowered)) < 8:
        return (
            "looks like a placeholder; generate one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    return None


def _unwrap(hint: Any) -> tuple[Any, Meta | None]:
    """The type under `| None` and `Annotated`, and its `Meta`."""
    if get_origin(hint) is Union:
        hint = next(arg for arg in get_args(hint) if arg is not type(None))
    if get_origin(hint) is Annotated:
        kind, *extras = get_args(hint)
        return kind, next((extra for extra in extras if isinstance(extra, Meta)), None)
    return hint, None


def _parse(kind: Any, text: str) -> Any:
    """`text` as a value of `kind`, for msgspec to check; the text itself when it is not one."""
    if get_origin(kind) is tuple:
        return [item.strip() for item in text.split(",") if item.strip()]
    if get_origin(kind) is Literal:
        return next((option for option in get_args(kind) if option.lower() == text.lower()), text)
    if kind is bool:
        return _BOOLEANS.get(text.lower(), text)
    if kind is Path:
        return Path(text)
    if kind is int and _INTEGER.fullmatch(text):
        try:
            return int(text)
        except ValueError:  # more digits than int() reads: beyond any bound anyway
            return math.inf
    if kind is float and _NUMBER.fullmatch(text) and math.isfinite(number := float(text)):
        return number
    return text


def _problem(name: str, hint: Any, value: Any, text: str, exc: msgspec.ValidationError) -> str:
    """One line saying what is wrong with `text`, the value of the field `name`."""
    kind, meta = _unwrap(hint)
    if get_origin(kind) is tuple:  # msgspec names the wrong item: "... - at `$[2]`"
        found = re.search(r"\$\[(\d+)\]", str(exc))
        text = value[int(found[1])] if found else text
        kind, meta = _unwrap(get_args(kind)[0])
    shown = _show(text)
    if name.endswith("_url"):  # only the scheme: the rest may hold a password
        scheme, separator, _ = text.partition("://")
        shown = f"a {_show(scheme)} URL" if separator else "no URL scheme"
    if isinstance(value, str) and kind is not str:  # not even of the declared kind
        expected = {int: "an integer", float: "a number", bool: "true or false"}.get(kind)
        return f"expected {expected or 'one of ' + ', '.join(get_args(kind))}, got {shown}"
    assert meta is not None  # only a constraint can refuse a value of the right kind
    if meta.description:
        return f"expected {meta.description}, got {shown}"
    if meta.gt is not None:
        return f"must be more than {meta.gt}, got {shown}"
    bounds = f"between {meta.ge} and {meta.le}" if meta.le is not None else f"at least {meta.ge}"
    return f"must be {bounds}, got {shown}"


def _read_env_file(path: Path, problems: dict[str, str]) -> dict[str, str]:
    """The file's `KEY=VALUE` lines as python-dotenv reads them, without `${VAR}` expansion;
    each line it cannot read is added to `problems`, named by the file and line."""
    try:
        with path.open(encoding="utf-8-sig") as stream:
            bindings = list(parse_stream(stream))
    except (OSError, UnicodeDecodeError) as exc:
        problems[str(path)] = f"cannot read the env file: {exc}"
        return {}
    values = {}
    for binding in bindings:
        if binding.error or (binding.key is not None and not _ENV_KEY.fullmatch(binding.key)):
            chunk = binding.original.string  # starts with the blank lines before the statement
            line = binding.original.line + chunk[: len(chunk) - len(chunk.lstrip())].count("\n")
            problems[f"{path}:{line}"] = "expected KEY=VALUE"
        elif binding.key is not None and binding.value is not None:
            values[binding.key] = binding.value
    return values


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


def _show(value: str, limit: int = 60) -> str:
    """A value quoted on one line, shortened when long."""
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def _mask_url_password(url: str) -> str:
    """`scheme://user:***@host...`: the password of the URL's user-info part masked."""
    return re.sub(r"^([^:/]+://[^:/@]*:)[^/]*@", r"\1***@", url)
