// The tab's copy of one scope: its live tasks by id and the seq it has seen up to
// (its cursor, sent in the socket's connect auth so the server sends only what was missed).

export class Replica {
  constructor(scope) {
    this.scope = scope;
    this.tasks = new Map();
    this.deletedAt = new Map(); // id -> seq of its deletion, so a late copy cannot revive it
    this.cursor = 0;
  }

  clear() {
    this.tasks.clear();
    this.deletedAt.clear();
  }

  // One task or tombstone; true when the board changed. A copy older than the one held
  // (by seq) is ignored, so REST answers and socket events may arrive in any order.
  apply(task) {
    if (!task || task.scope !== this.scope) return false;
    const held = this.tasks.get(task.id);
    const seen = held ? held.seq : (this.deletedAt.get(task.id) ?? -1);
    if (task.seq <= seen) return false;
    if (task.deleted) {
      this.tasks.delete(task.id);
      this.deletedAt.set(task.id, task.seq);
      return held !== undefined;
    }
    this.tasks.set(task.id, task);
    return true;
  }

  // A `sync` page ({scope, seq, changes, more, reset}): it delivers every seq up to its own.
  applyPage(page) {
    let changed = false;
    if (page.reset) {
      // The cursor was too old (or ahead of a restored server): the page is the full state.
      changed = this.tasks.size > 0;
      this.clear();
      this.cursor = page.seq;
    }
    for (const task of page.changes) changed = this.apply(task) || changed;
    this.advance(page.seq);
    return changed;
  }

  advance(seq) {
    if (seq > this.cursor) this.cursor = seq;
  }
}
