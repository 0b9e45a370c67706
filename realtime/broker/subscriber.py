"""A Redis pub/sub subscription on a bare connection (connection.py), its replies parsed
by hiredis.

Why not redis-py's PubSub: each `get_message` goes through its retry wrapper, a timeout
context and its message dict, about 35 us of the event loop per message on the test
machine, a fifth of an instance's CPU in the fan-out benchmark. Here one read takes
whatever has arrived and hiredis splits it into replies (RESP2: no HELLO is sent).

The connection only subscribes: commands are written without waiting for their answer
(Redis answers SUBSCRIBE and PING in the message stream), except the opening's (AUTH,
SELECT, CLIENT SETNAME). Publishing has a connection of its own (publisher.py).
"""

from __future__ import annotations

from .connection import BareConnection, BareConnectionError


class SubscriberError(BareConnectionError):
    """Redis refused a command, or the subscription connection ended."""


class SubscriberConnection(BareConnection):
    error = SubscriberError
    role = "subscription"
