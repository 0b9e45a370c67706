"""A Redis pub/sub subscription on a bare connection, its replies parsed by hiredis.

Why not redis-py's PubSub: each `get_message` goes through its retry wrapper, a timeout
context and its message dict, about 35 us of the event loop per message on the test
machine, a fifth of an instance's CPU in the fan-out benchmark. Here one read takes
whatever has arrived and hiredis splits it into replies (RESP2: no HELLO is sent).

The connection only subscribes: commands are written without waiting for their answer
(Redis answers SUBSCRIBE and PING in the message stream), except AUTH and CLIENT SETNAME
at the start. Publishing stays on redis-py's client.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import hiredis
from redis.connection import SSLConnection, parse_url

READ_SIZE = 1 << 16


class SubscriberError(ConnectionError):
    """Redis refused a command, or the connection ended."""


def encode_command(*args: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class SubscriberConnection:
    def __init__(self, url: str, client_name: str) -> None:
        options = parse_url(url)
        self._host = options.get("host", "localhost")
        self._port = int(options.get("port", 6379))
        self._username: str | None = options.get("username")
        self._password: str | None = options.get("password")
        self._tls = options.get("connection_class") is SSLConnection
        self._name = client_name
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = hiredis.Reader()

    async def open(self) -> None:
        """Connect, authenticate and name the connection (the caller bounds the time)."""
        context = ssl.create_default_context() if self._tls else None
        self._reader, self._writer = await asyncio.open_connection(
            self._host, self._port, ssl=context, limit=READ_SIZE)
        if self._password is not None:
            credentials = [self._username, self._password] if self._username else \
                [self._password]
            self.send("AUTH", *credentials)
            await self._expect_ok("AUTH")
        self.send("CLIENT", "SETNAME", self._name)
        await self._expect_ok("CLIENT SETNAME")

    async def _expect_ok(self, what: str) -> None:
        while True:
            replies = await self.read()
            if replies:
                break
        if replies != [b"OK"]:
            reply = replies[0]
            raise SubscriberError(f"redis refused {what}: {reply}")

    def send(self, *args: str | bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise SubscriberError("the subscription connection is closed")
        self._writer.write(encode_command(*args))

    async def read(self) -> list[Any]:
        """The replies complete after one read (maybe none: a reply cut in two)."""
        assert self._reader is not None
        data = await self._reader.read(READ_SIZE)
        if not data:
            raise SubscriberError("redis closed the connection")
        parser = self._parser
        parser.feed(data)
        replies = []
        try:
            while (reply := parser.gets()) is not False:
                if isinstance(reply, hiredis.ReplyError):
                    raise SubscriberError(f"redis: {reply}")
                replies.append(reply)
        except hiredis.ProtocolError as exc:
            raise SubscriberError(f"not the Redis protocol: {exc}") from None
        return replies

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
