"""REST handlers: parse, authorise, call a service, respond. No storage or socket code."""

from __future__ import annotations

from aiohttp import web

from realtime import keys

from . import auth, bench, dashboard, system, tasks


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/auth/register", auth.register)
    app.router.add_post("/api/auth/login", auth.login)
    app.router.add_get("/api/auth/me", auth.me)
    app.router.add_post("/api/auth/logout", auth.logout)
    app.router.add_get("/api/tasks", tasks.list_tasks)
    app.router.add_post("/api/tasks", tasks.create_task)
    app.router.add_get("/api/tasks/stats", tasks.task_stats)
    app.router.add_get("/api/tasks/{task_id}", tasks.get_task)
    app.router.add_patch("/api/tasks/{task_id}", tasks.update_task)
    app.router.add_delete("/api/tasks/{task_id}", tasks.delete_task)
    app.router.add_get("/api/sync", tasks.sync)
    app.router.add_get("/api/health", system.health)
    app.router.add_get("/api/ready", system.ready)
    app.router.add_get("/api/openapi.json", system.openapi)
    app.router.add_get("/metrics", system.metrics)
    if app[keys.CONFIG].bench_endpoints:  # benchmark-only routes; never in production
        bench.setup(app)
    if app[keys.CONFIG].dashboard:  # last: its routes are the most general ones
        dashboard.setup(app)
