// TaskMaster Realtime dashboard: sign in, load the user's scope through `sync`, keep it
// live over Socket.IO, write through REST with If-Match versions.
//
// The token is kept in localStorage: every tab of this browser shares the sign-in (open a
// second tab and it is live at once), and logging out in one tab signs out all of them
// (the server revokes the token and ends their sockets; the storage event tells the rest).

import { ApiFailure, Rest, query } from "./api.js";
import { Board, STATUS_LABELS, dueDay } from "./board.js";
import { Live, loadClient } from "./live.js";
import { Replica } from "./replica.js";

const TOKEN_KEY = "taskmaster.token";
const SYNC_PAGE = 1000;
const SEARCH_PAGE = 200;
const SEARCH_PAGES_MAX = 5;
const STATS_DEBOUNCE_MS = 150;
const SEARCH_DEBOUNCE_MS = 200;
const NOT_INSTALLED = "Live updates are unavailable: the Socket.IO browser client is not "
  + "installed on this server (run ./scripts/serve, or npm ci in web/). Changes from other "
  + "tabs show after a reload.";

const $ = (selector) => document.querySelector(selector);
const tabId = Math.random().toString(16).slice(2, 10);
let mutationCounter = 0;

const state = {
  token: localStorage.getItem(TOKEN_KEY),
  user: null,
  replica: null,
  live: null,
  liveMissing: false,
  fullLoads: 0,
  filters: { status: "", priority: "", q: "" },
  searchIds: null, // ids matching q (GET /api/tasks?q=...), or null when there is no q
  searchGeneration: 0,
  editing: null, // {id, base} of the task in the editor
  conflict: null, // {kind, changes, current} of the last refused write
  flash: new Set(),
};

const rest = new Rest(() => state.token);
const board = new Board($("#board-view"));
let renderQueued = false;
let statsTimer = null;
let searchTimer = null;

// A small read-only view for tests and the curious (the browser tests read it).
window.taskmaster = Object.freeze({
  get syncPages() { return state.live?.syncPages ?? 0; },
  get fullLoads() { return state.fullLoads; },
  get cursor() { return state.replica?.cursor ?? 0; },
  get connection() { return $("#connection").dataset.state; },
  get socketConnected() { return Boolean(state.live?.connected); },
  get tasks() { return state.replica ? state.replica.tasks.size : 0; },
});

// -- small helpers ------------------------------------------------------------------

function nextMutationId() {
  mutationCounter += 1;
  return `tab-${tabId}:${mutationCounter}`;
}

function notice(message) {
  const node = $("#notice");
  node.textContent = message || "";
  node.hidden = !message;
}

function describe(failure) {
  if (!(failure instanceof ApiFailure)) return String(failure);
  const fields = failure.details?.fields;
  if (fields && typeof fields === "object") {
    const list = Object.entries(fields).map(([name, problem]) => `${name} ${problem}`);
    return `${failure.message}: ${list.join("; ")}`;
  }
  return failure.message;
}

function setConnection(connectionState, text) {
  const node = $("#connection");
  node.dataset.state = connectionState;
  document.body.dataset.connection = connectionState;
  $("#connection-text").textContent = text || connectionState;
}

// -- views ----------------------------------------------------------------------------

function showAuth(message) {
  $("#board-view").hidden = true;
  $("#account").hidden = true;
  $("#auth-view").hidden = false;
  $("#auth-error").textContent = message || "";
  setConnection("offline");
}

function showBoard() {
  $("#auth-view").hidden = true;
  $("#board-view").hidden = false;
  $("#account").hidden = false;
  $("#account-name").textContent = `${state.user.name} (${state.user.email})`;
}

// -- rendering ------------------------------------------------------------------------

function visible(task) {
  const { status, priority } = state.filters;
  if (status && task.status !== status) return false;
  if (priority && task.priority !== priority) return false;
  return state.searchIds === null || state.searchIds.has(task.id);
}

// Once per burst of changes (a sync page, several events in one task), right after the
// code that made them: a microtask, not an animation frame, which a hidden tab would delay.
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    if (!state.replica) return;
    board.render([...state.replica.tasks.values()].filter(visible), state.flash);
    state.flash = new Set();
    document.body.dataset.syncPages = String(state.live?.syncPages ?? 0);
    document.body.dataset.cursor = String(state.replica.cursor);
  });
}

function renderStats(stats) {
  const values = {
    total: stats.total,
    ...stats.by_status,
    high: stats.by_priority.high,
    overdue: stats.overdue,
    due_this_week: stats.due_this_week,
  };
  for (const node of document.querySelectorAll("[data-stat]")) {
    const value = values[node.dataset.stat] ?? 0;
    node.textContent = String(value);
    const box = node.closest("[data-alert-above]");
    box?.classList.toggle("alert", value > Number(box.dataset.alertAbove));
  }
}

async function refreshStats() {
  try {
    renderStats(await rest.get("/api/tasks/stats"));
  } catch (failure) {
    if (failure.status === 401) signedOut("Your session ended: log in again.");
  }
}

function scheduleStats() {
  clearTimeout(statsTimer);
  statsTimer = setTimeout(refreshStats, STATS_DEBOUNCE_MS);
}

// The ids matching the search, from the server (its search is word-prefix, case- and
// accent-insensitive); status and priority are applied to the replica directly.
async function refreshSearch() {
  const q = state.filters.q.trim();
  const generation = ++state.searchGeneration;
  if (!q) {
    state.searchIds = null;
    scheduleRender();
    return;
  }
  const ids = new Set();
  let cursor = null;
  try {
    for (let page = 0; page < SEARCH_PAGES_MAX; page += 1) {
      const answer = await rest.get(`/api/tasks${query({ q, limit: SEARCH_PAGE, cursor })}`);
      for (const task of answer.tasks) ids.add(task.id);
      cursor = answer.next_cursor;
      if (!cursor) break;
    }
  } catch (failure) {
    notice(`Search failed: ${describe(failure)}`);
    return;
  }
  if (generation !== state.searchGeneration) return; // a newer search is on its way
  state.searchIds = ids;
  scheduleRender();
}

function scheduleSearch() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(refreshSearch, SEARCH_DEBOUNCE_MS);
}

// Something in the replica changed (a live event, a sync page or a REST answer).
function changed(tasks, origin) {
  const mine = typeof origin === "string" && origin.startsWith(`tab-${tabId}:`);
  if (!mine && origin !== "own") for (const task of tasks) state.flash.add(task.id);
  scheduleRender();
  scheduleStats();
  if (state.filters.q) scheduleSearch();
}

// -- loading and live -----------------------------------------------------------------

// The whole scope through `sync` from seq 0: the state and, exactly with it, the cursor
// that the socket then continues from. Done once per sign-in; reconnects use the cursor.
async function fullLoad(replica) {
  let since = 0;
  for (;;) {
    const page = await rest.get(
      `/api/sync${query({ scope: replica.scope, since, limit: SYNC_PAGE })}`);
    replica.applyPage(page);
    if (!page.more) break;
    since = page.seq;
  }
  state.fullLoads += 1;
}

async function startBoard() {
  const replica = new Replica(`user:${state.user.id}`);
  state.replica = replica;
  showBoard();
  await fullLoad(replica);
  scheduleRender();
  refreshStats();
  const io = await loadClient();
  if (state.replica !== replica) return; // signed out meanwhile
  if (!io) {
    state.liveMissing = true;
    setConnection("offline", "offline: live client not installed");
    notice(NOT_INSTALLED);
    return;
  }
  state.live = new Live(io, state.token, replica, {
    onChange: (didChange, tasks, origin) => {
      if (didChange) changed(tasks, origin);
      else scheduleRender(); // the cursor moved; keep the data attributes current
    },
    onState: (connectionState) => setConnection(connectionState),
    onSessionEnd: (message) => signedOut(message),
    onNotice: notice,
  });
  state.live.start();
}

function stopBoard() {
  state.live?.stop();
  state.live = null;
  state.replica = null;
  state.user = null;
  state.searchIds = null;
  board.clear();
  hideConflict();
  if ($("#editor").open) $("#editor").close();
}

function signedOut(message) {
  stopBoard();
  state.token = null;
  localStorage.removeItem(TOKEN_KEY);
  showAuth(message);
}

async function boot() {
  if (!state.token) {
    showAuth();
    return;
  }
  try {
    state.user = (await rest.get("/api/auth/me")).user;
  } catch (failure) {
    if (failure.status === 401) signedOut("Your session ended: log in again.");
    else showAuth(`The server cannot be reached: ${describe(failure)}`);
    return;
  }
  try {
    await startBoard();
  } catch (failure) {
    notice(`Loading the board failed: ${describe(failure)}`);
  }
}

// -- writes ---------------------------------------------------------------------------

function applyOwn(task) {
  if (state.replica?.apply(task)) changed([task], "own");
}

// PATCH or DELETE with the version the user saw; a 409 shows the conflict instead of
// overwriting someone else's change.
async function write(kind, taskId, version, changes) {
  const path = `/api/tasks/${encodeURIComponent(taskId)}`;
  const options = { ifMatch: version, mutationId: nextMutationId() };
  try {
    const answer = kind === "delete"
      ? await rest.request("DELETE", path, options)
      : await rest.request("PATCH", path, { ...options, body: changes });
    applyOwn(answer.task);
    return true;
  } catch (failure) {
    if (failure.code === "conflict" && failure.details?.current) {
      applyOwn(failure.details.current);
      showConflict(kind, changes, failure.details.current);
    } else if (failure.status === 404) {
      notice("That task was deleted elsewhere.");
    } else if (failure.status === 401) {
      signedOut("Your session ended: log in again.");
    } else {
      notice(`The change was not saved: ${describe(failure)}`);
    }
    return false;
  }
}

function describeChanges(changes) {
  return Object.entries(changes || {})
    .map(([name, value]) => `${name.replace("_", " ")} “${name === "status" ? STATUS_LABELS[value] : value ?? "none"}”`)
    .join(", ");
}

function showConflict(kind, changes, current) {
  state.conflict = { kind, changes, current };
  const action = kind === "delete" ? "you could delete it" : "your change was saved";
  const yours = kind === "delete" ? "" : ` Your change: ${describeChanges(changes)}.`;
  $("#conflict-text").textContent = `“${current.title}” was changed elsewhere (now version `
    + `${current.version}, ${STATUS_LABELS[current.status] ?? current.status}) before ${action}. `
    + `Nothing was overwritten: the board shows their version.${yours}`;
  $("#conflict-overwrite").textContent = kind === "delete"
    ? "Delete it anyway" : "Apply my change anyway";
  $("#conflict").dataset.taskId = current.id;
  $("#conflict").hidden = false;
}

function hideConflict() {
  state.conflict = null;
  $("#conflict").hidden = true;
}

async function createTask(form) {
  const data = new FormData(form);
  const body = {
    id: crypto.randomUUID(), // a retried create stays one task
    title: String(data.get("title")).trim(),
    priority: String(data.get("priority")),
  };
  if (data.get("due_date")) body.due_date = String(data.get("due_date"));
  // Cleared at once, so the next title can be typed while this one is being saved.
  form.elements.title.value = "";
  try {
    const answer = await rest.request("POST", "/api/tasks", { body, mutationId: nextMutationId() });
    applyOwn(answer.task);
    notice("");
  } catch (failure) {
    if (!form.elements.title.value) form.elements.title.value = body.title;
    if (failure.status === 401) signedOut("Your session ended: log in again.");
    else notice(`The task was not created: ${describe(failure)}`);
  }
}

function openEditor(task) {
  state.editing = { id: task.id, base: task };
  const form = $("#edit-form");
  form.elements.title.value = task.title;
  form.elements.description.value = task.description || "";
  form.elements.status.value = task.status;
  form.elements.priority.value = task.priority;
  form.elements.due_date.value = dueDay(task);
  $("#editor").showModal();
}

async function saveEditor() {
  const { id, base } = state.editing;
  const form = $("#edit-form");
  const wanted = {
    title: form.elements.title.value.trim(),
    description: form.elements.description.value,
    status: form.elements.status.value,
    priority: form.elements.priority.value,
  };
  const changes = {};
  for (const [name, value] of Object.entries(wanted)) {
    if (value !== (base[name] ?? "")) changes[name] = value;
  }
  const due = form.elements.due_date.value;
  if (due !== dueDay(base)) changes.due_date = due || null;
  $("#editor").close();
  state.editing = null;
  if (Object.keys(changes).length) await write("update", id, base.version, changes);
}

// -- events ---------------------------------------------------------------------------

function taskOf(node) {
  const card = node.closest(".card");
  return card ? state.replica?.tasks.get(card.dataset.taskId) : undefined;
}

function wire() {
  $("#auth-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const mode = event.submitter?.value === "register" ? "register" : "login";
    const email = form.elements.email.value.trim();
    const body = { email, password: form.elements.password.value };
    if (mode === "register") body.name = form.elements.name.value.trim() || email.split("@")[0];
    try {
      const answer = await rest.request("POST", `/api/auth/${mode}`, { body });
      state.token = answer.token;
      state.user = answer.user;
      localStorage.setItem(TOKEN_KEY, answer.token);
      form.reset();
      $("#auth-error").textContent = "";
      await startBoard();
    } catch (failure) {
      $("#auth-error").textContent = describe(failure);
    }
  });

  $("#logout").addEventListener("click", async () => {
    try {
      await rest.request("POST", "/api/auth/logout");
    } catch {
      // signed out here either way; the token expires on its own
    }
    signedOut("");
  });

  // Another tab of this browser signed in or out.
  window.addEventListener("storage", (event) => {
    if (event.key !== TOKEN_KEY || event.newValue === state.token) return;
    stopBoard();
    state.token = event.newValue;
    boot();
  });

  $("#create-form").addEventListener("submit", (event) => {
    event.preventDefault();
    createTask(event.target);
  });

  $("#filter-status").addEventListener("change", (event) => {
    state.filters.status = event.target.value;
    scheduleRender();
  });
  $("#filter-priority").addEventListener("change", (event) => {
    state.filters.priority = event.target.value;
    scheduleRender();
  });
  $("#search").addEventListener("input", (event) => {
    state.filters.q = event.target.value;
    scheduleSearch();
  });

  const boardNode = $(".board");
  boardNode.addEventListener("click", (event) => {
    const target = event.target.closest("button[data-action]");
    const task = target && taskOf(target);
    if (!task) return;
    if (target.dataset.action === "move") write("update", task.id, task.version, { status: target.dataset.to });
    else if (target.dataset.action === "edit") openEditor(task);
    else if (target.dataset.action === "delete") write("delete", task.id, task.version);
  });

  // Drag and drop between columns (the buttons do the same from the keyboard).
  boardNode.addEventListener("dragstart", (event) => {
    const card = event.target.closest?.(".card");
    if (!card) return;
    event.dataTransfer.setData("text/plain", card.dataset.taskId);
    event.dataTransfer.effectAllowed = "move";
  });
  for (const column of document.querySelectorAll(".column")) {
    column.addEventListener("dragover", (event) => {
      event.preventDefault();
      column.classList.add("drop-target");
    });
    column.addEventListener("dragleave", () => column.classList.remove("drop-target"));
    column.addEventListener("drop", (event) => {
      event.preventDefault();
      column.classList.remove("drop-target");
      const task = state.replica?.tasks.get(event.dataTransfer.getData("text/plain"));
      if (task && task.status !== column.dataset.status) {
        write("update", task.id, task.version, { status: column.dataset.status });
      }
    });
  }

  $("#edit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    saveEditor();
  });
  $("#edit-cancel").addEventListener("click", () => {
    state.editing = null;
    $("#editor").close();
  });

  $("#conflict-overwrite").addEventListener("click", () => {
    const { kind, changes, current } = state.conflict;
    hideConflict();
    write(kind, current.id, current.version, changes);
  });
  $("#conflict-keep").addEventListener("click", hideConflict);
}

wire();
boot();
