"""Optional error tracking: Sentry, when `server.sentry_dsn` (SENTRY_DSN) is set.

Off by default and not a dependency: `pip install 'taskmaster-realtime[sentry]'`. Error
log records and unhandled exceptions in handlers become events; no request bodies, no
cookies, no Authorization headers (the SDK sends no personal data by default), no
performance tracing. The SDK is process-wide by nature, so `taskmaster serve` starts it,
not create_app.
"""

from __future__ import annotations

import logging

from .config import Config, ConfigError


def init_error_tracking(config: Config) -> bool:
    """Start the Sentry SDK if a DSN is configured; True when it was started."""
    if not config.sentry_dsn:
        return False
    try:
        import sentry_sdk
        from sentry_sdk.integrations.aiohttp import AioHttpIntegration
        from sentry_sdk.integrations.logging import LoggingIntegration
    except ImportError:
        raise ConfigError("config error: SENTRY_DSN is set but sentry-sdk is not installed "
                          "(pip install 'taskmaster-realtime[sentry]')") from None
    try:
        sentry_sdk.init(
            dsn=config.sentry_dsn,
            environment="production" if config.production else "development",
            server_name=config.instance_id,
            traces_sample_rate=0.0,
            integrations=[AioHttpIntegration(),
                          LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
        )
    except Exception as exc:  # a malformed DSN: say which key, not the DSN (it holds a key)
        raise ConfigError(f"config error: SENTRY_DSN is not a valid Sentry DSN "
                          f"({type(exc).__name__})") from None
    return True
