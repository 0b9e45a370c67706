"""Typed application keys: every dependency a handler may reach, in one place."""

from __future__ import annotations

from aiohttp import web

from store import Store

from .auth import AuthService
from .broker import Broker
from .config import Config
from .metrics import Metrics
from .ratelimit import RateLimits
from .sockets import SocketGateway
from .tasks import TaskService

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
BROKER = web.AppKey("broker", Broker)
AUTH = web.AppKey("auth", AuthService)
TASKS = web.AppKey("tasks", TaskService)
SOCKETS = web.AppKey("sockets", SocketGateway)
STARTED_AT = web.AppKey("started_at", float)
METRICS = web.AppKey("metrics", Metrics)
RATE_LIMITS = web.AppKey("rate_limits", RateLimits)
