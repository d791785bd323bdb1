"""Unit tests of web.settings: defaults, validation, production rules, the key file, .env,
and what the CORS settings allow."""

from __future__ import annotations

import logging
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from web.edge import cors_config
from web.settings import ModelOffer, Settings, SettingsError, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
# A key given explicitly, so that property tests never touch the disk.
STRONG_KEY = "k3Y-9fQz7LmW2xRt8vBn4cHs6dJp1aGe5uYo0iTq"

PRODUCTION = {
    "ENVIRONMENT": "production",
    "SECRET_KEY": STRONG_KEY,
    "SMTP_HOST": "smtp.example.com",
    "GOOGLE_API_KEY": "AIza-test-key",
    "ALLOWED_HOSTS": "chat.example.com",
    "DATABASE_URL": "postgresql://app@db.internal:5432/app",
}


def load(data_dir: Path | None = None, /, **environ: str) -> Settings:
    if data_dir is not None:
        environ.setdefault("DATA_DIR", str(data_dir))
    else:
        environ.setdefault("SECRET_KEY", STRONG_KEY)
    return load_settings(environ=environ, env_file=None)


def refused(**environ: str) -> SettingsError:
    environ.setdefault("SECRET_KEY", STRONG_KEY)
    with pytest.raises(SettingsError) as caught:
        load_settings(environ=environ, env_file=None)
    message = str(caught.value)
    assert "\n" not in message
    return caught.value


# --- defaults ----------------------------------------------------------------


def test_defaults_follow_the_configuration_spec(tmp_path: Path) -> None:
    settings = load(tmp_path)

    assert settings.environment == "development"
    assert settings.is_development
    assert not settings.is_production
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.database_url is None
    assert settings.resolved_database_url is None
    assert settings.postgres_port == 5432
    assert settings.data_dir == tmp_path
    assert settings.embedded_database_dir == tmp_path / "postgres"
    assert (settings.db_pool_min_size, settings.db_pool_max_size) == (2, 20)
    assert settings.db_pool_timeout_seconds == 5.0
    assert settings.db_connect_timeout_seconds == 5
    assert (settings.access_token_expire_minutes, settings.refresh_token_expire_days) == (15, 30)
    assert settings.admin_email is None
    assert settings.admin_password is None
    assert settings.smtp_host is None
    assert settings.smtp_port == 587
    assert settings.smtp_security == "starttls"
    assert settings.from_email == "noreply@localhost"
    assert (
        settings.otp_ttl_seconds,
        settings.otp_max_attempts,
        settings.otp_resend_cooldown_seconds,
        settings.otp_max_per_hour,
    ) == (600, 5, 60, 5)
    assert settings.llm_provider == "echo"
    assert settings.default_model == "echo"
    assert settings.llm_models == ()
    assert settings.models == (ModelOffer("echo", "echo"),)
    assert settings.gemini_model == "gemini-2.5-flash"
    assert settings.gemini_base_url is None
    assert settings.llm_timeout_seconds == 60
    assert settings.llm_max_history_messages == 50
    assert settings.storage_backend == "local"
    assert settings.upload_dir == Path("uploads")
    assert settings.max_upload_size == 10_485_760
    assert settings.upload_quota_bytes == 1_073_741_824
    assert (settings.rate_limit_requests, settings.rate_limit_window_seconds) == (100, 3600)
    assert (settings.auth_rate_limit_requests, settings.auth_rate_limit_window_seconds) == (10, 60)
    assert settings.rate_limit_enabled is True
    assert settings.redis_url is None
    assert settings.trusted_proxies == ()
    assert settings.cors_origins == ()
    assert settings.allowed_hosts == ("*",)
    assert settings.log_level == "INFO"
    assert settings.log_format == "console"
    assert settings.log_dir == Path("logs")
    assert settings.shutdown_timeout_seconds == 30
    assert settings.metrics_enabled is True
    assert settings.docs_enabled is True


def test_google_api_key_selects_gemini_and_its_model() -> None:
    settings = load(GOOGLE_API_KEY="AIza-test")

    assert settings.llm_provider == "gemini"
    assert settings.default_model == "gemini-2.5-flash"
    assert settings.models == (ModelOffer("gemini-2.5-flash", "gemini"),)


def test_llm_models_always_allow_the_default_model_first() -> None:
    settings = load(
        GOOGLE_API_KEY="AIza-test",
        GEMINI_MODEL="gemini-2.5-pro",
        LLM_MODELS="gemini-2.5-flash, gemini-2.5-pro,,gemini-2.5-flash",
    )

    assert [offer.id for offer in settings.models] == ["gemini-2.5-pro", "gemini-2.5-flash"]


def test_openai_provider_needs_its_base_url_and_model() -> None:
    assert refused(LLM_PROVIDER="openai", OPENAI_MODEL="m").variable == "OPENAI_BASE_URL"
    assert (
        refused(LLM_PROVIDER="openai", OPENAI_BASE_URL="http://127.0.0.1:11434/v1").variable
        == "OPENAI_MODEL"
    )
    settings = load(
        LLM_PROVIDER="OpenAI", OPENAI_BASE_URL="http://127.0.0.1:11434/v1", OPENAI_MODEL="llama"
    )
    assert settings.llm_provider == "openai"
    assert settings.default_model == "llama"
    assert settings.models == (ModelOffer("llama", "openai"),)


def test_gemini_provider_needs_an_api_key() -> None:
    assert refused(LLM_PROVIDER="gemini").variable == "GOOGLE_API_KEY"


# --- several providers -------------------------------------------------------

OLLAMA = "http://127.0.0.1:11434/v1"


def test_llm_models_entries_may_name_their_provider() -> None:
    settings = load(
        GOOGLE_API_KEY="AIza-test",
        OPENAI_BASE_URL=OLLAMA,
        LLM_MODELS="gemini-2.5-pro, OpenAI:llama3.2, echo:echo, openai:qwen2.5:7b-instruct",
    )

    assert settings.llm_provider == "gemini"
    assert settings.models == (
        ModelOffer("gemini-2.5-flash", "gemini"),  # the default, first
        ModelOffer("gemini-2.5-pro", "gemini"),  # no prefix: LLM_PROVIDER's
        ModelOffer("llama3.2", "openai"),
        ModelOffer("echo", "echo"),
        ModelOffer("qwen2.5:7b-instruct", "openai"),  # a colon of the model's own
    )


def test_an_entry_without_a_prefix_belongs_to_the_default_provider() -> None:
    settings = load(
        LLM_PROVIDER="openai",
        OPENAI_BASE_URL=OLLAMA,
        OPENAI_MODEL="llama3.2",
        LLM_MODELS="mistral, echo:echo, llama3.2, openai:llama3.2",
    )

    assert settings.models == (
        ModelOffer("llama3.2", "openai"),
        ModelOffer("mistral", "openai"),
        ModelOffer("echo", "echo"),
    )


def test_an_unknown_provider_prefix_names_llm_models() -> None:
    error = refused(LLM_MODELS="echo:echo, antrhopic:claude")

    assert error.variable == "LLM_MODELS"
    assert "unknown provider 'antrhopic'" in error.problem
    assert "gemini, openai, echo" in error.problem
    # A model name with a colon, given bare, is read as a provider prefix: say how to write it.
    error = refused(
        LLM_PROVIDER="openai", OPENAI_BASE_URL=OLLAMA, OPENAI_MODEL="m", LLM_MODELS="llama3.2:3b"
    )
    assert error.variable == "LLM_MODELS"
    assert "openai:llama3.2:3b" in error.problem
    assert refused(LLM_MODELS="openai:").variable == "LLM_MODELS"


def test_a_provider_named_in_llm_models_needs_its_settings() -> None:
    error = refused(LLM_MODELS="gemini:gemini-2.5-pro")
    assert str(error) == "GOOGLE_API_KEY: must be set when LLM_MODELS names gemini:gemini-2.5-pro"
    error = refused(LLM_MODELS="openai:llama3.2")
    assert str(error) == "OPENAI_BASE_URL: must be set when LLM_MODELS names openai:llama3.2"
    # Not OPENAI_MODEL: the entry names the model; that is only the default's.
    assert load(OPENAI_BASE_URL=OLLAMA, LLM_MODELS="openai:llama3.2").models == (
        ModelOffer("echo", "echo"),
        ModelOffer("llama3.2", "openai"),
    )


def test_every_missing_provider_setting_is_named_at_once() -> None:
    error = refused(LLM_MODELS="gemini:gemini-2.5-pro, openai:llama3.2, mystery:model")

    assert [e.variable for e in error.errors] == [
        "LLM_MODELS",
        "GOOGLE_API_KEY",
        "OPENAI_BASE_URL",
    ]


def test_two_providers_may_not_offer_the_same_model_name() -> None:
    error = refused(OPENAI_BASE_URL=OLLAMA, LLM_MODELS="openai:echo")
    assert error.variable == "LLM_MODELS"
    assert "'echo' is offered by both echo and openai" in error.problem

    error = refused(
        GOOGLE_API_KEY="AIza-test", OPENAI_BASE_URL=OLLAMA, LLM_MODELS="llama, openai:llama"
    )
    assert "'llama' is offered by both gemini and openai" in error.problem


def test_the_same_entry_twice_is_one_model() -> None:
    settings = load(LLM_MODELS="echo, echo:echo, ECHO:echo")

    assert settings.models == (ModelOffer("echo", "echo"),)


def test_s3_storage_needs_a_bucket() -> None:
    assert refused(STORAGE_BACKEND="s3").variable == "S3_BUCKET"
    assert load(STORAGE_BACKEND="s3", S3_BUCKET="uploads").s3_bucket == "uploads"


def test_implicit_tls_moves_the_default_smtp_port_to_465() -> None:
    assert load(SMTP_SECURITY="tls").smtp_port == 465
    assert load(SMTP_SECURITY="tls", SMTP_PORT="2465").smtp_port == 2465


def test_production_defaults_turn_off_docs_metrics_and_console_logs() -> None:
    settings = load(**PRODUCTION)

    assert settings.is_production
    assert settings.log_format == "json"
    assert settings.metrics_enabled is False
    assert settings.docs_enabled is False
    assert settings.allowed_hosts == ("chat.example.com",)


def test_empty_and_blank_values_count_as_unset() -> None:
    settings = load(PORT="", LOG_LEVEL="   ", ADMIN_EMAIL="", DATABASE_URL="")

    assert settings.port == 8000
    assert settings.log_level == "INFO"
    assert settings.admin_email is None
    assert settings.database_url is None


def test_unknown_variables_are_ignored() -> None:
    assert load(NOT_A_SETTING="whatever", PATH="/usr/bin").port == 8000


def test_settings_are_immutable() -> None:
    settings = load()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_repr_hides_secrets_and_url_passwords() -> None:
    settings = load(
        SECRET_KEY="s3cr3t-value-that-is-long-enough-0123456789",
        GOOGLE_API_KEY="AIza-hidden",
        SMTP_PASSWORD="mail-pass",
        ADMIN_EMAIL="root@example.com",
        ADMIN_PASSWORD="admin-pass",
        DATABASE_URL="postgresql://app:db-pass@db:5432/app",
        REDIS_URL="redis://:redis-pass@cache:6379/0",
        AWS_SECRET_ACCESS_KEY="aws-hidden",
    )

    text = repr(settings)
    for secret in ("s3cr3t", "AIza-hidden", "mail-pass", "admin-pass", "db-pass", "redis-pass"):
        assert secret not in text
    assert "aws-hidden" not in text
    assert "postgresql://app:***@db:5432/app" in text
    assert "root@example.com" in text
    assert "db-pass" not in str(settings.__rich_repr__())


def test_reading_settings_has_no_import_time_side_effect() -> None:
    source = (REPO_ROOT / "src" / "web" / "settings.py").read_text()
    assert not re.search(r"^\w+\s*=\s*load_settings\(", source, flags=re.MULTILINE)


# --- invalid values name their variable --------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "0"),
        ("PORT", "65536"),
        ("PORT", "9" * 5000),
        ("WORKERS", "0"),
        ("POSTGRES_PORT", "x"),
        ("SMTP_PORT", "99999"),
        ("DB_POOL_MIN_SIZE", "0"),
        ("DB_POOL_MAX_SIZE", "-1"),
        ("DB_POOL_TIMEOUT_SECONDS", "0"),
        ("DB_POOL_TIMEOUT_SECONDS", "nan"),
        ("DB_CONNECT_TIMEOUT_SECONDS", "1.5"),
        ("ACCESS_TOKEN_EXPIRE_MINUTES", "0"),
        ("REFRESH_TOKEN_EXPIRE_DAYS", "-3"),
        ("OTP_TTL_SECONDS", "ten"),
        ("OTP_RESEND_COOLDOWN_SECONDS", "-1"),
        ("LLM_TIMEOUT_SECONDS", "inf"),
        ("LLM_TIMEOUT_SECONDS", "-5"),
        ("SHUTDOWN_TIMEOUT_SECONDS", "-1"),
        ("MAX_UPLOAD_SIZE", "0"),
        ("UPLOAD_QUOTA_BYTES", "1e9"),
        ("RATE_LIMIT_WINDOW_SECONDS", "0"),
        ("RATE_LIMIT_ENABLED", "maybe"),
        ("METRICS_ENABLED", "2"),
        ("ENVIRONMENT", "staging"),
        ("LLM_PROVIDER", "claude"),
        ("SMTP_SECURITY", "ssl"),
        ("STORAGE_BACKEND", "ftp"),
        ("LOG_LEVEL", "verbose"),
        ("LOG_FORMAT", "xml"),
        ("DATABASE_URL", "mysql://user:pw@host/db"),
        ("DATABASE_URL", "localhost:5432"),
        ("OPENAI_BASE_URL", "localhost:11434"),
        ("REDIS_URL", "http://cache"),
        ("ADMIN_EMAIL", "not-an-email"),
        ("FROM_EMAIL", "two@@signs"),
        ("TRUSTED_PROXIES", "10.0.0.0/8, proxy.local"),
        ("CORS_ORIGINS", "example.com"),
    ],
)
def test_an_invalid_value_names_its_variable(variable: str, value: str) -> None:
    environ = {variable: value}
    if variable == "ADMIN_EMAIL":
        environ["ADMIN_PASSWORD"] = "pw"
    error = refused(**environ)

    assert error.variable == variable
    assert str(error).startswith(f"{variable}: ")


def test_the_message_shows_the_bad_value_on_one_line() -> None:
    assert str(refused(PORT="abc")) == "PORT: expected an integer, got 'abc'"
    assert "\\n" in str(refused(PORT="8\n0"))


def test_a_url_error_does_not_echo_its_password() -> None:
    message = str(refused(DATABASE_URL="mysql://user:hunter2@host/db"))

    assert "hunter2" not in message
    assert "'mysql'" in message


def test_pool_bounds_must_be_ordered() -> None:
    error = refused(DB_POOL_MIN_SIZE="10", DB_POOL_MAX_SIZE="5")

    assert error.variable == "DB_POOL_MIN_SIZE"
    assert "DB_POOL_MAX_SIZE" in str(error)


def test_admin_email_and_password_go_together() -> None:
    assert refused(ADMIN_EMAIL="root@example.com").variable == "ADMIN_PASSWORD"
    assert refused(ADMIN_PASSWORD="pw").variable == "ADMIN_EMAIL"


def test_case_insensitive_enumerations_are_normalised() -> None:
    settings = load(ENVIRONMENT="Test", LOG_LEVEL="debug", STORAGE_BACKEND="LOCAL")

    assert settings.environment == "test"
    assert settings.log_level == "DEBUG"
    assert settings.storage_backend == "local"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PORT": "0"}, "PORT: must be between 1 and 65535, got '0'"),
        ({"WORKERS": "0"}, "WORKERS: must be at least 1, got '0'"),
        ({"LLM_TIMEOUT_SECONDS": "0"}, "LLM_TIMEOUT_SECONDS: must be more than 0, got '0'"),
        (
            {"SHUTDOWN_TIMEOUT_SECONDS": "-1"},
            "SHUTDOWN_TIMEOUT_SECONDS: must be at least 0, got '-1'",
        ),
        ({"UPLOAD_QUOTA_BYTES": "1e9"}, "UPLOAD_QUOTA_BYTES: expected an integer, got '1e9'"),
        (
            {"DB_POOL_TIMEOUT_SECONDS": "nan"},
            "DB_POOL_TIMEOUT_SECONDS: expected a number, got 'nan'",
        ),
        ({"DOCS_ENABLED": "maybe"}, "DOCS_ENABLED: expected true or false, got 'maybe'"),
        ({"SMTP_SECURITY": "ssl"}, "SMTP_SECURITY: expected one of starttls, tls, none, got 'ssl'"),
        ({"FROM_EMAIL": "nobody"}, "FROM_EMAIL: expected an email address, got 'nobody'"),
        (
            {"CORS_ORIGINS": "https://ok.example, example.com"},
            "CORS_ORIGINS: expected origins like https://example.com (no path) or *, "
            "got 'example.com'",
        ),
        (
            {"DATABASE_URL": "mysql://user:hunter2@host/db"},
            "DATABASE_URL: expected a postgresql:// URL, got a 'mysql' URL",
        ),
        (
            {"REDIS_URL": "cache:6379"},
            "REDIS_URL: expected a redis://, rediss:// or unix:// URL, got no URL scheme",
        ),
    ],
)
def test_the_declared_type_and_bounds_word_the_message(
    environ: dict[str, str], message: str
) -> None:
    assert str(refused(**environ)) == message


def test_every_wrong_variable_is_reported_at_once() -> None:
    error = refused(
        PORT="abc",
        WORKERS="0",
        LOG_LEVEL="loud",
        ADMIN_EMAIL="root@example.com",
        TRUSTED_PROXIES="proxy.local",
    )

    assert [e.variable for e in error.errors] == [
        "PORT",
        "WORKERS",
        "LOG_LEVEL",
        "ADMIN_PASSWORD",
        "TRUSTED_PROXIES",
    ]
    assert error.errors[0] is error
    assert all("\n" not in str(e) and str(e).startswith(f"{e.variable}: ") for e in error.errors)


def test_a_variable_refused_for_its_value_is_not_refused_again_by_a_rule() -> None:
    error = refused(ADMIN_EMAIL="not-an-email", ADMIN_PASSWORD="pw")

    assert [str(e) for e in error.errors] == [
        "ADMIN_EMAIL: expected an email address, got 'not-an-email'"
    ]


# --- production refusals -----------------------------------------------------


def test_a_complete_production_configuration_starts() -> None:
    assert load(**PRODUCTION).secret_key == STRONG_KEY


def test_production_refuses_a_missing_secret_key(tmp_path: Path) -> None:
    environ = {key: value for key, value in PRODUCTION.items() if key != "SECRET_KEY"}
    environ["DATA_DIR"] = str(tmp_path)
    with pytest.raises(SettingsError) as caught:
        load_settings(environ=environ, env_file=None)

    assert caught.value.variable == "SECRET_KEY"
    assert not (tmp_path / "secret_key").exists()


def test_production_refuses_a_short_secret_key() -> None:
    error = refused(**{**PRODUCTION, "SECRET_KEY": "short-but-random-9f8e7d"})

    assert str(error) == "SECRET_KEY: must be at least 32 characters in production"


@pytest.mark.parametrize(
    "key",
    [
        "your_super_secure_secret_key_here_change_it",
        "please-change-this-secret-key-before-deploying",
        "x" * 40,
        "replace-me-with-a-real-random-value-0123456789",
    ],
)
def test_production_refuses_a_placeholder_secret_key(key: str) -> None:
    assert refused(**{**PRODUCTION, "SECRET_KEY": key}).variable == "SECRET_KEY"


def test_production_refuses_a_missing_mail_server() -> None:
    environ = {key: value for key, value in PRODUCTION.items() if key != "SMTP_HOST"}

    assert refused(**environ).variable == "SMTP_HOST"


def test_production_refuses_falling_back_to_the_echo_model() -> None:
    environ = {key: value for key, value in PRODUCTION.items() if key != "GOOGLE_API_KEY"}

    assert refused(**environ).variable == "LLM_PROVIDER"


def test_production_accepts_the_echo_model_when_chosen_explicitly() -> None:
    environ = {key: value for key, value in PRODUCTION.items() if key != "GOOGLE_API_KEY"}

    assert load(**environ, LLM_PROVIDER="echo").llm_provider == "echo"


def test_production_requires_allowed_hosts() -> None:
    environ = {key: value for key, value in PRODUCTION.items() if key != "ALLOWED_HOSTS"}

    assert str(refused(**environ)) == "ALLOWED_HOSTS: must list the host names in production"


def test_production_refuses_to_start_without_a_database() -> None:
    environ = {key: value for key, value in PRODUCTION.items() if key != "DATABASE_URL"}
    error = refused(**environ, POSTGRES_USER="app", POSTGRES_DB="app")

    assert error.variable == "DATABASE_URL"
    assert "POSTGRES_HOST" in str(error)
    assert [e.variable for e in error.errors] == ["DATABASE_URL"]


def test_production_accepts_the_postgres_variables_as_its_database() -> None:
    environ = {key: value for key, value in PRODUCTION.items() if key != "DATABASE_URL"}
    settings = load(**environ, POSTGRES_HOST="db.internal", POSTGRES_USER="app")

    assert settings.resolved_database_url == "postgresql://app@db.internal:5432"


def test_the_embedded_database_is_still_fine_outside_production(tmp_path: Path) -> None:
    assert load(tmp_path, ENVIRONMENT="test").resolved_database_url is None


def test_production_names_everything_it_misses_at_once() -> None:
    error = refused(ENVIRONMENT="production", SECRET_KEY="short")

    assert [e.variable for e in error.errors] == [
        "SECRET_KEY",
        "SMTP_HOST",
        "LLM_PROVIDER",
        "ALLOWED_HOSTS",
        "DATABASE_URL",
    ]


def test_a_short_secret_key_is_refused_everywhere_with_the_way_out() -> None:
    error = refused(SECRET_KEY="dev")
    assert error.variable == "SECRET_KEY"
    assert "at least 32 characters" in str(error)
    assert "unset" in str(error)
    long_enough = "d" * 32
    assert load(SECRET_KEY=long_enough).secret_key == long_enough  # no randomness rules


# --- the development secret key file -----------------------------------------


def test_a_secret_key_is_generated_once_per_data_dir(tmp_path: Path) -> None:
    first = load(tmp_path).secret_key
    second = load(tmp_path).secret_key
    key_file = tmp_path / "secret_key"

    assert first == second
    assert len(first) >= 32
    assert key_file.read_text().strip() == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["secret_key"]


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = set(pool.map(lambda _: load(tmp_path).secret_key, range(16)))

    assert keys == {(tmp_path / "secret_key").read_text().strip()}
    assert [path.name for path in tmp_path.iterdir()] == ["secret_key"]


def test_each_data_dir_gets_its_own_key_and_the_directory_is_created(tmp_path: Path) -> None:
    one = load(tmp_path / "one" / "nested").secret_key
    two = load(tmp_path / "two").secret_key

    assert one != two
    assert (tmp_path / "one" / "nested" / "secret_key").is_file()


def test_an_existing_key_file_is_used(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("kept-from-an-earlier-run\n")

    assert load(tmp_path).secret_key == "kept-from-an-earlier-run"


def test_an_explicit_secret_key_leaves_the_data_dir_alone(tmp_path: Path) -> None:
    given = "given-" + "k" * 32
    assert load(tmp_path, SECRET_KEY=given).secret_key == given
    assert not (tmp_path / "secret_key").exists()


def test_an_unusable_key_file_is_a_settings_error(tmp_path: Path) -> None:
    (tmp_path / "secret_key").mkdir()
    with pytest.raises(SettingsError) as caught:
        load(tmp_path)

    assert caught.value.variable == "SECRET_KEY"


def test_an_empty_key_file_is_a_settings_error(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("\n")
    with pytest.raises(SettingsError, match=r"^SECRET_KEY: "):
        load(tmp_path)


# --- the .env file -----------------------------------------------------------


def test_env_file_syntax(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# a comment\n"
        "\n"
        "PORT=9001\n"
        "export HOST = 10.1.2.3\n"
        "SMTP_PASSWORD=' spaced secret '\n"
        'GEMINI_MODEL="gemini-2.5-pro"  # trailing comment\n'
        "LOG_LEVEL=debug # inline comment\n"
        "FROM_EMAIL=\n"
        "UNKNOWN_THING=ignored\n"
    )

    settings = load_settings(environ={"SECRET_KEY": STRONG_KEY}, env_file=env_file)

    assert settings.port == 9001
    assert settings.host == "10.1.2.3"
    assert settings.smtp_password == " spaced secret "
    assert settings.gemini_model == "gemini-2.5-pro"
    assert settings.log_level == "DEBUG"
    assert settings.from_email == "noreply@localhost"


def test_the_environment_wins_over_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9001\nWORKERS=3\nHOST=10.0.0.1\n")

    settings = load_settings(
        environ={"SECRET_KEY": STRONG_KEY, "PORT": "9002", "HOST": ""}, env_file=env_file
    )

    assert settings.port == 9002
    assert settings.workers == 3
    assert settings.host == "10.0.0.1"


def test_a_missing_env_file_is_skipped(tmp_path: Path) -> None:
    settings = load_settings(environ={"SECRET_KEY": STRONG_KEY}, env_file=tmp_path / "absent")

    assert settings.port == 8000


@pytest.mark.parametrize(
    "line", ["NOT A ASSIGNMENT", "=value", "KEY='unterminated", 'KEY="a" b', "1KEY=x"]
)
def test_a_malformed_env_file_line_names_the_file_and_line(tmp_path: Path, line: str) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"PORT=8000\n{line}\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"SECRET_KEY": STRONG_KEY}, env_file=env_file)

    assert str(caught.value).startswith(f"{env_file}:2: ")


def test_every_malformed_env_file_line_is_named_with_the_variables(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# settings\n\nNOT AN ASSIGNMENT\nPORT=eighty\n\n\n=value\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"SECRET_KEY": STRONG_KEY, "WORKERS": "0"}, env_file=env_file)

    assert [e.variable for e in caught.value.errors] == [
        f"{env_file}:3",
        f"{env_file}:7",
        "PORT",
        "WORKERS",
    ]


def test_env_file_values_are_taken_literally(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("HOST=10.0.0.1\nSMTP_PASSWORD=pa$${HOST}ss\nPOSTGRES_PASSWORD='${HOST}'\n")

    settings = load_settings(environ={"SECRET_KEY": STRONG_KEY}, env_file=env_file)

    assert settings.smtp_password == "pa$${HOST}ss"
    assert settings.postgres_password == "${HOST}"


def test_invalid_values_from_the_env_file_name_their_variable(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=eighty\n")
    with pytest.raises(SettingsError, match=r"^PORT: "):
        load_settings(environ={"SECRET_KEY": STRONG_KEY}, env_file=env_file)


def test_env_example_is_a_valid_configuration(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"DATA_DIR": str(tmp_path)}, env_file=REPO_ROOT / ".env.example"
    )

    assert settings == load(tmp_path)  # it spells out the defaults


def test_env_example_lists_every_variable() -> None:
    example = (REPO_ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    expected = {field.upper() for field in Settings.__struct_fields__}

    assert listed == expected


# --- databases ---------------------------------------------------------------


def test_database_url_wins_over_postgres_variables() -> None:
    settings = load(
        DATABASE_URL="postgresql://app:pw@db.internal:5433/app",
        POSTGRES_HOST="other",
        POSTGRES_USER="u",
    )

    assert settings.resolved_database_url == "postgresql://app:pw@db.internal:5433/app"


def test_postgres_variables_build_a_quoted_url() -> None:
    settings = load(
        POSTGRES_USER="app user",
        POSTGRES_PASSWORD="p@ss:w/rd%",
        POSTGRES_HOST="db.internal",
        POSTGRES_PORT="6543",
        POSTGRES_DB="gemini",
    )

    url = settings.resolved_database_url
    assert url == "postgresql://app%20user:p%40ss%3Aw%2Frd%25@db.internal:6543/gemini"
    parts = urlsplit(url)
    assert (parts.hostname, parts.port) == ("db.internal", 6543)


def test_postgres_variables_without_a_host_mean_the_embedded_server() -> None:
    assert load(POSTGRES_USER="app", POSTGRES_DB="gemini").resolved_database_url is None


def test_postgres_ipv6_host_is_bracketed() -> None:
    url = load(POSTGRES_HOST="::1", POSTGRES_USER="app").resolved_database_url

    assert url == "postgresql://app@[::1]:5432"


# --- lists -------------------------------------------------------------------


def test_lists_are_split_stripped_and_empty_items_dropped() -> None:
    settings = load(
        CORS_ORIGINS=" http://localhost:3000 ,, https://chat.example.com,",
        TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8 ,::1,192.168.1.7/24",
        ALLOWED_HOSTS="a.example.com,b.example.com",
    )

    assert settings.cors_origins == ("http://localhost:3000", "https://chat.example.com")
    assert settings.trusted_proxies == ("127.0.0.1", "10.0.0.0/8", "::1", "192.168.1.7/24")
    assert settings.allowed_hosts == ("a.example.com", "b.example.com")


# --- properties --------------------------------------------------------------

list_item = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters=","), min_size=1
).filter(lambda item: item.strip() == item and item != "")


@given(st.integers(min_value=1, max_value=65535))
def test_any_port_in_range_is_accepted(port: int) -> None:
    assert load(PORT=str(port)).port == port


@given(st.one_of(st.integers(max_value=0), st.integers(min_value=65536)))
def test_any_port_out_of_range_is_refused(port: int) -> None:
    assert refused(PORT=str(port)).variable == "PORT"


@given(st.text())
def test_any_port_text_is_accepted_or_refused_naming_port(text: str) -> None:
    stripped = text.strip()
    if not stripped:
        assert load(PORT=text).port == 8000
    elif re.fullmatch(r"[+-]?[0-9]+", stripped) and 1 <= int(stripped) <= 65535:
        assert load(PORT=text).port == int(stripped)
    else:
        assert refused(PORT=text).variable == "PORT"


def outcome(**environ: str) -> Settings | SettingsError:
    try:
        return load(**environ)
    except SettingsError as error:
        return error


@given(st.text())
def test_any_boolean_text_parses_or_names_its_variable(text: str) -> None:
    result = outcome(RATE_LIMIT_ENABLED=text)

    if isinstance(result, SettingsError):
        assert result.variable == "RATE_LIMIT_ENABLED"
        assert "\n" not in str(result)
    else:
        spelling = text.strip().lower()
        assert result.rate_limit_enabled is (spelling in {"", "true", "1", "yes", "on"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TRUE", True),
        ("Yes", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("NO", False),
        ("Off", False),
        ("0", False),
    ],
)
def test_boolean_spellings(text: str, expected: bool) -> None:
    assert load(DOCS_ENABLED=text).docs_enabled is expected


@given(st.lists(list_item, max_size=8))
def test_comma_lists_round_trip(items: list[str]) -> None:
    assert load(ALLOWED_HOSTS=",".join(items)).allowed_hosts == (tuple(items) if items else ("*",))


@given(
    st.dictionaries(st.sampled_from(["PORT", "WORKERS", "LOG_LEVEL", "DOCS_ENABLED"]), st.text())
)
def test_arbitrary_values_raise_only_settings_errors(environ: dict[str, str]) -> None:
    result = outcome(**environ)

    if isinstance(result, SettingsError):
        assert result.variable in environ
        assert "\n" not in str(result)


# --- CORS: what CORS_ORIGINS, or its absence, allows --------------------------


@get("/ping", sync_to_thread=False)
def ping() -> str:
    return "pong"


async def preflight(settings: Settings, origin: str) -> str | None:
    """The origin a browser at ``origin`` is allowed to read as, if any."""
    app = Litestar(route_handlers=[ping], cors_config=cors_config(settings))
    async with AsyncTestClient(app) as client:
        response = await client.options(
            "/ping", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
        )
    return response.headers.get("access-control-allow-origin")


@pytest.mark.parametrize(
    "origin", ["http://localhost:3000", "http://127.0.0.1:5173", "http://[::1]:8080"]
)
async def test_development_allows_local_origins_by_default(origin: str) -> None:
    assert await preflight(load(), origin) == origin


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://localhost.evil.example", "http://10.0.0.7:3000"]
)
async def test_development_allows_no_other_origin_by_default(origin: str) -> None:
    assert await preflight(load(), origin) is None


@pytest.mark.parametrize("environment", [PRODUCTION, {"ENVIRONMENT": "test"}])
async def test_production_and_test_allow_no_origin_unless_configured(
    environment: dict[str, str],
) -> None:
    settings = load(**environment)

    assert cors_config(settings) is None
    assert await preflight(settings, "http://localhost:3000") is None


async def test_configured_origins_replace_the_local_ones() -> None:
    for environ in (PRODUCTION, {}):
        settings = load(**environ, CORS_ORIGINS="https://app.example.com")

        assert await preflight(settings, "https://app.example.com") == "https://app.example.com"
        assert await preflight(settings, "http://localhost:3000") is None


def test_the_local_origins_are_announced_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="web.edge"):
        cors_config(load())
        cors_config(load(CORS_ORIGINS="https://app.example.com"))

    [record] = caplog.records
    assert "http://localhost:<port>" in record.getMessage()
    assert "development" in record.getMessage()
