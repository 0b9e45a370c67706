// The board: a column per status, a card per task. Task text only ever goes into the
// page through textContent (never innerHTML), so a title is shown as typed.

export const STATUSES = ["todo", "in_progress", "done"];
export const STATUS_LABELS = { todo: "To do", in_progress: "In progress", done: "Done" };
const PRIORITY_RANK = { high: 0, medium: 1, low: 2 };

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(text, action, label, extra = {}) {
  const node = element("button", extra.className, text);
  node.type = "button";
  node.dataset.action = action;
  node.setAttribute("aria-label", label);
  node.title = label;
  for (const [key, value] of Object.entries(extra.data || {})) node.dataset[key] = value;
  return node;
}

// The date part of a due date (stored as UTC ISO 8601), for display and <input type=date>.
export function dueDay(task) {
  return task.due_date ? task.due_date.slice(0, 10) : "";
}

function isOverdue(task, now) {
  return Boolean(task.due_date) && task.status !== "done" && Date.parse(task.due_date) < now;
}

function byPriorityThenNewest(a, b) {
  return (PRIORITY_RANK[a.priority] - PRIORITY_RANK[b.priority])
    || (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0)
    || (a.id < b.id ? -1 : 1);
}

function fillCard(card, task) {
  card.className = `card prio-${task.priority}`;
  card.dataset.taskId = task.id;
  card.dataset.version = String(task.version);
  card.dataset.status = task.status;
  card.draggable = true;

  const meta = element("div", "meta");
  meta.append(element("span", `badge prio-${task.priority}`, task.priority));
  if (task.due_date) meta.append(element("span", "due", `due ${dueDay(task)}`));
  meta.append(element("span", "version", `v${task.version}`));

  const parts = [meta, element("h3", "title", task.title)];
  if (task.description) parts.push(element("p", "desc", task.description));

  // Moves on the left (◀ ▶, each only where there is a column that way), edit and
  // delete on the right: the same place on every card.
  const actions = element("div", "actions");
  const index = STATUSES.indexOf(task.status);
  const moves = element("span", "moves");
  for (const to of [STATUSES[index - 1], STATUSES[index + 1]]) {
    if (!to) continue;
    const arrow = STATUSES.indexOf(to) < index ? "◀" : "▶";
    moves.append(button(arrow, "move", `Move to ${STATUS_LABELS[to]}`, { data: { to } }));
  }
  const edits = element("span", "edits");
  edits.append(button("Edit", "edit", "Edit"));
  edits.append(button("Delete", "delete", "Delete", { className: "danger" }));
  actions.append(moves, edits);
  parts.push(actions);
  card.replaceChildren(...parts);
}

export class Board {
  constructor(root) {
    this.cards = new Map(); // task id -> <li>, kept across renders (focus, animations)
    this.lists = {};
    this.counts = {};
    for (const status of STATUSES) {
      this.lists[status] = root.querySelector(`.column[data-status="${status}"] .cards`);
      this.counts[status] = root.querySelector(`[data-count="${status}"]`);
    }
  }

  clear() {
    for (const card of this.cards.values()) card.remove();
    this.cards.clear();
    for (const status of STATUSES) this.counts[status].textContent = "0";
  }

  // tasks: the visible ones; flash: ids changed elsewhere, highlighted briefly.
  render(tasks, flash = new Set()) {
    const now = Date.now();
    const columns = Object.fromEntries(STATUSES.map((status) => [status, []]));
    for (const task of tasks) columns[task.status]?.push(task);
    const shown = new Set();
    for (const status of STATUSES) {
      const list = this.lists[status];
      columns[status].sort(byPriorityThenNewest);
      columns[status].forEach((task, position) => {
        shown.add(task.id);
        let card = this.cards.get(task.id);
        if (!card) {
          card = element("li");
          this.cards.set(task.id, card);
        }
        if (card.dataset.version !== String(task.version)) fillCard(card, task);
        card.querySelector(".due")?.classList.toggle("overdue", isOverdue(task, now));
        const here = list.children[position];
        if (here !== card) list.insertBefore(card, here ?? null);
        if (flash.has(task.id)) {
          card.classList.remove("remote");
          void card.offsetWidth; // restart the animation
          card.classList.add("remote");
        }
      });
      this.counts[status].textContent = String(columns[status].length);
    }
    for (const [id, card] of this.cards) {
      if (!shown.has(id)) {
        card.remove();
        this.cards.delete(id);
      }
    }
  }
}
