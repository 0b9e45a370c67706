"""realtime/tokens.py: the fast path accepts only what PyJWT accepts, with the same claims."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.tokens import FastHS256

SECRET = "s3cret-" + "x" * 60  # long enough for HS384 too
ISS, AUD = "taskmaster", "taskmaster-api"
REQUIRED = ["exp", "iat", "jti", "sub", "iss", "aud"]
FAST = FastHS256(SECRET, ISS, AUD)


def pyjwt(token: str) -> dict[str, Any] | None:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, SECRET, algorithms=["HS256"], audience=AUD, issuer=ISS,
            options={"require": REQUIRED}, leeway=0)
    except jwt.InvalidTokenError:
        return None
    return claims


def agrees(token: str) -> dict[str, Any] | None:
    """The fast path's answer, checked against PyJWT's."""
    fast = FAST.verify(token)
    if fast is not None:
        assert pyjwt(token) == fast, token
    return fast


def sign(body: Any, header: dict[str, Any], algorithm: str = "HS256") -> str:
    """A token over any JSON (PyJWT's encode refuses some claims' types)."""
    def segment(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384}[algorithm]
    signed = (segment(json.dumps({**header, "alg": algorithm}, separators=(",", ":")).encode())
              + "." + segment(json.dumps(body, separators=(",", ":")).encode()))
    return signed + "." + segment(hmac.new(SECRET.encode(), signed.encode(), digest).digest())


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "user-1", "jti": "abc", "iat": now - 5, "exp": now + 3600,
            "iss": ISS, "aud": AUD}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_this_servers_tokens_take_the_fast_path() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert agrees(token) == claims()


def test_refusals_are_left_to_pyjwt() -> None:
    now = int(time.time())
    refused = [
        jwt.encode(claims(exp=now - 1), SECRET, algorithm="HS256"),  # expired
        jwt.encode(claims(iat=now + 60), SECRET, algorithm="HS256"),  # issued in the future
        jwt.encode(claims(), "another secret, just as long as the first", algorithm="HS256"),
        jwt.encode(claims(iss="someone else"), SECRET, algorithm="HS256"),
        jwt.encode(claims(aud="another-api"), SECRET, algorithm="HS256"),
        jwt.encode(claims(sub=None), SECRET, algorithm="HS256"),
        jwt.encode(claims(), SECRET, algorithm="HS384"),
        jwt.encode(claims(), SECRET, algorithm="HS256") + "x",
        "e30.e30.",  # {}.{}. with no signature
    ]
    for token in refused:
        assert FAST.verify(token) is None, token
    # shapes PyJWT accepts but the fast path leaves to it
    for token in [jwt.encode(claims(aud=[AUD]), SECRET, algorithm="HS256"),
                  jwt.encode(claims(nbf=now - 1), SECRET, algorithm="HS256"),
                  jwt.encode(claims(exp=float(now + 60)), SECRET, algorithm="HS256"),
                  jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "1"})]:
        assert FAST.verify(token) is None and pyjwt(token) is not None, token


json_values = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=False), st.text(max_size=8),
                        st.lists(st.text(max_size=4), max_size=2))


@settings(max_examples=300, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(["sub", "jti", "iat", "exp", "iss", "aud",
                                                "nbf", "extra"]), json_values, max_size=3),
       algorithm=st.sampled_from(["HS256", "HS256", "HS384"]),
       header=st.sampled_from([{"typ": "JWT"}, {}, {"kid": "k", "typ": "JWT"},
                               {"typ": "jwt"}]))
def test_any_claims_the_fast_path_accepts_pyjwt_accepts_alike(
        changes: dict[str, Any], algorithm: str, header: dict[str, str]) -> None:
    agrees(sign({**claims(), **changes}, header, algorithm))


def test_the_signing_helper_makes_tokens_the_fast_path_takes() -> None:
    assert agrees(sign(claims(), {"typ": "JWT"})) == claims()  # else the above tests nothing


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ %"


@settings(max_examples=500, deadline=None)
@given(position=st.integers(0, 10_000), replacement=st.text(ALPHABET, max_size=3),
       cut=st.integers(0, 3))
def test_a_mangled_token_is_never_accepted_by_one_and_not_the_other(
        position: int, replacement: str, cut: int) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    at = position % (len(token) + 1)
    mangled = token[:at] + replacement + token[at + cut:]
    fast = agrees(mangled)
    if mangled != token and fast is not None:  # a different text still valid: same claims
        assert fast == claims()
