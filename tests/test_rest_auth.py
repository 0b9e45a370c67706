"""`/api/auth/*` through the real app over HTTP: register, login, me, logout, and
every way a token can be refused."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest

from realtime import keys
from realtime.app import create_app
from realtime.auth import hashing_slots

from conftest import TEST_SECRET, Api, make_config
from waiting import eventually


def mint(api: Api, user_id: str, *, secret: str = TEST_SECRET, algorithm: str = "HS256",
         drop: tuple[str, ...] = (), **claims: Any) -> str:
    """A token signed like the server's, with any claim overridden or dropped."""
    config = api.app[keys.CONFIG]
    now = int(time.time())
    payload = {"sub": user_id, "iat": now, "exp": now + 3600, "jti": uuid.uuid4().hex,
               "iss": config.jwt_issuer, "aud": config.jwt_audience, **claims}
    for name in drop:
        del payload[name]
    return jwt.encode(payload, secret, algorithm=algorithm)


# -- register -------------------------------------------------------------------------


async def test_register_returns_token_and_public_user(api: Api) -> None:
    reply = await api.post("/api/auth/register", token=None, json={
        "email": "ada@example.com", "password": "correct horse", "name": "Ada"})
    assert reply.status == 201
    user = reply.body["user"]
    assert user["email"] == "ada@example.com"
    assert user["name"] == "Ada"
    assert "password_hash" not in user and "password" not in user
    me = await api.get("/api/auth/me", token=reply.body["token"])
    assert me.status == 200
    assert me.body["user"] == user


async def test_register_duplicate_email_is_a_conflict(api: Api) -> None:
    await api.register(email="dup@example.com")
    reply = await api.post("/api/auth/register", token=None, json={
        "email": "dup@example.com", "password": "another password", "name": "Other"})
    assert reply.status == 409
    assert reply.error["code"] == "conflict"


async def test_email_is_case_insensitive(api: Api) -> None:
    first = await api.register(email="Mixed.Case@Example.COM", password="correct horse")
    assert first["user"]["email"] == "mixed.case@example.com"
    again = await api.post("/api/auth/register", token=None, json={
        "email": "MIXED.case@example.com", "password": "correct horse", "name": "Twin"})
    assert again.status == 409
    assert again.error["code"] == "conflict"
    login = await api.post("/api/auth/login", token=None, json={
        "email": "mixed.CASE@EXAMPLE.com", "password": "correct horse"})
    assert login.status == 200
    assert login.body["user"]["id"] == first["user"]["id"]


async def test_register_rejects_short_password_and_bad_email(api: Api) -> None:
    reply = await api.post("/api/auth/register", token=None, json={
        "email": "not-an-email", "password": "short", "name": ""})
    assert reply.status == 400
    assert reply.error["code"] == "invalid"
    assert set(reply.error["details"]["fields"]) == {"email", "password", "name"}


# -- login ----------------------------------------------------------------------------


async def test_login_returns_a_working_token(api: Api) -> None:
    registered = await api.register(email="login@example.com", password="correct horse")
    reply = await api.post("/api/auth/login", token=None, json={
        "email": "login@example.com", "password": "correct horse"})
    assert reply.status == 200
    assert reply.body["user"] == registered["user"]
    assert reply.body["token"] != registered["token"]
    me = await api.get("/api/auth/me", token=reply.body["token"])
    assert me.status == 200
    assert me.body["user"]["id"] == registered["user"]["id"]


async def test_wrong_password_and_unknown_email_look_the_same(api: Api) -> None:
    await api.register(email="known@example.com", password="correct horse")
    wrong = await api.post("/api/auth/login", token=None, json={
        "email": "known@example.com", "password": "wrong horse"})
    unknown = await api.post("/api/auth/login", token=None, json={
        "email": "nobody@example.com", "password": "correct horse"})
    assert wrong.status == unknown.status == 401
    assert wrong.error["code"] == unknown.error["code"] == "unauthorized"
    assert wrong.error["message"] == unknown.error["message"]
    assert wrong.body == unknown.body


# -- me and logout --------------------------------------------------------------------


async def test_me_requires_a_token(api: Api) -> None:
    reply = await api.get("/api/auth/me", token=None)
    assert reply.status == 401
    assert reply.error["code"] == "unauthorized"
    assert reply.error["message"] == "missing token"


async def test_me_answers_who_the_token_speaks_for(user_api: Api) -> None:
    reply = await user_api.get("/api/auth/me")
    assert reply.status == 200
    assert reply.body["user"] == user_api.user  # type: ignore[attr-defined]


async def test_logout_revokes_the_token_at_once(user_api: Api) -> None:
    other_session = await user_api.post("/api/auth/login", token=None, json={
        "email": user_api.user["email"], "password": "correct horse"})  # type: ignore[attr-defined]
    assert other_session.status == 200

    reply = await user_api.post("/api/auth/logout")
    assert reply.status == 204
    assert reply.body is None
    for method, path in (("GET", "/api/auth/me"), ("GET", "/api/tasks"),
                         ("POST", "/api/auth/logout")):
        refused = await user_api.request(method, path)
        assert refused.status == 401, (method, path)
        assert refused.error == {"code": "unauthorized", "message": "token revoked"}
    # Only that token: another session of the same user still works.
    still = await user_api.get("/api/auth/me", token=other_session.body["token"])
    assert still.status == 200


async def test_revocation_is_kept_in_the_store(user_api: Api) -> None:
    """Other instances share the store, so the revocation must be in it, not only here."""
    jti = jwt.decode(user_api.token or "", options={"verify_signature": False})["jti"]
    store = user_api.app[keys.STORE]
    assert await store.is_revoked(jti) is False
    assert (await user_api.post("/api/auth/logout")).status == 204
    assert await store.is_revoked(jti) is True


# -- refused tokens -------------------------------------------------------------------


async def test_expired_token_is_refused(user_api: Api) -> None:
    user_id = user_api.user["id"]  # type: ignore[attr-defined]
    now = int(time.time())
    expired = mint(user_api, user_id, iat=now - 7200, exp=now - 60)
    reply = await user_api.get("/api/auth/me", token=expired)
    assert reply.status == 401
    assert reply.error == {"code": "unauthorized", "message": "token expired"}
    # The same claims, still in date, are accepted: the expiry is what was refused.
    fresh = mint(user_api, user_id)
    assert (await user_api.get("/api/auth/me", token=fresh)).status == 200


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{header}.{payload}.{flipped}"


def _none_alg(api: Api, user_id: str) -> str:
    return mint(api, user_id, secret="", algorithm="none")  # type: ignore[arg-type]


def _swapped_payload(api: Api, user_id: str, victim: str) -> str:
    """The signature of a real token on a payload naming someone else."""
    mine = mint(api, user_id).split(".")
    forged = mint(api, victim, secret="another secret " + "y" * 32).split(".")
    return f"{mine[0]}.{forged[1]}.{mine[2]}"


@pytest.mark.filterwarnings("ignore:The HMAC key")  # HS512 with the server's own secret
@pytest.mark.parametrize("case", [
    "tampered-signature", "wrong-secret", "wrong-audience", "wrong-issuer", "alg-none",
    "alg-hs512", "no-exp", "no-jti", "no-sub", "no-iss", "no-aud", "swapped-payload",
    "not-a-jwt", "control-valid-token",
])
async def test_bad_tokens_are_refused(user_api: Api, case: str) -> None:
    user_id = user_api.user["id"]  # type: ignore[attr-defined]
    tokens = {
        "tampered-signature": lambda: _tampered(mint(user_api, user_id)),
        "wrong-secret": lambda: mint(user_api, user_id, secret="z" * 48),
        "wrong-audience": lambda: mint(user_api, user_id, aud="someone-else"),
        "wrong-issuer": lambda: mint(user_api, user_id, iss="evil"),
        "alg-none": lambda: _none_alg(user_api, user_id),
        "alg-hs512": lambda: mint(user_api, user_id, algorithm="HS512"),
        "no-exp": lambda: mint(user_api, user_id, drop=("exp",)),
        "no-jti": lambda: mint(user_api, user_id, drop=("jti",)),
        "no-sub": lambda: mint(user_api, user_id, drop=("sub",)),
        "no-iss": lambda: mint(user_api, user_id, drop=("iss",)),
        "no-aud": lambda: mint(user_api, user_id, drop=("aud",)),
        "swapped-payload": lambda: _swapped_payload(user_api, user_id, "victim"),
        "not-a-jwt": lambda: "definitely.not.a-token",
        "control-valid-token": lambda: mint(user_api, user_id),
    }
    reply = await user_api.get("/api/auth/me", token=tokens[case]())
    if case == "control-valid-token":  # the control: a well-formed token works
        assert reply.status == 200
        return
    assert reply.status == 401, case
    assert reply.error["code"] == "unauthorized"
    assert reply.error["message"] == "invalid token"


async def test_token_of_a_user_that_does_not_exist(api: Api) -> None:
    ghost = mint(api, "no-such-user")
    reply = await api.get("/api/auth/me", token=ghost)
    assert reply.status == 401
    assert reply.error["code"] == "unauthorized"


async def test_unknown_email_costs_one_verification_like_a_wrong_password(api: Api) -> None:
    """Same time without a timed test: both paths run exactly one argon2 verification,
    against hashes made with the same parameters."""
    user = await api.as_new_user()
    auth = api.app[keys.AUTH]
    real_hasher = auth._hasher
    verified: list[str] = []

    class CountingHasher:
        def verify(self, stored_hash: str, password: str) -> bool:
            verified.append(stored_hash.rsplit("$", 2)[0])  # algorithm, version, parameters
            return bool(real_hasher.verify(stored_hash, password))

    auth._hasher = CountingHasher()
    try:
        for email in (user.user["email"], "nobody-at-all@example.com"):
            reply = await api.post("/api/auth/login", token=None,
                                   json={"email": email, "password": "wrong password"})
            assert reply.status == 401
    finally:
        auth._hasher = real_hasher
    assert len(verified) == 2 and verified[0] == verified[1]
    assert verified[0].startswith("$argon2id$")


async def test_a_hash_with_other_parameters_is_replaced_at_the_next_login(
        tmp_path: Path, aiohttp_client: Any, openapi_checker: Any) -> None:
    old = Api(await aiohttp_client(create_app(make_config(tmp_path))), openapi_checker)
    await old.register(email="older@example.com", password="correct horse")
    # The same database under newer hashing parameters (another release, or new settings).
    newer = make_config(tmp_path, **{"auth.password_time_cost": 2})
    api = Api(await aiohttp_client(create_app(newer)), openapi_checker)
    store = api.app[keys.STORE]
    assert ",t=1," in (await store.user_by_email("older@example.com"))["password_hash"]
    for _ in range(2):  # rehashed by the first login; the second verifies the new hash
        reply = await api.post("/api/auth/login", token=None, json={
            "email": "older@example.com", "password": "correct horse"})
        assert reply.status == 200
        assert ",t=2," in (await store.user_by_email("older@example.com"))["password_hash"]
    wrong = await api.post("/api/auth/login", token=None, json={
        "email": "older@example.com", "password": "wrong horse"})
    assert wrong.status == 401


def test_hashing_runs_one_hash_per_core() -> None:
    assert [hashing_slots(n) for n in (None, 1, 2, 16)] == [1, 1, 2, 16]


async def test_concurrent_logins_hash_no_more_at_once_than_the_slots(api: Api) -> None:
    await api.register(email="many@example.com", password="correct horse")
    auth = api.app[keys.AUTH]
    real, running, most = auth._hasher, [0], [0]
    lock, release = threading.Lock(), threading.Event()

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def verify(self, stored: str, password: str) -> bool:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            try:
                release.wait(10)  # hold the slot until the test has looked
                return bool(real.verify(stored, password))
            finally:
                with lock:
                    running[0] -= 1

    auth._hasher = Counting()
    slots = hashing_slots(os.cpu_count())
    logins = asyncio.gather(*(api.post("/api/auth/login", token=None, json={
        "email": "many@example.com", "password": "correct horse"}) for _ in range(8)))
    try:
        await eventually(lambda: running[0] == slots, 10, "every hashing thread busy")
    finally:
        release.set()
    replies = await logins
    assert [r.status for r in replies] == [200] * 8
    assert most[0] == slots
