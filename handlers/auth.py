"""`/api/auth/*`: register, login, me, logout."""

from __future__ import annotations

from aiohttp import web

from realtime import keys, validation
from realtime.auth import public_user

from .middleware import identity, json_response, read_json


async def register(request: web.Request) -> web.Response:
    config = request.app[keys.CONFIG]
    fields = validation.credentials(await read_json(request), register=True,
                                    password_min=config.password_min_length)
    token, user = await request.app[keys.AUTH].register(
        fields["email"], fields["password"], fields["name"])
    return json_response({"token": token, "user": public_user(user)}, status=201)


async def login(request: web.Request) -> web.Response:
    fields = validation.credentials(await read_json(request), register=False, password_min=1)
    token, user = await request.app[keys.AUTH].login(fields["email"], fields["password"])
    return json_response({"token": token, "user": public_user(user)})


async def me(request: web.Request) -> web.Response:
    user = await request.app[keys.AUTH].user(await identity(request))
    return json_response({"user": public_user(user)})


async def logout(request: web.Request) -> web.Response:
    await request.app[keys.AUTH].revoke(await identity(request))
    return web.Response(status=204)
