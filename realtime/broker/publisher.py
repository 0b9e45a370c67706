"""The broker's publishing connection: a batch of PUBLISH (or SPUBLISH) commands packed by
hand in RESP and written at once, their replies parsed by hiredis (connection.py).

Why not redis-py's pipeline: its `execute` (retry wrapper, connection pool, command
packing, response parsing) was about 15% of the writing instance's event loop in the
fan-out benchmark. Here a batch is one write and usually one read of its replies (the
numbers of receivers, which the broker does not use).

The caller bounds the time of `open` and `publish`. After a failure (an error reply, the
connection ended, a timeout) the connection is out of step with its replies: close it and
open another; the caller cannot know which commands of the failed batch Redis ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .connection import BareConnection, BareConnectionError


class PublisherError(BareConnectionError):
    """Redis refused a command, or the publishing connection ended."""


class PublisherConnection(BareConnection):
    error = PublisherError
    role = "publishing"

    def __init__(self, url: str, client_name: str,
                 command_of: Callable[[str], str] = lambda channel: "PUBLISH") -> None:
        """`command_of(channel)`: PUBLISH or SPUBLISH, asked once per channel."""
        super().__init__(url, client_name)
        self._command_of = command_of
        self._heads: dict[str, bytes] = {}  # channel -> its command up to the payload

    def _head(self, channel: str) -> bytes:
        command, name = self._command_of(channel).encode(), channel.encode()
        head = b"*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(command), command, len(name), name)
        self._heads[channel] = head
        return head

    async def publish(self, batch: Iterable[tuple[str, bytes]]) -> int:
        """Publish (channel, payload) pairs in order, in one write; returns once Redis has
        answered them all (how many commands that was)."""
        heads = self._heads
        parts = []
        for channel, payload in batch:
            parts.append(heads.get(channel) or self._head(channel))
            parts.append(b"$%d\r\n" % len(payload))
            parts.append(payload)
            parts.append(b"\r\n")
        count = len(parts) // 4
        if not count:
            return 0
        self.write(b"".join(parts))
        pending = count
        while pending > 0:
            pending -= len(await self.read())
        if pending < 0:
            raise self.error(f"{-pending} more replies than commands")
        return count
