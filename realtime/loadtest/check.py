"""Correctness: what every socket received, per scope, against what the server holds.

The protocol promises (docs/protocol.md): per socket and per scope, `seq` strictly
increases across `task:*` events and `sync` pages, with no duplicate and no gap; a
`sync` page stands for every seq up to its `seq` (changes superseded later in the same
page are not repeated). So each socket keeps, per scope, the highest seq it has been
given (`top`), the seqs it skipped (`holes`, filled later = out of order, never = missing)
and its replica of the scope (only the tasks it was sent; the state before the run is
shared by all sockets of a user). At the end the replica is compared with the scope's
state read through REST `GET /api/sync?since=0`.

Limit: a page does not say where it starts, so a page that follows a lost event hides
that seq from the seq check; the lost change still shows in the final state comparison
(unless a later change to the same task superseded it, which costs the client nothing).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .users import ScopeState

Task = dict[str, Any]
HOLES_MAX = 10_000  # per socket and scope; beyond it skipped seqs are only counted
EXAMPLES_MAX = 3  # per socket and scope

KINDS = ("missing", "duplicate", "out_of_order", "state_differs", "content_differs",
         "beyond_head", "foreign_scope", "malformed", "lost_connection", "acked_write_lost")
KIND_HELP = {
    "missing": "a seq of the scope never reached the socket (nor a sync page covering it)",
    "duplicate": "a seq reached the socket more than once",
    "out_of_order": "a seq reached the socket after a higher one",
    "state_differs": "the socket's replica differs from the server's final state (tasks)",
    "content_differs": "two sockets were sent different tasks for the same scope and seq",
    "beyond_head": "a seq above the scope's final head (the server's own sync) was sent",
    "foreign_scope": "an event of another user's scope reached the socket",
    "malformed": "an event or page that does not have the envelope's shape",
    "lost_connection": "the socket was disconnected and could not reconnect",
    "acked_write_lost": "an acknowledged write is not in the server's final state",
}


@dataclass(slots=True)
class ScopeTrack:
    """One socket's view of one scope."""

    scope: str
    start: int  # the cursor the socket connected with (it holds the state up to here)
    known_start: bool = True  # False for a scope first heard of through an event
    top: int = 0
    holes: set[int] = field(default_factory=set)
    untracked_missing: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    tasks: dict[str, Task] = field(default_factory=dict)  # what it was sent, by task id
    reset: bool = False  # a reset page replaced the state before the run
    events: int = 0
    pages: int = 0

    def __post_init__(self) -> None:
        self.top = self.start

    def note(self, kind: str, text: str, n: int = 1) -> None:
        self.counts[kind] += n
        if len(self.examples) < EXAMPLES_MAX:
            self.examples.append(text)

    def event(self, seq: int, task: Task) -> None:
        self.events += 1
        top = self.top
        if seq == top + 1:
            self.top = seq
        elif seq > top:
            gap = seq - top - 1
            if len(self.holes) + gap <= HOLES_MAX:
                self.holes.update(range(top + 1, seq))
            else:
                self.untracked_missing += gap
            self.top = seq
        elif seq in self.holes:
            self.holes.discard(seq)
            self.note("out_of_order", f"seq {seq} arrived after seq {top}")
        else:
            self.note("duplicate", f"seq {seq} again (after {top})")
        self.apply(task)

    def page(self, seq: int, changes: list[Task], reset: bool) -> None:
        self.pages += 1
        if reset:
            self.reset = True
            self.tasks.clear()
            self.holes.clear()
            self.untracked_missing = 0
            for change in changes:
                self.apply(change)
            self.top = max(self.top, seq)
            return
        for change in changes:
            change_seq = change["seq"]
            if change_seq > seq:
                self.note("malformed", f"a sync page up to {seq} holds seq {change_seq}")
            elif change_seq <= self.top:
                if change_seq in self.holes:
                    self.holes.discard(change_seq)
                    self.note("out_of_order", f"sync page: seq {change_seq} after {self.top}")
                else:
                    self.note("duplicate", f"sync page: seq {change_seq} again "
                                           f"(after {self.top})")
            self.apply(change)
        if seq > self.top:
            self.top = seq  # the page stands for every seq up to its own
        elif not changes:
            self.note("out_of_order", f"an empty sync page up to {seq} after {self.top}")

    def apply(self, task: Task) -> None:
        known = self.tasks.get(task["id"])
        if known is None or known["seq"] < task["seq"]:
            self.tasks[task["id"]] = task

    def missing(self, head: int) -> int:
        return len(self.holes) + self.untracked_missing + max(0, head - self.top)


@dataclass
class Verdict:
    counts: Counter[str] = field(default_factory=Counter)
    sockets_with_failures: int = 0
    scopes_checked: int = 0
    sockets_checked: int = 0
    examples: list[str] = field(default_factory=list)
    examples_max: int = 20

    def add(self, where: str, kind: str, n: int, detail: str) -> None:
        if n <= 0:
            return
        self.counts[kind] += n
        if len(self.examples) < self.examples_max:
            self.examples.append(f"{where}: {kind} x{n}: {detail}")

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "sockets_checked": self.sockets_checked,
                "scopes_checked": self.scopes_checked,
                "sockets_with_failures": self.sockets_with_failures,
                "failures": {kind: self.counts.get(kind, 0) for kind in KINDS},
                "examples": self.examples}


def compare_state(track: ScopeTrack, base: dict[str, Task], final: ScopeState,
                  changed_after_start: list[str]) -> tuple[int, list[str]]:
    """(tasks that differ, a few examples): the socket's replica against the server's.

    The replica is the state before the run (`base`, shared by every socket of the
    user) overlaid with what the socket was sent; only tasks the socket was sent or
    that changed after its start cursor can differ, so only those are compared.
    """
    differ = 0
    examples: list[str] = []
    if track.reset or not track.known_start:
        ids = set(final.tasks) | set(track.tasks)
        base = {}
    else:
        ids = set(changed_after_start) | set(track.tasks)
    for task_id in ids:
        want = final.tasks.get(task_id)
        have = track.tasks.get(task_id) or base.get(task_id)
        if have == want:
            continue
        differ += 1
        if len(examples) < 2:
            if have is None:
                examples.append(f"task {task_id} (seq {want and want['seq']}) absent")
            elif want is None:
                examples.append(f"task {task_id} held but not on the server")
            else:
                examples.append(f"task {task_id} at seq {have['seq']} v{have.get('version')}"
                                f", server seq {want['seq']} v{want.get('version')}")
    return differ, examples
