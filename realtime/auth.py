"""Accounts and tokens: argon2id password hashes, HS256 JWTs, revocation by jti.

Timing: a login for an unknown e-mail verifies the password against a dummy hash
made with the same parameters, so it costs what a wrong password costs. Hashing
runs on a pool of its own, one thread per core (argon2 releases the GIL), so a
burst of logins queues instead of stalling the event loop or multiplying
argon2's memory. A pool rather than a semaphore in front of a shared one: a
thread takes the next hash the moment it is done, where a semaphore slot stayed
taken until the event loop got round to resuming the finished login (on the busy
REST benchmark that doubled how long a slot was held, and 4 logins in 10 queued).
(One thread fewer, to leave the loop a core, was tried: on two busy cores the one
hashing thread then got a quarter of a core and login p95 went from 0.23 to 2 s.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import argon2
import jwt

from store import Store, User

from .broker import Broker
from .config import Config
from .errors import ApiError, unauthorized
from .tokens import FastHS256
from .validation import iso

log = logging.getLogger(__name__)
ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iat", "jti", "sub", "iss", "aud")
VERIFIED_CACHE = 10_000  # tokens remembered as verified (FIFO)


@dataclass(frozen=True)
class Identity:
    """Who a valid token speaks for."""

    user_id: str
    jti: str
    expires_at: float
    token: str


def public_user(user: User) -> dict[str, Any]:
    return {"id": user["id"], "email": user["email"], "name": user["name"],
            "created_at": user["created_at"]}


def resolve_secret(config: Config) -> str:
    """The configured secret, or (embedded store only) one kept beside the database."""
    if config.jwt_secret:
        return config.jwt_secret
    from store.sqlite import SQLiteStore

    db_path = SQLiteStore(config.store_url).path
    secret_file = db_path.parent / "jwt_secret"
    if secret_file.is_file():
        secret = secret_file.read_text().strip()
        if len(secret) >= 32:
            log.info("using the JWT secret kept in %s (set JWT_SECRET to choose your own)",
                     secret_file)
            return secret
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    _write_private(secret_file, secret)
    log.warning("generated a JWT secret and kept it in %s (set JWT_SECRET to choose your own)",
                secret_file)
    return secret


def _write_private(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content + "\n")


def hashing_slots(cpus: int | None) -> int:
    """Hashing threads: one per core."""
    return max(1, cpus or 1)


class AuthService:
    def __init__(self, config: Config, store: Store, broker: Broker, secret: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.broker = broker
        self._secret = secret
        self._fast_tokens = FastHS256(secret, config.jwt_issuer, config.jwt_audience)
        self._clock = clock
        self._hasher = argon2.PasswordHasher(
            time_cost=config.password_time_cost,
            memory_cost=config.password_memory_kib,
            parallelism=config.password_parallelism,
        )
        self._hashing = ThreadPoolExecutor(hashing_slots(os.cpu_count()),
                                           thread_name_prefix="argon2")
        self._dummy_hash: str | None = None
        # Every unexpired revocation, kept in memory so that checking a token costs no
        # store round trip: loaded at start, extended by this instance's logouts and by
        # other instances' (control:revoke through the broker), and reloaded from the
        # store whenever the broker may have missed messages (control:resync).
        self._revoked: dict[str, float] = {}
        self._verified: dict[str, Identity] = {}
        self._reloads: set[asyncio.Task[None]] = set()

    # -- passwords ---------------------------------------------------------------

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._hashing, fn, *args)

    async def close(self) -> None:
        """Let running hashes finish (a few ms), drop queued ones; off the loop."""
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self._hashing.shutdown(wait=True, cancel_futures=True))

    async def _hash(self, password: str) -> str:
        result: str = await self._in_thread(self._hasher.hash, password)
        return result

    async def _verify(self, stored_hash: str, password: str) -> bool:
        def check() -> bool:
            try:
                return bool(self._hasher.verify(stored_hash, password))
            except argon2.exceptions.VerificationError:
                return False
            except argon2.exceptions.InvalidHashError:
                return False

        result: bool = await self._in_thread(check)
        return result

    async def warm_up(self) -> None:
        """Make the dummy hash now, so the first unknown-email login is not faster."""
        self._dummy_hash = await self._hash(secrets.token_urlsafe(16))

    async def start(self) -> None:
        await self.warm_up()
        await self.reload_revocations()
        self.broker.subscribe(self._on_broker_event)

    async def reload_revocations(self) -> None:
        self._revoked = {**await self.store.revocations(self._clock()), **self._revoked}
        self._forget_expired()

    def _on_broker_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "control:revoke" and isinstance(event.get("jti"), str):
            self._revoked[event["jti"]] = float(event.get("expires_at") or self._clock() + 1e9)
        elif kind == "control:resync":
            task = asyncio.ensure_future(self._reload_quietly())
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

    async def _reload_quietly(self) -> None:
        try:
            await self.reload_revocations()
        except ApiError:
            log.warning("could not reload revocations from the store; keeping what we have")

    # -- accounts ----------------------------------------------------------------

    async def register(self, email: str, password: str, name: str) -> tuple[str, User]:
        user = {
            "id": uuid.uuid4().hex, "email": email, "name": name,
            "password_hash": await self._hash(password),
            "created_at": iso(datetime.fromtimestamp(self._clock(), UTC)),
        }
        await self.store.create_user(user)
        return self.issue_token(user["id"]), user

    async def login(self, email: str, password: str) -> tuple[str, User]:
        user = await self.store.user_by_email(email)
        if user is None:
            if self._dummy_hash is None:
                await self.warm_up()
            assert self._dummy_hash is not None
            await self._verify(self._dummy_hash, password)
            raise unauthorized("invalid email or password")
        if not await self._verify(user["password_hash"], password):
            raise unauthorized("invalid email or password")
        if self._hasher.check_needs_rehash(user["password_hash"]):
            # Made with other parameters (an older default, or changed settings): rehash
            # while the password is at hand, so every login costs the same from now on.
            user = {**user, "password_hash": await self._hash(password)}
            await self.store.set_password_hash(user["id"], user["password_hash"])
        return self.issue_token(user["id"]), user

    async def user(self, identity: Identity) -> User:
        user = await self.store.user_by_id(identity.user_id)
        if user is None:
            raise unauthorized("the account of this token no longer exists")
        return user

    # -- tokens ------------------------------------------------------------------

    def issue_token(self, user_id: str) -> str:
        now = int(self._clock())
        claims = {
            "sub": user_id, "iat": now, "exp": now + int(self.config.jwt_expire),
            "jti": uuid.uuid4().hex, "iss": self.config.jwt_issuer,
            "aud": self.config.jwt_audience,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode(self, token: str) -> Identity:
        """Check signature, algorithm, expiry, issuer and audience (no revocation).

        A token already verified is remembered (its exact text, so nothing about it can
        differ): a client's next requests skip the HMAC and the JSON parsing, ~60 us
        each, and only its expiry is checked again."""
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at > self._clock():
                return known
            del self._verified[token]
        identity = self._check_token(token)
        if len(self._verified) >= VERIFIED_CACHE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = identity
        return identity

    def _check_token(self, token: str) -> Identity:
        claims = self._fast_tokens.verify(token)  # our own tokens' usual shape, or None
        if claims is None:
            claims = self._pyjwt_claims(token)
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("jti"), str):
            raise unauthorized("invalid token")
        return Identity(claims["sub"], claims["jti"], float(claims["exp"]), token)

    def _pyjwt_claims(self, token: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token, self._secret, algorithms=[ALGORITHM],
                audience=self.config.jwt_audience, issuer=self.config.jwt_issuer,
                options={"require": list(REQUIRED_CLAIMS)},
                leeway=0,
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("token expired") from None
        except jwt.ImmatureSignatureError:
            raise unauthorized("token not yet valid") from None
        except jwt.InvalidTokenError:
            raise unauthorized("invalid token") from None

    async def authenticate(self, token: str | None) -> Identity:
        if not token:
            raise unauthorized("missing token")
        identity = self.decode(token)
        if identity.jti in self._revoked:
            raise unauthorized("token revoked")
        return identity

    async def revoke(self, identity: Identity) -> None:
        """Refuse the token from now on, and drop its live sockets on every instance."""
        await self.store.revoke_token(identity.jti, identity.expires_at)
        self._revoked[identity.jti] = identity.expires_at
        self.broker.publish({"type": "control:revoke", "jti": identity.jti,
                             "expires_at": identity.expires_at})
        self._forget_expired()

    def _forget_expired(self) -> None:
        now = self._clock()
        for jti in [jti for jti, exp in self._revoked.items() if exp < now]:
            del self._revoked[jti]


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError("unauthorized", "the Authorization header must be 'Bearer <token>'")
    return token.strip()
