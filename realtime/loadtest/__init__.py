"""The load harness: `taskmaster loadtest` (see README, "Load testing").

Many simulated tabs over the public protocol only: users through REST, sockets with
auth {token, cursors}, writes at a rate through REST and/or acked socket events,
and a correctness check of every delivery and of every replica's final state.

- client.py: a minimal Engine.IO v4 / Socket.IO v5 client over aiohttp WebSockets
- users.py: registration, tokens files, a scope's state through GET /api/sync
- check.py: per-socket, per-scope seq tracking and the final comparison
- run.py: one run (connect, write, drain, check) and its report
- report.py: the summary table, JSON, PNGs; command.py: the command line
"""

from .run import LoadTest, Options, run

__all__ = ["LoadTest", "Options", "run"]
