"""Configuration precedence and start-up refusals (realtime/config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from realtime.auth import resolve_secret
from realtime.config import ConfigError, load_config, parse_duration


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_need_nothing() -> None:
    config = load_config(env={}, path=None)
    assert config.port == 8000 and config.host == "127.0.0.1"
    assert config.store_url.startswith("sqlite:") and config.broker_url == "memory://"
    assert config.jwt_expire == 7 * 86400 and not config.production


def test_environment_over_file_over_default(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 9001\nhost = "0.0.0.0"\n[auth]\njwt_expire = "2h"\n')
    config = load_config(env={"PORT": "9002"}, path=path)
    assert config.port == 9002  # environment wins
    assert config.host == "0.0.0.0"  # file wins over the default
    assert config.jwt_expire == 7200
    assert load_config(env={}, path=path).port == 9001


def test_prefixed_name_wins_over_the_guide_name() -> None:
    config = load_config(env={"PORT": "9002", "TASKMASTER_SERVER_PORT": "9003"}, path=None)
    assert config.port == 9003


def test_the_guides_variable_names_are_honoured() -> None:
    config = load_config(env={
        "MONGODB_URI": "mongodb://db:27017/tm", "REDIS_URL": "redis://cache:6379/0",
        "JWT_SECRET": "s" * 40, "JWT_EXPIRE": "30m", "FRONTEND_URL": "https://app.example",
        "RATE_LIMIT_WINDOW_MS": "60000", "RATE_LIMIT_MAX_REQUESTS": "100",
    }, path=None)
    assert config.store_url == "mongodb://db:27017/tm"
    assert config.broker_url == "redis://cache:6379/0"
    assert config.jwt_expire == 1800 and config.frontend_url == "https://app.example"
    assert (config.rate_limit_window_ms, config.rate_limit_max_requests) == (60000, 100)


@pytest.mark.parametrize(("env", "key"), [
    ({"PORT": "eighty"}, "PORT"),
    ({"PORT": "70000"}, "PORT"),
    ({"JWT_EXPIRE": "soon"}, "JWT_EXPIRE"),
    ({"JWT_EXPIRE": "0"}, "JWT_EXPIRE"),
    ({"MONGODB_URI": "postgres://x"}, "MONGODB_URI"),
    ({"REDIS_URL": "nats://x"}, "REDIS_URL"),
    ({"FRONTEND_URL": "not a url"}, "FRONTEND_URL"),
    ({"RATE_LIMIT_WINDOW_MS": "-5"}, "RATE_LIMIT_WINDOW_MS"),
    ({"RATE_LIMIT_MAX_REQUESTS": "many"}, "RATE_LIMIT_MAX_REQUESTS"),
    ({"TASKMASTER_SERVER_PRODUCTION": "maybe"}, "TASKMASTER_SERVER_PRODUCTION"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ({"TASKMASTER_SOCKETS_PING_INTERVAL": "500ms"}, "TASKMASTER_SOCKETS_PING_INTERVAL"),
    ({"TASKMASTER_SOCKETS_PING_INTERVAL": "1.5s"}, "TASKMASTER_SOCKETS_PING_INTERVAL"),
    ({"TASKMASTER_SOCKETS_TRANSPORTS": "carrier-pigeon"}, "TASKMASTER_SOCKETS_TRANSPORTS"),
    ({"TASKMASTER_SOCKETS_SERIALIZER": "xml"}, "TASKMASTER_SOCKETS_SERIALIZER"),
])
def test_a_bad_value_names_its_key_in_one_line(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env=env, path=None)
    message = str(caught.value)
    assert key in message and "\n" not in message


def test_a_bad_file_value_names_the_dotted_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = \"x\"\n")
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_config(env={}, path=path)
    with pytest.raises(ConfigError, match=r"unknown key server\.prot"):
        load_config(env={}, path=write(tmp_path, "[server]\nprot = 1\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(env={}, path=write(tmp_path, "[server\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(env={}, path=tmp_path / "missing.toml")


def test_secrets_are_never_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={"NODE_ENV": "production", "JWT_SECRET": "tooshort-secret"}, path=None)
    assert "tooshort-secret" not in str(caught.value)
    assert "JWT_SECRET" in str(caught.value)


@pytest.mark.parametrize("env", [
    {"NODE_ENV": "production"},
    {"TASKMASTER_SERVER_PRODUCTION": "true"},
    {"NODE_ENV": "production", "JWT_SECRET": "x" * 31},
    {"NODE_ENV": "production", "JWT_SECRET": "x" * 40, "FRONTEND_URL": "*"},
])
def test_production_refuses_weak_settings(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_config(env=env, path=None)


def test_production_starts_with_a_long_secret() -> None:
    config = load_config(env={"NODE_ENV": "production", "JWT_SECRET": "x" * 32}, path=None)
    assert config.production


def test_shared_stores_need_a_shared_secret() -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET is required"):
        load_config(env={"MONGODB_URI": "mongodb://localhost/tm"}, path=None)


@pytest.mark.parametrize(("text", "seconds"), [
    ("7d", 604800), ("12h", 43200), ("30m", 1800), ("45s", 45), ("500ms", 0.5),
    ("3600", 3600), (90, 90), ("2w", 1209600),
])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_a_generated_secret_is_kept_beside_the_database(tmp_path: Path) -> None:
    config = load_config(env={}, path=None,
                         overrides={"store.url": f"sqlite:///{tmp_path}/db/tm.db"})
    first = resolve_secret(config)
    kept = tmp_path / "db" / "jwt_secret"
    assert kept.is_file() and kept.stat().st_mode & 0o777 == 0o600
    assert len(first) >= 32 and resolve_secret(config) == first
    configured = config.replace(jwt_secret="y" * 40)
    assert resolve_secret(configured) == "y" * 40
