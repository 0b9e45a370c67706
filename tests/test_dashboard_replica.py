"""The dashboard's replica (web/replica.js) under Node: the ordering rules the page relies on
when REST answers, live events and `sync` pages arrive in any order, and `reset` pages, which
the browser tests cannot provoke cheaply (a cursor older than the tombstone retention)."""

from __future__ import annotations

import shutil
import subprocess

from handlers.dashboard import DEFAULT_DIR

CHECKS = """
import assert from "node:assert/strict";
import { Replica } from "./replica.js";

const scope = "user:1";
const task = (id, seq, extra = {}) => ({ id, scope, seq, version: seq, title: id, ...extra });
const tombstone = (id, seq) => ({ id, scope, seq, version: seq, deleted: true });

const r = new Replica(scope);
assert.equal(r.applyPage({ scope, seq: 3, changes: [task("a", 1), task("b", 3)],
                           more: false, reset: false }), true);
assert.equal(r.cursor, 3);
assert.deepEqual([...r.tasks.keys()].sort(), ["a", "b"]);

// an older copy (a slow REST answer after a newer event) does not win
assert.equal(r.apply(task("b", 5, { title: "new" })), true);
assert.equal(r.apply(task("b", 4, { title: "old" })), false);
assert.equal(r.apply(task("b", 5, { title: "new" })), false);  // the echo of one change
assert.equal(r.tasks.get("b").title, "new");

// a deleted task is not revived by a late copy of an earlier change
assert.equal(r.apply(tombstone("a", 6)), true);
assert.equal(r.apply(task("a", 2)), false);
assert.equal(r.tasks.has("a"), false);

// another scope's task is ignored
assert.equal(r.apply({ ...task("x", 9), scope: "user:2" }), false);

// live events move the cursor forward only
r.advance(6);
r.advance(4);
assert.equal(r.cursor, 6);

// reset: drop everything, the page is the full state, the cursor is the page's
assert.equal(r.applyPage({ scope, seq: 2, changes: [task("c", 2)], more: true, reset: true }),
             true);
assert.deepEqual([...r.tasks.keys()], ["c"]);
assert.equal(r.cursor, 2);
assert.equal(r.applyPage({ scope, seq: 4, changes: [task("d", 4)], more: false, reset: false }),
             true);
assert.deepEqual([...r.tasks.keys()].sort(), ["c", "d"]);
assert.equal(r.cursor, 4);
console.log("replica ok");
"""


def test_replica_ordering_rules() -> None:
    node = shutil.which("node")
    assert node, "node is required (scripts/test checks for npm)"
    result = subprocess.run([node, "--input-type=module", "-e", CHECKS], cwd=DEFAULT_DIR,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "replica ok"
