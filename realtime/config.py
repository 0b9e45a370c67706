"""Configuration: environment over `config.toml` over built-in defaults.

Every setting has one dotted name (its place in the TOML file), the environment
variables that may override it (the original TaskMaster guide's names first where
they exist, then `TASKMASTER_<SECTION>_<KEY>`), a parser and a default. A bad value
raises `ConfigError` whose message is one line naming the key and where the value
came from; the CLI prints it and exits, so a typo never starts a half-configured server.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MIN_PRODUCTION_SECRET = 32
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A setting is missing or malformed; str(self) is one line naming the key."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """Seconds from `3600`, `"90s"`, `"15m"`, `"12h"`, `"7d"` (the guide's JWT_EXPIRE form)."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 7d, 12h, 30m or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("must be a duration such as 7d, 12h, 30m or a number of seconds")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


def _whole_seconds(value: Any) -> float:
    # python-engineio advertises pingInterval as int(seconds) * 1000, so 0.5 s would be
    # announced as 0 and 1.5 s as 1000 ms; only whole seconds are announced truthfully.
    seconds = parse_duration(value)
    if seconds < 1 or seconds != int(seconds):
        raise ValueError("must be a whole number of seconds, at least 1s")
    return seconds


def _int_in(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"must be an integer between {lo} and {hi}")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"must be an integer between {lo} and {hi}") from None
        if not lo <= number <= hi:
            raise ValueError(f"must be an integer between {lo} and {hi}")
        return number

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value.strip()


def _url(schemes: set[str]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value)
        scheme = urlsplit(text).scheme
        if scheme not in schemes:
            raise ValueError(f"must be a URL with scheme {' or '.join(sorted(schemes))}")
        return text

    return parse


def _origins(value: Any) -> str:
    text = _text(value)
    for origin in filter(None, (part.strip() for part in text.split(","))):
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be * or a comma-separated list of http(s) origins")
    return text


def _networks(value: Any) -> tuple[IPNetwork, ...]:
    """Comma-separated addresses or CIDR networks (`10.0.0.0/8, 127.0.0.1`)."""
    networks = []
    for part in filter(None, (item.strip() for item in _text(value).split(","))):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or network") from None
    return tuple(networks)


def _duration_or_off(value: Any) -> float:
    """A duration, or 0 / "off" for none."""
    if str(value).strip().lower() in {"0", "off", "0s", "0.0"}:
        return 0.0
    return parse_duration(value)


def _transports(value: Any) -> tuple[str, ...]:
    names = tuple(part.strip() for part in _text(value).split(",") if part.strip())
    if not names or any(name not in {"websocket", "polling"} for name in names):
        raise ValueError("must be websocket, polling or websocket,polling")
    return names


def _one_of(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value).lower()
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return text

    return parse


def _log_level(value: Any) -> str:
    text = _text(value).upper()
    if text not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("must be one of debug, info, warning, error")
    return text


@dataclass(frozen=True)
class Setting:
    name: str  # dotted: section.key
    env: tuple[str, ...]
    parse: Callable[[Any], Any]
    default: Any
    field: str  # the Config attribute it fills


def _s(name: str, field: str, parse: Callable[[Any], Any], default: Any, *guide: str) -> Setting:
    env = (*guide, "TASKMASTER_" + name.replace(".", "_").upper())
    return Setting(name, env, parse, default, field)


SETTINGS: tuple[Setting, ...] = (
    _s("server.host", "host", _text, "127.0.0.1", "HOST"),
    _s("server.port", "port", _int_in(1, 65535), 8000, "PORT"),
    _s("server.production", "production", _bool, False),
    _s("server.instance_id", "instance_id", _text, ""),
    _s("server.log_level", "log_level", _log_level, "INFO", "LOG_LEVEL"),
    _s("server.log_format", "log_format", _one_of("json", "text"), "json"),
    _s("server.gc_gen0", "gc_gen0", _int_in(0, 10_000_000), 50_000),
    _s("server.backlog", "backlog", _int_in(16, 65535), 4096),
    _s("server.sentry_dsn", "sentry_dsn", _text, "", "SENTRY_DSN"),
    _s("server.max_body_bytes", "max_body_bytes", _int_in(1024, 64 << 20), 1 << 20),
    _s("store.url", "store_url", _url({"sqlite", "mongodb", "mongodb+srv"}),
       "sqlite:///data/taskmaster.db", "MONGODB_URI"),
    _s("store.tombstone_retention", "tombstone_retention", parse_duration, "30d"),
    _s("store.purge_interval", "purge_interval", parse_duration, "1h"),
    _s("store.timeout", "store_timeout", parse_duration, "5s"),
    _s("broker.url", "broker_url", _url({"memory", "redis", "rediss"}), "memory://",
       "REDIS_URL"),
    _s("auth.jwt_secret", "jwt_secret", _text, "", "JWT_SECRET"),
    _s("auth.jwt_expire", "jwt_expire", parse_duration, "7d", "JWT_EXPIRE"),
    _s("auth.jwt_issuer", "jwt_issuer", _text, "taskmaster"),
    _s("auth.jwt_audience", "jwt_audience", _text, "taskmaster-api"),
    # OWASP's m=7 MiB, t=5 (one of its five equally strong argon2id settings; the one that
    # costs least CPU here: 16 ms per verification against 21 for m=19 MiB, t=2).
    _s("auth.password_time_cost", "password_time_cost", _int_in(1, 20), 5),
    _s("auth.password_memory_kib", "password_memory_kib", _int_in(1024, 1 << 21), 7168),
    _s("auth.password_parallelism", "password_parallelism", _int_in(1, 16), 1),
    _s("auth.password_min_length", "password_min_length", _int_in(8, 128), 8),
    _s("http.frontend_url", "frontend_url", _origins, "http://localhost:3000", "FRONTEND_URL"),
    # The browser dashboard at / (handlers/dashboard.py); dashboard_dir "" = the web/ folder
    # of the source tree.
    _s("http.dashboard", "dashboard", _bool, True),
    _s("http.dashboard_dir", "dashboard_dir", _text, ""),
    _s("http.trusted_proxies", "trusted_proxies", _networks, ""),
    _s("http.hsts_max_age", "hsts_max_age", _int_in(0, 2 * 365 * 86400), 0),
    _s("http.compress_min_bytes", "compress_min_bytes", _int_in(0, 64 << 20), 1024),
    _s("rate_limit.window_ms", "rate_limit_window_ms", _int_in(1, 86_400_000), 900_000,
       "RATE_LIMIT_WINDOW_MS"),
    _s("rate_limit.max_requests", "rate_limit_max_requests", _int_in(0, 1_000_000_000), 1000,
       "RATE_LIMIT_MAX_REQUESTS"),
    # Finer limits (realtime/ratelimit.py); a max of 0 turns that one limit off.
    _s("rate_limit.enabled", "rate_limit_enabled", _bool, True),
    _s("rate_limit.user_max_requests", "rate_limit_user_max_requests",
       _int_in(0, 1_000_000_000), 1000),
    _s("rate_limit.auth_window_ms", "rate_limit_auth_window_ms", _int_in(1, 86_400_000),
       900_000),
    _s("rate_limit.auth_max_requests", "rate_limit_auth_max_requests",
       _int_in(0, 1_000_000_000), 30),
    _s("rate_limit.connect_window_ms", "rate_limit_connect_window_ms",
       _int_in(1, 86_400_000), 60_000),
    _s("rate_limit.connect_max", "rate_limit_connect_max", _int_in(0, 1_000_000_000), 300),
    _s("rate_limit.socket_window_ms", "rate_limit_socket_window_ms", _int_in(1, 86_400_000),
       10_000),
    _s("rate_limit.socket_max_events", "rate_limit_socket_max_events",
       _int_in(0, 1_000_000_000), 100),
    _s("api.list_limit_default", "list_limit_default", _int_in(1, 1000), 50),
    _s("api.list_limit_max", "list_limit_max", _int_in(1, 1000), 200),
    _s("api.sync_limit_max", "sync_limit_max", _int_in(1, 10000), 1000),
    _s("sockets.transports", "socket_transports", _transports, "websocket"),
    _s("sockets.serializer", "socket_serializer", _one_of("json", "msgpack"), "json"),
    _s("sockets.ping_interval", "ping_interval", _whole_seconds, "25s"),
    _s("sockets.ping_timeout", "ping_timeout", parse_duration, "20s"),
    _s("sockets.expiry_notice", "expiry_notice", parse_duration, "60s"),
    _s("sockets.max_message_bytes", "max_message_bytes", _int_in(1024, 64 << 20), 1 << 20),
    _s("sockets.max_pending_bytes", "max_pending_bytes", _int_in(4096, 1 << 30), 1 << 20),
    # Graceful drain on SIGTERM: sockets are told to reconnect elsewhere over `spread`,
    # and the process exits within `timeout` whatever is left.
    _s("drain.timeout", "drain_timeout", parse_duration, "30s"),
    _s("drain.spread", "drain_spread", parse_duration, "5s"),
    _s("sockets.max_per_user", "max_sockets_per_user", _int_in(0, 10_000_000), 100),
    _s("sockets.max_per_instance", "max_sockets_per_instance", _int_in(0, 10_000_000),
       100_000),
    _s("sockets.connect_timeout", "connect_timeout", parse_duration, "10s"),
    # Socket.IO CONNECTs handled at once (token check, store head reads, broker watch);
    # the others wait their turn, first come first served: a reconnect storm is paced.
    _s("sockets.max_connecting", "max_connecting", _int_in(1, 100_000), 64),
    _s("sockets.idle_timeout", "idle_timeout", _duration_or_off, "0"),
    # Benchmark-only routes (handlers/bench.py): off by default, refused in production.
    _s("bench.endpoints", "bench_endpoints", _bool, False),
)


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    production: bool
    instance_id: str
    log_level: str
    log_format: str
    gc_gen0: int
    backlog: int
    max_body_bytes: int
    sentry_dsn: str
    store_url: str
    tombstone_retention: float
    purge_interval: float
    store_timeout: float
    broker_url: str
    jwt_secret: str
    jwt_expire: float
    jwt_issuer: str
    jwt_audience: str
    password_time_cost: int
    password_memory_kib: int
    password_parallelism: int
    password_min_length: int
    frontend_url: str
    dashboard: bool
    dashboard_dir: str
    trusted_proxies: tuple[IPNetwork, ...]
    hsts_max_age: int
    compress_min_bytes: int
    rate_limit_window_ms: int
    rate_limit_max_requests: int
    rate_limit_enabled: bool
    rate_limit_user_max_requests: int
    rate_limit_auth_window_ms: int
    rate_limit_auth_max_requests: int
    rate_limit_connect_window_ms: int
    rate_limit_connect_max: int
    rate_limit_socket_window_ms: int
    rate_limit_socket_max_events: int
    list_limit_default: int
    list_limit_max: int
    sync_limit_max: int
    socket_transports: tuple[str, ...]
    socket_serializer: str
    ping_interval: float
    ping_timeout: float
    expiry_notice: float
    max_message_bytes: int
    max_pending_bytes: int
    drain_timeout: float
    drain_spread: float
    max_sockets_per_user: int
    max_sockets_per_instance: int
    connect_timeout: float
    max_connecting: int
    idle_timeout: float
    bench_endpoints: bool
    source: str = "defaults"

    @property
    def allowed_origins(self) -> tuple[str, ...]:
        """FRONTEND_URL as browser origins (`scheme://host[:port]`, lower case); `*` kept."""
        origins = []
        for part in filter(None, (item.strip() for item in self.frontend_url.split(","))):
            if part == "*":
                origins.append("*")
            else:
                parts = urlsplit(part)
                origins.append(f"{parts.scheme}://{parts.netloc}".lower())
        return tuple(origins)

    @property
    def embedded_store(self) -> bool:
        return self.store_url.startswith("sqlite:")

    def replace(self, **changes: Any) -> Config:
        from dataclasses import replace

        return replace(self, **changes)




def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config error: {path} is not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    known = {setting.name for setting in SETTINGS}
    for section, body in data.items():
        if not isinstance(body, dict):
            raise ConfigError(f"config error: {path}: [{section}] must be a table")
        for key, value in body.items():
            name = f"{section}.{key}"
            if name not in known:
                raise ConfigError(f"config error: {path}: unknown key {name}")
            flat[name] = value
    return flat


def load_config(
    env: Mapping[str, str] | None = None,
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the Config. `path` defaults to $TASKMASTER_CONFIG, then ./config.toml if present.

    `overrides` (dotted names) win over everything; tests and the CLI flags use it.
    """
    env = os.environ if env is None else env
    if path is None:
        path = env.get("TASKMASTER_CONFIG") or ("config.toml" if Path("config.toml").is_file()
                                                else None)
    file_values: dict[str, Any] = {}
    if path is not None:
        file_path = Path(path)
        if not file_path.is_file():
            raise ConfigError(f"config error: TASKMASTER_CONFIG={file_path} does not exist")
        file_values = _read_file(file_path)
    overrides = overrides or {}

    values: dict[str, Any] = {}
    for setting in SETTINGS:
        origin, raw = "default", setting.default
        for env_name in reversed(setting.env):  # TASKMASTER_* wins over the guide's name
            if env_name in env:
                origin, raw = f"environment {env_name}", env[env_name]
                break
        else:
            if setting.name in file_values:
                origin, raw = f"{path}", file_values[setting.name]
        if setting.name in overrides:
            origin, raw = "override", overrides[setting.name]
        try:
            values[setting.field] = setting.parse(raw)
        except ValueError as exc:
            hidden = "secret" in setting.name or "dsn" in setting.name
            shown = "<hidden>" if hidden else repr(raw)
            key = origin.split()[1] if origin.startswith("environment") else setting.name
            raise ConfigError(f"config error: {key} = {shown} (from {origin}): {exc}") from None

    node_env = env.get("NODE_ENV", "").strip().lower()
    if node_env == "production":
        values["production"] = True
    if not values["instance_id"]:
        values["instance_id"] = f"{socket.gethostname()}-{os.getpid()}"
    config = Config(**values, source=str(path) if path else "defaults")
    _check_combinations(config)
    return config


def _check_combinations(config: Config) -> None:
    secret = config.jwt_secret
    if config.production:
        if not secret:
            raise ConfigError("config error: JWT_SECRET is required in production mode")
        if len(secret.encode()) < MIN_PRODUCTION_SECRET:
            raise ConfigError(
                f"config error: JWT_SECRET must be at least {MIN_PRODUCTION_SECRET} bytes "
                "in production mode"
            )
        if "*" in (part.strip() for part in config.frontend_url.split(",")):
            raise ConfigError("config error: FRONTEND_URL must not be * in production mode")
        if config.bench_endpoints:
            raise ConfigError(
                "config error: bench.endpoints must be false in production mode "
                "(the benchmark routes skip per-request authentication)"
            )
    elif not secret and not config.embedded_store:
        raise ConfigError(
            "config error: JWT_SECRET is required when the store is not the embedded SQLite "
            "(every instance must share it)"
        )
    if config.drain_spread >= config.drain_timeout:
        raise ConfigError("config error: drain.spread must be shorter than drain.timeout "
                          "(the sockets must be told to leave before the process exits)")
    if config.list_limit_default > config.list_limit_max:
        raise ConfigError(
            "config error: api.list_limit_default must not exceed api.list_limit_max"
        )
