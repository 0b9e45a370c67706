"""A bare Redis connection: commands packed by hand in RESP, replies parsed by hiredis.

The broker's two hot connections are built on it: the subscription (subscriber.py) and the
publisher (publisher.py). Why not redis-py: its retry wrapper, connection pool, timeout
contexts, command packing and response callbacks cost more of the event loop than the
work itself at the fan-out benchmark's rates. Here a write is one `transport.write` and a
read takes whatever has arrived and lets hiredis split it into replies (RESP2: no HELLO).

Opening: connect (TLS for rediss://, with the default context: certificate and host name
checked), AUTH with the URL's password or ACL user and password, SELECT the URL's database
when it is not 0 (as redis-py does; pub/sub ignores it), CLIENT SETNAME. The caller bounds
the time of every step.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import hiredis
from redis.connection import SSLConnection, parse_url

READ_SIZE = 1 << 16


class BareConnectionError(ConnectionError):
    """Redis refused a command, or the connection ended."""


def encode_command(*args: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class BareConnection:
    error: type[BareConnectionError] = BareConnectionError  # what this kind raises
    role = "redis"  # for the messages

    def __init__(self, url: str, client_name: str) -> None:
        options = parse_url(url)
        self._host = options.get("host", "localhost")
        self._port = int(options.get("port", 6379))
        self._db = int(options.get("db", 0) or 0)
        self._username: str | None = options.get("username")
        self._password: str | None = options.get("password")
        self._tls = options.get("connection_class") is SSLConnection
        self._name = client_name
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = hiredis.Reader()

    async def open(self) -> None:
        """Connect, authenticate, select and name the connection (the caller bounds the
        time)."""
        context = ssl.create_default_context() if self._tls else None
        self._reader, self._writer = await asyncio.open_connection(
            self._host, self._port, ssl=context, limit=READ_SIZE)
        if self._password is not None:
            credentials = [self._username, self._password] if self._username else \
                [self._password]
            self.send("AUTH", *credentials)
            await self._expect_ok("AUTH")
        if self._db:
            self.send("SELECT", str(self._db))
            await self._expect_ok("SELECT")
        self.send("CLIENT", "SETNAME", self._name)
        await self._expect_ok("CLIENT SETNAME")

    async def _expect_ok(self, what: str) -> None:
        while True:
            replies = await self.read()
            if replies:
                break
        if replies != [b"OK"]:
            reply = replies[0]
            raise self.error(f"redis refused {what}: {reply}")

    def send(self, *args: str | bytes) -> None:
        self.write(encode_command(*args))

    def write(self, data: bytes) -> None:
        """Commands already in RESP (any number of them)."""
        if self._writer is None or self._writer.is_closing():
            raise self.error(f"the {self.role} connection is closed")
        self._writer.write(data)

    async def read(self) -> list[Any]:
        """The replies complete after one read (maybe none: a reply cut in two)."""
        assert self._reader is not None
        data = await self._reader.read(READ_SIZE)
        if not data:
            raise self.error("redis closed the connection")
        parser = self._parser
        parser.feed(data)
        replies = []
        try:
            while (reply := parser.gets()) is not False:
                if isinstance(reply, hiredis.ReplyError):
                    raise self.error(f"redis: {reply}")
                replies.append(reply)
        except hiredis.ProtocolError as exc:
            raise self.error(f"not the Redis protocol: {exc}") from None
        return replies

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
