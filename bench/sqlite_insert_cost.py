"""CPU per task created in the shipped SQLite schema, by variant (BENCHMARKS.md, issue 5 (b)).

One process, one connection, WAL with synchronous=NORMAL and the writer's checkpoint
interval as the store uses them (but the checkpoints run inline), 1,000
scopes, `--per-txn` tasks per transaction written with the store's own multi-row INSERT
(`store.sqlite._INSERT_TASKS`). Variants: `full` (the schema as shipped), `nofts` (no
full-text trigger), `noidx` (without the five list indexes), `automerge0` /
`automerge16` (FTS5 merge settings), `pageN` (page size N), `ordered_ids` (task ids that
grow with time, like UUIDv7, instead of random ones). Prints user and system CPU
per task and wall time per task. Writes only under --dir.

    .venv/bin/python bench/sqlite_insert_cost.py full nofts noidx page2048
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import time
import uuid
from pathlib import Path

from store import sqlite as S

LIST_INDEXES = ("tasks_scope_status", "tasks_scope_created", "tasks_scope_updated",
                "tasks_scope_due", "tasks_scope_prio")


def run(variant: str, directory: Path, per_txn: int, count: int, scopes: int,
        checkpoint: int) -> None:
    path = directory / f"{variant}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    if variant.startswith("page"):
        db.execute(f"PRAGMA page_size={int(variant[4:])}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA cache_size=-16000")
    db.execute(f"PRAGMA wal_autocheckpoint = {checkpoint}")
    db.executescript(S.SCHEMA)
    if variant == "nofts":
        db.execute("DROP TRIGGER task_words_insert")
    elif variant.startswith("automerge"):
        db.execute("INSERT INTO task_words(task_words, rank) VALUES('automerge', ?)",
                   (int(variant[9:]),))
    elif variant == "noidx":
        for index in LIST_INDEXES:
            db.execute(f"DROP INDEX {index}")
    names = [f"user:{uuid.uuid4()}" for _ in range(scopes)]
    seqs = dict.fromkeys(names, 0)
    rng = random.Random(1)
    before, wall = os.times(), time.perf_counter()
    made = 0
    while made < count:
        rows = []
        for _ in range(per_txn):
            scope = rng.choice(names)
            seqs[scope] += 1
            title = f"b{time.time():.3f}"
            task_id = str(uuid.UUID(int=(time.time_ns() << 64) | made + len(rows))) \
                if variant == "ordered_ids" else str(uuid.uuid4())
            rows.append((task_id, scope[5:], scope, title, "", "todo", "medium", 1,
                         None, "9999", "2026-11-30T00:00:00Z", "2026-11-30T00:00:00Z",
                         seqs[scope], S._search_text(scope, title, "")))
        db.execute("BEGIN IMMEDIATE")
        db.execute(S._INSERT_TASKS + ",".join([S._TASK_ROW] * len(rows)),
                   [value for row in rows for value in row])
        db.execute("COMMIT")
        made += len(rows)
    after, wall = os.times(), time.perf_counter() - wall
    user = (after.user - before.user) / made * 1e6
    system = (after.system - before.system) / made * 1e6
    print(f"{variant:12s} {per_txn} per transaction: {user + system:6.1f} µs CPU per task "
          f"(user {user:.1f}, system {system:.1f}), wall {wall / made * 1e6:.1f} µs")
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/sqlite-insert-cost"))
    parser.add_argument("--per-txn", type=int, default=8)
    parser.add_argument("--count", type=int, default=16_000)
    parser.add_argument("--scopes", type=int, default=1_000)
    parser.add_argument("--checkpoint", type=int, default=S.WRITER_CHECKPOINT_PAGES,
                        help="wal_autocheckpoint pages (the store's writer: %(default)s)")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    for variant in args.variants:
        run(variant, args.dir, args.per_txn, args.count, args.scopes, args.checkpoint)


if __name__ == "__main__":
    main()
