"""The verdict: every socket's tracks and replica against the server's final state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .check import Verdict, compare_state
from .tabs import LoadSocket
from .users import ScopeState, User


def judge(sockets: Sequence[LoadSocket], users: Sequence[User], base: dict[int, ScopeState],
          final: dict[int, ScopeState], acked: list[tuple[int, str, int]],
          content_differs: Counter[str]) -> Verdict:
    """Count every failure kind over all sockets and scopes (see check.KIND_HELP).

    `base` and `final` are each user's scope state (by user index) before the run and
    after it; `acked` holds (user index, task id, seq) of every acknowledged write.
    """
    verdict = Verdict()
    heads = {users[i].scope: s for i, s in final.items()}
    changed_after: dict[str, list[str]] = {}
    for index, state in final.items():
        user = users[index]
        start = base[index].seq
        changed_after[user.scope] = [tid for tid, t in state.tasks.items()
                                     if t["seq"] > start]
    scopes_seen: set[str] = set()
    for sock in sockets:
        if not sock.was_connected:
            continue  # never connected: reported with the connect figures
        verdict.sockets_checked += 1
        bad = False
        where_socket = f"socket {sock.index} ({sock.user.scope}, url {sock.url_index})"
        lost = not sock.live_at_check
        if lost:
            verdict.add(where_socket, "lost_connection", 1, f"closed: {sock.closed}"
                        + (f"; reconnect failed: {sock.connect_error}"
                           if sock.connect_error else ""))
            bad = True
        for scope, track in sock.tracks.items():
            scopes_seen.add(scope)
            where = f"socket {sock.index} ({scope}, url {sock.url_index})"
            for kind, n in track.counts.items():
                verdict.add(where, kind, n, "; ".join(track.examples))
                bad = True
            scope_final = heads.get(scope)
            if scope_final is None or not track.known_start:
                # a scope the run does not know the final state of, or one the socket
                # should not hear of at all (foreign_scope, counted above)
                continue
            if not lost:
                missing = track.missing(scope_final.seq)
                if missing:
                    holes = sorted(track.holes)[:5]
                    verdict.add(where, "missing", missing,
                                f"top seq {track.top} of head {scope_final.seq}"
                                + (f", skipped {holes}" if holes else ""))
                    bad = True
            if track.top > scope_final.seq:
                verdict.add(where, "beyond_head", track.top - scope_final.seq,
                            f"seq {track.top} > head {scope_final.seq}")
                bad = True
            if not lost:
                differ, examples = compare_state(track, base[sock.user.index].tasks, scope_final,
                                                 changed_after.get(scope, []))
                if differ:
                    verdict.add(where, "state_differs", differ, "; ".join(examples))
                    bad = True
        verdict.sockets_with_failures += bad
    verdict.scopes_checked = len(scopes_seen)
    for scope, n in content_differs.items():
        verdict.add(scope, "content_differs", n, "same seq, different task")
    for user_index, task_id, seq in acked:
        final_state = final.get(user_index)
        task = final_state.tasks.get(task_id) if final_state else None
        if task is None or task["seq"] < seq:
            verdict.add(f"user {users[user_index].scope}", "acked_write_lost", 1,
                        f"task {task_id} acked at seq {seq}")
    return verdict
