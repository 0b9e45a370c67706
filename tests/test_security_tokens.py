"""Forged, broken and stale tokens: each refused on REST (401 `unauthorized` saying why) and
on Socket.IO connect (`connect_error` saying why, `data.code` `unauthorized`).

Every attack is built from a token the server accepts (the control case proves it), so a
refusal is due to exactly the one thing the attack changed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from realtime import keys

from conftest import TEST_SECRET, Api
from socket_clients import Tab

INVALID = "invalid token"
EXPIRED = "token expired"
NOT_YET = "token not yet valid"
REVOKED = "token revoked"
HEADER_SHAPE = "the Authorization header must be 'Bearer <token>'"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64_json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def claims_for(api: Api, user_id: str, **overrides: Any) -> dict[str, Any]:
    config = api.app[keys.CONFIG]
    now = int(time.time())
    claims = {"sub": user_id, "iat": now, "exp": now + 3600, "jti": uuid.uuid4().hex,
              "iss": config.jwt_issuer, "aud": config.jwt_audience, **overrides}
    return {k: v for k, v in claims.items() if v is not None}


def signed(api: Api, user_id: str, secret: str = TEST_SECRET, **overrides: Any) -> str:
    return jwt.encode(claims_for(api, user_id, **overrides), secret, algorithm="HS256")


def hs256_by_hand(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """HMAC-SHA256 over any header and key (pyjwt refuses a PEM key as an HMAC secret, which
    is the point: the attacker uses their own code)."""
    signing_input = f"{b64_json(header)}.{b64_json(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def unsigned(claims: dict[str, Any], alg: str) -> str:
    return f"{b64_json({'alg': alg, 'typ': 'JWT'})}.{b64_json(claims)}."


def tampered_sub(token: str, victim: str) -> str:
    """The payload rewritten to name the victim, the original header and signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{b64_json({**claims, 'sub': victim})}.{signature}"


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[bytes, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, public_pem


Attack = Callable[[Api, str, str, tuple[bytes, bytes]], str]
# name -> (build(api, user_id, victim_id, rsa_pair) -> token, the message REST and connect give)
ATTACKS: dict[str, tuple[Attack, str]] = {
    "alg-none": (lambda api, me, _, __: unsigned(claims_for(api, me), "none"), INVALID),
    "alg-None": (lambda api, me, _, __: unsigned(claims_for(api, me), "None"), INVALID),
    "alg-NONE-with-a-signature": (
        lambda api, me, _, __: unsigned(claims_for(api, me), "NONE") + "c2lnbmF0dXJl", INVALID),
    "hs256-keyed-with-the-rsa-public-key": (
        lambda api, me, _, pair: hs256_by_hand({"alg": "HS256", "typ": "JWT"},
                                               claims_for(api, me), pair[1]), INVALID),
    "rs256-signed-with-the-rsa-private-key": (
        lambda api, me, _, pair: jwt.encode(claims_for(api, me), pair[0], algorithm="RS256"),
        INVALID),
    "rs256-header-on-an-hmac-signature": (
        lambda api, me, _, __: hs256_by_hand({"alg": "RS256", "typ": "JWT"},
                                             claims_for(api, me), TEST_SECRET.encode()),
        INVALID),
    "hs512-with-the-server-secret": (
        lambda api, me, _, __: hs256_by_hand({"alg": "HS512", "typ": "JWT"},
                                             claims_for(api, me), TEST_SECRET.encode()),
        INVALID),
    "tampered-payload-other-sub": (
        lambda api, me, victim, _: tampered_sub(signed(api, me), victim), INVALID),
    "signature-of-another-token": (
        lambda api, me, victim, _: ".".join(signed(api, victim).split(".")[:2]
                                            + signed(api, me).split(".")[2:]), INVALID),
    "signed-with-another-secret": (
        lambda api, me, _, __: signed(api, me, secret="another-secret-" + "y" * 40), INVALID),
    "signed-with-an-empty-secret": (
        lambda api, me, _, __: hs256_by_hand({"alg": "HS256", "typ": "JWT"},
                                             claims_for(api, me), b""), INVALID),
    "expired": (lambda api, me, _, __: signed(api, me, iat=int(time.time()) - 7200,
                                              exp=int(time.time()) - 1), EXPIRED),
    "not-yet-valid-nbf": (lambda api, me, _, __: signed(api, me, nbf=int(time.time()) + 600),
                          NOT_YET),
    "issued-in-the-future-iat": (
        lambda api, me, _, __: signed(api, me, iat=int(time.time()) + 600), NOT_YET),
    "wrong-issuer": (lambda api, me, _, __: signed(api, me, iss="someone-else"), INVALID),
    "wrong-audience": (lambda api, me, _, __: signed(api, me, aud="another-api"), INVALID),
    "audience-list-without-ours": (lambda api, me, _, __: signed(api, me, aud=["x", "y"]),
                                   INVALID),
    "missing-exp": (lambda api, me, _, __: signed(api, me, exp=None), INVALID),
    "missing-iat": (lambda api, me, _, __: signed(api, me, iat=None), INVALID),
    "missing-jti": (lambda api, me, _, __: signed(api, me, jti=None), INVALID),
    "missing-sub": (lambda api, me, _, __: signed(api, me, sub=None), INVALID),
    "sub-not-a-string": (lambda api, me, _, __: signed(api, me, sub=12345), INVALID),
    "exp-not-a-number": (lambda api, me, _, __: signed(api, me, exp="never"), INVALID),
    "three-dots": (lambda *_: "a.b.c.d", INVALID),
    "two-dots-only": (lambda *_: "..", INVALID),
    "one-part": (lambda *_: "eyJhbGciOiJIUzI1NiJ9", INVALID),
    "garbage-base64": (lambda *_: "!!!.@@@.###", INVALID),
    "header-not-json": (lambda api, me, _, __: b64(b"{not json") + "." + signed(api, me)
                        .split(".", 1)[1], INVALID),
    "non-ascii": (lambda *_: "ey\u00e9.\u2603.\U0001f600", INVALID),
    "huge-garbage": (lambda *_: "e" * 6000 + ".e30.e30", INVALID),
    "huge-claims-another-secret": (
        lambda api, me, _, __: signed(api, me, secret="z" * 48, pad="x" * 4000), INVALID),
}


async def refused_on_rest(api: Api, token: str) -> dict[str, Any]:
    """The token on a read and on a write: both 401, with the same error."""
    me = await api.get("/api/auth/me", token=token)
    write = await api.post("/api/tasks", token=token, json={"title": "should not exist"})
    assert (me.status, write.status) == (401, 401), (me.body, write.body)
    assert me.error == write.error
    return me.error


async def refused_on_connect(url: str, auth: Any) -> dict[str, Any]:
    tab = Tab(url, "unused")
    try:
        with pytest.raises(Exception, match="failed to connect"):
            await tab.client.connect(url, auth=auth, transports=["websocket"], wait_timeout=5)
    finally:
        await tab.close()
    assert tab.connect_error is not None
    return tab.connect_error  # type: ignore[no-any-return]


async def assert_nothing_written(owner: Api) -> None:
    listing = await owner.get("/api/tasks")
    assert listing.body["tasks"] == [], "a refused token wrote a task"


@pytest.mark.filterwarnings("ignore:The HMAC key")
@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_forged_and_broken_tokens_are_refused_on_rest_and_connect(
        api: Api, rsa_pair: tuple[bytes, bytes], attack: str) -> None:
    me, victim = await api.as_new_user(), await api.as_new_user()
    build, message = ATTACKS[attack]
    token = build(api, me.user["id"], victim.user["id"], rsa_pair)  # type: ignore[attr-defined]

    error = await refused_on_rest(api, token)
    assert error == {"code": "unauthorized", "message": message}, attack
    refusal = await refused_on_connect(str(api.client.make_url("/")), {"token": token})
    assert refusal["message"] == message, refusal
    assert refusal["data"] == {"code": "unauthorized"}

    for owner in (me, victim):
        await assert_nothing_written(owner)
    # The user's own token still works: only the forged one was refused.
    assert (await me.get("/api/auth/me")).status == 200


async def test_the_control_token_built_like_the_attacks_is_accepted(api: Api) -> None:
    """The attacks above are refused for what they change, not for how they are built."""
    me = await api.as_new_user()
    for token in (signed(api, me.user["id"]),  # type: ignore[attr-defined]
                  hs256_by_hand({"alg": "HS256", "typ": "JWT"},
                                claims_for(api, me.user["id"]),  # type: ignore[attr-defined]
                                TEST_SECRET.encode())):
        assert (await api.get("/api/auth/me", token=token)).status == 200
        tab = await Tab(str(api.client.make_url("/")), token).connect()
        try:
            assert tab.client.connected
        finally:
            await tab.close()


async def test_a_revoked_token_is_refused_everywhere_and_others_are_not(api: Api) -> None:
    me = await api.as_new_user()
    url = str(api.client.make_url("/"))
    other_session = await api.post("/api/auth/login", token=None, json={
        "email": me.user["email"], "password": "correct horse"})  # type: ignore[attr-defined]
    assert (await me.post("/api/auth/logout")).status == 204

    error = await refused_on_rest(api, me.token or "")
    assert error == {"code": "unauthorized", "message": REVOKED}
    refusal = await refused_on_connect(url, {"token": me.token})
    assert (refusal["message"], refusal["data"]) == (REVOKED, {"code": "unauthorized"})
    # Logging out again with the revoked token is refused too.
    again = await me.post("/api/auth/logout")
    assert (again.status, again.error["message"]) == (401, REVOKED)
    # Revocation is per token: the same user's other login still works.
    assert (await api.get("/api/auth/me", token=other_session.body["token"])).status == 200
    me.token = other_session.body["token"]
    await assert_nothing_written(me)


@pytest.mark.parametrize(("header", "message"), [
    ("", "missing token"), ("Bearer", HEADER_SHAPE), ("Bearer    ", HEADER_SHAPE),
    ("Bearer a.b.c.d", INVALID), ("Bearer ..", INVALID), ("bearer " + "e" * 7000, INVALID),
    ("Bearer x\tb.c", INVALID), ("JWT a.b.c", HEADER_SHAPE),
])
async def test_malformed_authorization_headers_are_refused(api: Api, header: str,
                                                           message: str) -> None:
    reply = await api.get("/api/tasks", token=None, headers={"Authorization": header})
    assert reply.status == 401
    assert reply.error == {"code": "unauthorized", "message": message}


@pytest.mark.parametrize(("auth", "message"), [
    ({"token": ""}, "missing token"), ({"token": None}, "missing token"),
    ({"token": ["a.b.c"]}, "missing token"), ({"token": {"$ne": ""}}, "missing token"),
    ({"token": "a.b.c.d"}, INVALID), ({"token": ".."}, INVALID),
    ({"token": "x" * 200_000}, INVALID), ({"Token": "wrong key"}, "missing token"),
    ("a bare string", "missing token"), (["a", "list"], "missing token"),
])
async def test_malformed_connect_auth_is_refused(api: Api, auth: Any, message: str) -> None:
    refusal = await refused_on_connect(str(api.client.make_url("/")), auth)
    assert message in refusal["message"], refusal
    assert refusal["data"] == {"code": "unauthorized"}
