// The Socket.IO side (docs/protocol.md): connect with the token and the replica's
// cursor, apply `sync` pages and task events, and say how the connection is.
//
// The client is the official socket.io-client ESM build, served by this server from
// web/node_modules (npm ci); when it is not installed, loadClient() gives null and the
// page works without live updates.

const CLIENT_URL = "/vendor/socket.io.esm.min.js";
const TASK_EVENTS = ["task:created", "task:updated", "task:deleted"];
const SIGNED_OUT = new Set(["token_expired", "token_revoked"]); // session:ended reasons
const RETRY_REFUSED_MS = 2000; // a refused connect (e.g. store unavailable) is not retried by the client

export async function loadClient() {
  try {
    const module = await import(CLIENT_URL);
    return module.io;
  } catch {
    return null;
  }
}

export class Live {
  // handlers: onChange(changed, tasks, origin), onState(state), onSessionEnd(message),
  // onNotice(message)
  constructor(io, token, replica, handlers) {
    this.io = io;
    this.token = token;
    this.replica = replica;
    this.handlers = handlers;
    this.syncPages = 0;
    this.socket = null;
    this.retryTimer = null;
    this.stopped = false;
    this.wentOffline = () => this.offline();
    this.cameOnline = () => this.online();
  }

  start() {
    const socket = this.io({
      transports: ["websocket"],
      forceNew: true,
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
      autoConnect: false,
      // A function, so every reconnect sends the cursor as it is then: the server
      // answers with `sync` pages of exactly what this tab missed, then live events.
      auth: (send) => send({ token: this.token, cursors: { [this.replica.scope]: this.replica.cursor } }),
    });
    this.socket = socket;
    socket.on("connect", () => this.report());
    socket.on("disconnect", () => this.report());
    socket.on("connect_error", (error) => this.refused(error));
    socket.io.on("reconnect_attempt", () => this.report());
    socket.on("sync", (page) => {
      if (page?.scope !== this.replica.scope) return;
      const changed = this.replica.applyPage(page);
      this.syncPages += 1;
      this.handlers.onChange(changed, page.changes, null, "sync");
    });
    for (const name of TASK_EVENTS) {
      socket.on(name, (event) => {
        if (event?.scope !== this.replica.scope) return;
        const changed = this.replica.apply(event.task);
        this.replica.advance(event.seq);
        this.handlers.onChange(changed, [event.task], event.origin, name);
      });
    }
    socket.on("session:expiring", (notice) => {
      this.handlers.onNotice(
        `Your session ends in ${notice.seconds_left} s: log out and in again to stay live.`);
    });
    socket.on("session:ended", (notice) => {
      if (SIGNED_OUT.has(notice?.reason)) {
        this.handlers.onSessionEnd(notice.message || "your session ended");
      } else if (!notice?.reconnect) {
        // server_shutdown: a Socket.IO disconnect, which the client does not retry; come
        // back (to this instance or another) with the cursor. server_draining says
        // reconnect: true and closes the transport, which socket.io-client retries itself.
        this.retryLater();
      }
    });
    window.addEventListener("offline", this.wentOffline);
    window.addEventListener("online", this.cameOnline);
    if (navigator.onLine) socket.connect();
    this.report();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    window.removeEventListener("offline", this.wentOffline);
    window.removeEventListener("online", this.cameOnline);
    this.socket?.disconnect();
    this.socket = null;
  }

  // The browser says the network is gone: close the socket now (rather than after the
  // heartbeat times out, up to 45 s) and stop retrying until it is back.
  offline() {
    clearTimeout(this.retryTimer);
    this.socket?.disconnect();
    this.report();
  }

  online() {
    if (this.stopped || !this.socket) return;
    if (!this.socket.connected) this.socket.connect();
    this.report();
  }

  refused(error) {
    const code = error?.data?.code;
    if (code === "unauthorized") {
      this.handlers.onSessionEnd(error.message || "please log in again");
      return;
    }
    if (this.socket && !this.socket.active) this.retryLater(); // refused by the server
    this.report();
  }

  retryLater() {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.online(), RETRY_REFUSED_MS);
  }

  get connected() {
    return Boolean(this.socket?.connected);
  }

  get state() {
    if (this.socket?.connected) return "live";
    if (!navigator.onLine || this.stopped) return "offline";
    return "reconnecting";
  }

  report() {
    if (!this.stopped) this.handlers.onState(this.state);
  }
}
