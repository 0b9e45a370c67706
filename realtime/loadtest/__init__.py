"""The load harness: `taskmaster loadtest` (see README, "Load testing").

Many simulated tabs over the public protocol only: users through REST, sockets with
auth {token, cursors}, writes at a rate through REST and/or acked socket events,
and a correctness check of every delivery and of every replica's final state.

- client.py: a minimal Engine.IO v4 / Socket.IO v5 client over aiohttp WebSockets
- users.py: registration, tokens files, a scope's state through GET /api/sync
- tabs.py: the simulated tabs (sockets that track what they receive) and their tracker
- check.py: per-socket, per-scope seq tracking and the replica comparison
- verify.py: the verdict over every socket and scope
- run.py: one run (users, connect, write, drain, check) and its report
- procstat.py, stats.py: /proc readings; percentiles and a running histogram
- report.py: the summary table, JSON, PNGs; command.py: the command line
"""

from .run import LoadTest, Options, run

__all__ = ["LoadTest", "Options", "run"]
