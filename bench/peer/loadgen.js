'use strict';
// One load generator for every server variant.
//   node loadgen.js '<json config>'     (see run.py for the configs it is given)
// Client kinds:
//   client=raw  (default) one `ws` socket per connection speaking the minimal Engine.IO v4 /
//               Socket.IO v5 protocol: open -> CONNECT with auth -> ping/pong -> EVENT decode
//               (JSON text frames, or msgpack binary frames as socket.io-msgpack-parser sends them).
//               proto=plain talks to raw_ws_server.py (no Socket.IO framing).
//   client=sio  socket.io-client 4.8 (transports ['websocket']), used to calibrate what the
//               real client library costs.
// Every client refuses permessage-deflate (Node's server declines it anyway, aiohttp would accept).
// Scenarios: idle (a), fanout (b), bigroom (c). Every loop is bounded in count and in time.
//
// TaskMaster adaptation (bench/peer_compare.py; the original is ../shared/bench/peer/loadgen.js):
//   server=peer (default) : unchanged: auth {user}, events 'task' {ts,...}, POST /emit, /broadcast, /stats.
//   server=ours           : the TaskMaster server. Each socket connects with auth {token} (an HS256
//               JWT minted here with cfg.jwt = {secret, iss, aud}; claims sub/iat/exp/jti, as the
//               server issues them); events are the product's `task:created` envelopes, whose
//               task title carries the publisher's timestamp ('b<ms>'); every socket checks
//               that its scope's seq arrives exactly once and in order (seq_dup / seq_gap).
//               Publisher: publish=bench -> POST /api/_bench/creates [[user_id, title], ...]
//               (bench-only route, real write path: store commit -> broker -> relay);
//               publish=rest -> one POST /api/tasks per write with the user's Bearer token;
//               publish=events -> POST /api/_bench/publish, the same events without the store
//               (the delivery engine alone, as the peers' /emit); user u's writes go to
//               target u mod n, since that target's counter assigns the user's seqs.
//   fanout: socketsPerUser (default 1) sockets per user on each target.
//   snap(): also the whole machine's busy CPU from /proc/stat, to report the background load.
const http = require('http');
const crypto = require('crypto');
const fs = require('fs');
const { performance, monitorEventLoopDelay } = require('perf_hooks');
const WebSocket = require('ws');
const notepack = require('notepack.io');

const cfg = JSON.parse(process.argv[2]);
const now = () => performance.timeOrigin + performance.now(); // ms, sub-ms resolution
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const HARD_DEADLINE = Date.now() + (cfg.maxSeconds || 300) * 1000;
setTimeout(() => { console.error('loadgen: hard deadline hit, exiting'); process.exit(3); }, (cfg.maxSeconds || 300) * 1000).unref();

// ---------------------------------------------------------------- delivery sink
let deliveries = 0;
let lastDeliveryT = 0;
let recording = false;
let latCap = cfg.latCap || 3000000;
let lat = new Float64Array(latCap);
let latN = 0;
let badPackets = 0;
let frameBytes = 0;
let seqDup = 0;
let seqGap = 0;
let fullChecks = 0;
const CREATED = '42["task:created",';
let syncDeliveries = 0; // server=ours: deliveries that came in a store-repair `sync` answer
const otherEvents = {};
function onEvent(data) {
  deliveries++;
  const t = now();
  lastDeliveryT = t;
  if (recording && latN < latCap) lat[latN++] = t - data.ts;
}
function onTs(ts) { // same as onEvent, for a timestamp taken from our envelope
  deliveries++;
  const t = now();
  lastDeliveryT = t;
  if (recording && latN < latCap) lat[latN++] = t - ts;
}
// acknowledgement latency of the publisher's requests (batch or REST write)
let ackCap = 2000000;
let ack = new Float64Array(ackCap);
let ackN = 0;
function onAck(ts) { if (recording && ackN < ackCap) ack[ackN++] = now() - ts; }
const ours = cfg.server === 'ours';
const publish = cfg.publish || 'bench';
const userId = (u) => (cfg.userPrefix || 'u') + u;

// ---------------------------------------------------------------- tokens (server=ours)
function b64url(x) { return Buffer.from(x).toString('base64url'); }
const JWT_HEADER = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
const tokens = new Map();
function tokenFor(sub) {
  let tok = tokens.get(sub);
  if (tok) return tok;
  const iat = Math.floor(Date.now() / 1000) - 5;
  const payload = b64url(JSON.stringify({ sub, iat, exp: iat + 86400,
    jti: crypto.randomBytes(16).toString('hex'), iss: cfg.jwt.iss, aud: cfg.jwt.aud }));
  const sig = crypto.createHmac('sha256', cfg.jwt.secret).update(JWT_HEADER + '.' + payload).digest('base64url');
  tok = JWT_HEADER + '.' + payload + '.' + sig;
  tokens.set(sub, tok);
  return tok;
}
function authFor(u) { return ours ? { token: tokenFor(userId(u)) } : { user: String(u) }; }
function pct(arr, n, ps) {
  if (n === 0) return ps.map(() => null);
  const a = Float64Array.from(arr.subarray(0, n)).sort();
  return ps.map((p) => +a[Math.min(n - 1, Math.floor((p / 100) * n))].toFixed(3));
}

// ---------------------------------------------------------------- process stats
const CLK_TCK = 100;
function cpuSec(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch (e) { return null; }
}
function rssBytes(pid) {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch (e) { return null; }
}
function machineBusy() { // busy CPU seconds of the whole machine, from /proc/stat
  try {
    const v = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
    return (v.reduce((a, b) => a + b, 0) - v[3] - v[4]) / CLK_TCK;
  } catch (e) { return null; }
}
function tcpOutSegs() { // TCP segments sent by the whole machine (loopback included)
  try {
    const lines = fs.readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Tcp:'));
    const names = lines[0].split(/\s+/);
    return Number(lines[1].split(/\s+/)[names.indexOf('OutSegs')]);
  } catch (e) { return null; }
}
function snap() {
  const cu = process.cpuUsage();
  return {
    t: now(),
    machine: machineBusy(),
    segs: tcpOutSegs(),
    deliveries,
    syncDeliveries,
    servers: (cfg.serverPids || []).map(cpuSec),
    redis: cfg.redisPid ? cpuSec(cfg.redisPid) : null,
    self: (cu.user + cu.system) / 1e6,
  };
}
function cpuDelta(a, b) {
  const sec = (b.t - a.t) / 1000;
  const servers = b.servers.map((x, i) => (x != null && a.servers[i] != null ? x - a.servers[i] : null));
  const serverSum = servers.reduce((s, x) => s + (x || 0), 0);
  const machine = a.machine != null && b.machine != null ? (b.machine - a.machine) / sec : null;
  const own = serverSum + (a.redis != null && b.redis != null ? b.redis - a.redis : 0) + (b.self - a.self);
  return {
    wall_s: +sec.toFixed(3),
    machine_busy_cores: machine == null ? null : +machine.toFixed(2),
    background_cores: machine == null ? null : +Math.max(0, machine - own / sec).toFixed(2),
    server_cpu_s: servers.map((x) => (x == null ? null : +x.toFixed(2))),
    server_cpu_pct: +((100 * serverSum) / sec).toFixed(1),
    redis_cpu_pct: a.redis != null && b.redis != null ? +((100 * (b.redis - a.redis)) / sec).toFixed(1) : null,
    loadgen_cpu_pct: +((100 * (b.self - a.self)) / sec).toFixed(1),
    tcp_segments_per_delivery: a.segs != null && b.deliveries > a.deliveries ? +((b.segs - a.segs) / (b.deliveries - a.deliveries)).toFixed(3) : null,
    server_cpu_us_per_delivery: b.deliveries > a.deliveries ? +((1e6 * serverSum) / (b.deliveries - a.deliveries)).toFixed(2) : null,
    loadgen_cpu_us_per_delivery: b.deliveries > a.deliveries ? +((1e6 * (b.self - a.self)) / (b.deliveries - a.deliveries)).toFixed(2) : null,
  };
}
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();

// ---------------------------------------------------------------- HTTP control
const agent = new http.Agent({ keepAlive: true, maxSockets: cfg.httpSockets || 64 });
function post(base, path, bodyObj, extraHeaders) {
  const body = JSON.stringify(bodyObj);
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path, method: 'POST', agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...extraHeaders } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.setTimeout(120000, () => req.destroy(new Error('http timeout')));
    req.on('error', reject);
    req.end(body);
  });
}
function getJson(base, path) {
  return new Promise((resolve, reject) => {
    http.get(base + path, (res) => {
      let d = '';
      res.on('data', (c) => (d += c));
      res.on('end', () => { try { resolve(JSON.parse(d)); } catch (e) { reject(e); } });
    }).on('error', reject);
  });
}

// ---------------------------------------------------------------- clients
const proto = cfg.proto || 'json'; // json | msgpack | plain
const clientKind = cfg.client || 'raw';
let closedAfterOpen = 0;

function connectRaw(base, auth) {
  const wsBase = base.replace(/^http/, 'ws');
  const url = proto === 'plain'
    ? `${wsBase}/ws?user=${encodeURIComponent(auth.user)}`
    : `${wsBase}/socket.io/?EIO=4&transport=websocket`;
  return new Promise((resolve, reject) => {
    let done = false;
    let lastSeq = 0; // server=ours: the last seq of this socket's scope (fresh store: starts at 0)
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const finish = (err) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) { try { ws.terminate(); } catch (e) { /* ignore */ } reject(err); } else resolve(ws);
    };
    const timer = setTimeout(() => finish(new Error('connect timeout')), cfg.connectTimeoutMs || 30000);
    ws.on('open', () => { if (proto === 'plain') finish(); });
    ws.on('message', (data, isBinary) => {
      if (isBinary) { // socket.io-msgpack-parser packet {type, nsp, data, id?}
        let pkt;
        try { pkt = notepack.decode(data); } catch (e) { badPackets++; return; }
        if (pkt.type === 2) onEvent(pkt.data[1]);
        else if (pkt.type === 0) finish();
        else if (pkt.type === 4) finish(new Error('connect_error ' + JSON.stringify(pkt.data)));
        return;
      }
      const s = data.toString();
      frameBytes += s.length;
      if (proto === 'plain') { onEvent(JSON.parse(s)[1]); return; }
      const t = s.charCodeAt(0);
      if (t === 52) { // '4' engine.io MESSAGE
        const st = s.charCodeAt(1);
        if (st === 50 && ours && s.startsWith(CREATED)) {
          // Our envelope ['task:created', {type, scope, seq, task: {..., title, ...}, origin, ts}]
          // is ~420 bytes (the full task) against ~50-140 for the peers' payloads; a full
          // JSON.parse of it made this process the bottleneck of the big room (100 % of a core,
          // 12 us per delivery). Read the two fields we need in place (the server's orjson
          // keeps key order: the first "seq" is the envelope's, the first "title" the task's),
          // and check one frame in 256 with a full parse.
          const i = s.indexOf('"seq":', CREATED.length);
          const j = i < 0 ? -1 : s.indexOf('"title":"b', i);
          if (j < 0) { badPackets++; return; }
          const seq = parseInt(s.substr(i + 6, 20), 10);
          const ts = parseFloat(s.substr(j + 10, 32));
          if ((++fullChecks & 255) === 0) {
            const env = JSON.parse(s.slice(2))[1];
            if (env.seq !== seq || env.type !== 'task:created' || parseFloat(env.task.title.slice(1)) !== ts) badPackets++;
          }
          if (seq === lastSeq + 1) lastSeq = seq;
          else if (seq <= lastSeq) seqDup++;
          else { seqGap++; lastSeq = seq; }
          onTs(ts);
        } else if (st === 50 && ours) { // other events of ours: sync, session:*
          const ev = JSON.parse(s.slice(2));
          const env = ev[1];
          if (ev[0] === 'sync' && env && Array.isArray(env.changes)) {
            // The server repaired a gap in this socket's feed from the store (DESIGN 5.6: a
            // crossing or a drop costs latency, never data): the changes past our seq are
            // deliveries too, late ones; their latency counts like any other.
            otherEvents.sync = (otherEvents.sync || 0) + 1;
            const changes = env.changes.slice().sort((x, y) => x.seq - y.seq);
            for (const task of changes) {
              if (task.seq <= lastSeq) continue;
              if (task.seq !== lastSeq + 1) seqGap++;
              lastSeq = task.seq;
              syncDeliveries++;
              if (typeof task.title === 'string') onTs(parseFloat(task.title.slice(1)));
              else deliveries++;
            }
            if (env.reset) otherEvents.reset = (otherEvents.reset || 0) + 1;
          } else {
            otherEvents[ev[0]] = (otherEvents[ev[0]] || 0) + 1;
          }
        } else if (st === 50) onEvent(JSON.parse(s.slice(2))[1]); // '2' EVENT (default namespace)
        else if (st === 48) finish(); // '0' CONNECT ack
        else if (st === 52) finish(new Error('connect_error ' + s));
        else badPackets++;
      } else if (t === 50) { // '2' ping
        ws.send('3');
      } else if (t === 48) { // '0' open -> Socket.IO CONNECT with auth
        if (proto === 'msgpack') ws.send(notepack.encode({ type: 0, nsp: '/', data: auth }));
        else ws.send('40' + JSON.stringify(auth));
      } else if (t !== 51) badPackets++;
    });
    ws.on('error', (e) => finish(e));
    ws.on('close', () => { if (done) closedAfterOpen++; else finish(new Error('closed before connect')); });
  });
}

let ioClient = null;
let msgpackParser = null;
function connectSio(base, auth) {
  if (!ioClient) ioClient = require('socket.io-client').io;
  if (proto === 'msgpack' && !msgpackParser) msgpackParser = require('socket.io-msgpack-parser');
  return new Promise((resolve, reject) => {
    const opts = { transports: ['websocket'], auth, forceNew: true, reconnection: false,
      perMessageDeflate: false, timeout: cfg.connectTimeoutMs || 30000 };
    if (proto === 'msgpack') opts.parser = msgpackParser;
    const sock = ioClient(base, opts);
    sock.on('task', onEvent);
    sock.once('connect', () => resolve(sock));
    sock.once('connect_error', (e) => { sock.close(); reject(e); });
    sock.on('disconnect', () => { closedAfterOpen++; });
  });
}
const connectOne = clientKind === 'sio' ? connectSio : connectRaw;

async function connectMany(specs, concurrency) {
  let i = 0;
  let ok = 0;
  let fail = 0;
  const errors = {};
  const conns = [];
  const t0 = now();
  async function worker() {
    while (i < specs.length && Date.now() < HARD_DEADLINE - 5000) {
      const s = specs[i++];
      try { conns.push(await connectOne(s.base, s.auth)); ok++; } catch (e) {
        fail++;
        const k = String(e.message || e).slice(0, 80);
        errors[k] = (errors[k] || 0) + 1;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, specs.length) }, worker));
  const ms = now() - t0;
  return { conns, ok, fail, errors, ms, rate: +((1000 * ok) / ms).toFixed(1) };
}
function closeAll(conns) {
  for (const c of conns) {
    try { if (clientKind === 'sio') c.close(); else c.terminate(); } catch (e) { /* ignore */ }
  }
}
async function waitFor(pred, timeoutMs, stepMs = 20) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) { if (pred()) return true; await sleep(stepMs); }
  return pred();
}

// ---------------------------------------------------------------- scenario (a): idle connections
async function scenarioIdle() {
  const base = cfg.targets[0];
  const pid = cfg.serverPids[0];
  await sleep(500);
  const rss0 = rssBytes(pid);
  const lg0 = process.memoryUsage().rss;
  const levels = [];
  let all = [];
  let uid = 0;
  for (const level of cfg.levels) {
    const need = level - all.length;
    const specs = [];
    for (let k = 0; k < need; k++) specs.push({ base, auth: authFor(uid++) });
    const a = snap();
    const r = await connectMany(specs, cfg.concurrency || 100);
    const b = snap();
    all = all.concat(r.conns);
    await sleep(cfg.settleMs || 3000);
    const rss = rssBytes(pid);
    const lgRss = process.memoryUsage().rss;
    let st = null;
    try { st = await getJson(base, ours ? '/api/_bench/stats' : '/stats'); } catch (e) { /* ignore */ }
    levels.push({
      level, connected: all.length, new_ok: r.ok, new_fail: r.fail, errors: r.errors,
      connect_ms: +r.ms.toFixed(1), connect_rate_per_s: r.rate,
      server_rss_mb: +(rss / 1048576).toFixed(1),
      server_rss_kb_per_conn: +((rss - rss0) / 1024 / all.length).toFixed(2),
      server_sockets_reported: st ? st.sockets : null,
      loadgen_rss_kb_per_conn: +((lgRss - lg0) / 1024 / all.length).toFixed(2),
      connect_cpu: cpuDelta(a, b),
    });
    if (r.fail > need * 0.05) break; // machine does not allow more
  }
  closeAll(all);
  return { server_rss0_mb: +(rss0 / 1048576).toFixed(1), levels };
}

// ---------------------------------------------------------------- scenario (b): fan-out over 2 instances
function taskPayload(seq, ts) {
  return { ts, seq, task: { id: 'task-' + seq, title: 'Refactor the sync engine', done: false, rev: seq & 1023, list: 'inbox' } };
}
async function scenarioFanout() {
  const U = cfg.users;
  const T = cfg.targets;
  const K = cfg.socketsPerUser || 1;
  const specs = [];
  for (let u = 0; u < U; u++) for (const base of T) for (let k = 0; k < K; k++) specs.push({ base, auth: authFor(u) });
  const cr = await connectMany(specs, cfg.concurrency || 100);
  await sleep(1000);
  console.error('PHASE connected');
  const perEvent = T.length * K; // each user has K sockets on each instance
  const maxInflight = ours && publish === 'rest' ? (cfg.restMaxInflight || 64) : (cfg.maxInflight || 16);
  const W = cfg.writeTo || T.map((_, i) => i); // the targets the publisher writes to, in turn
  const restHeaders = (u) => ({ authorization: 'Bearer ' + tokenFor(userId(u)) });
  const steps = [];
  let seq = 0;
  let totalSent = 0;
  const plan = cfg.warmupRate ? [{ rate: cfg.warmupRate, warm: true }] : [];
  for (const rate of cfg.rates) plan.push({ rate, warm: false });
  for (const { rate, warm } of plan) {
    if (Date.now() > HARD_DEADLINE - 30000) break;
    let sent = 0;
    let stop = false;
    let skippedTicks = 0;
    const inflight = T.map(() => 0);
    let postErrors = 0;
    const t0 = now();
    const tick = () => {
      if (stop) return;
      if (inflight.some((x) => x >= maxInflight)) { skippedTicks++; setTimeout(tick, 5); return; }
      let due = Math.floor((rate * (now() - t0)) / 1000) - sent;
      if (ours && publish === 'rest') due = Math.min(due, W.length * maxInflight - inflight.reduce((a, b) => a + b, 0));
      if (due > 0) {
        const ts = now();
        const batches = T.map(() => []);
        for (let k = 0; k < due; k++) {
          const u = Math.floor(Math.random() * U);
          // publish=events: a user's events all go to one target, whose counter gives their seq
          const w = ours && publish === 'events' ? W[u % W.length] : W[seq % W.length];
          if (!ours) batches[w].push(['user:' + u, taskPayload(seq, ts)]);
          else if (publish === 'bench' || publish === 'events') batches[w].push([userId(u), 'b' + ts.toFixed(3)]);
          else batches[w].push(u);
          seq++;
        }
        sent += due;
        const done = (i) => (st) => { inflight[i]--; if (st >= 300) postErrors++; else onAck(ts); };
        const fail = (i) => () => { inflight[i]--; postErrors++; };
        batches.forEach((b, i) => {
          if (!b.length) return;
          if (ours && publish === 'rest') { // one REST write per event, with the user's token
            for (const u of b) {
              inflight[i]++;
              post(T[i], '/api/tasks', { title: 'b' + ts.toFixed(3) }, restHeaders(u)).then(done(i), fail(i));
            }
            return;
          }
          inflight[i]++;
          post(T[i], !ours ? '/emit' : publish === 'events' ? '/api/_bench/publish' : '/api/_bench/creates', b).then(done(i), fail(i));
        });
      }
      setTimeout(tick, cfg.tickMs || 10);
    };
    tick();
    await sleep(warm ? (cfg.warmupMs || 2000) : (cfg.warmMs || 1000));
    if (warm) { // JIT / allocator / connection-pool warm-up, not recorded
      stop = true;
      totalSent += sent;
      await waitFor(() => deliveries >= totalSent * perEvent && inflight.every((x) => x === 0), cfg.drainMs || 8000, 50);
      totalSent = Math.ceil(deliveries / perEvent);
      await sleep(500);
      continue;
    }
    const sentA = sent;
    const a = snap();
    latN = 0; ackN = 0; recording = true;
    loopDelay.reset();
    await sleep(cfg.windowMs || 5000);
    recording = false;
    const b = snap();
    const sentB = sent;
    const ld = { p50: +Math.max(0, loopDelay.percentile(50) / 1e6 - 10).toFixed(1), p99: +Math.max(0, loopDelay.percentile(99) / 1e6 - 10).toFixed(1) }; // minus the 10 ms sampling interval
    stop = true;
    totalSent += sent;
    const expected = totalSent * perEvent;
    const drained = await waitFor(() => deliveries >= expected && inflight.every((x) => x === 0), cfg.drainMs || 8000, 50);
    const win = (b.t - a.t) / 1000;
    const [p50, p95, p99, p999] = pct(lat, latN, [50, 95, 99, 99.9]);
    const [a50, a95, a99] = pct(ack, ackN, [50, 95, 99]);
    const dps = (b.deliveries - a.deliveries) / win;
    const step = {
      target_events_per_s: rate,
      sent_events_per_s: +((sentB - sentA) / win).toFixed(0),
      delivered_per_s: +dps.toFixed(0),
      delivered_events_per_s: +(dps / perEvent).toFixed(0),
      lat_ms: { p50, p95, p99, p999, max: latN ? +lat.subarray(0, latN).reduce((m, x) => (x > m ? x : m), -Infinity).toFixed(3) : null },
      ack_ms: { p50: a50, p95: a95, p99: a99, n: ackN },
      drained, missing_after_drain: Math.max(0, expected - deliveries),
      sync_deliveries: b.syncDeliveries - a.syncDeliveries,
      skipped_ticks: skippedTicks, post_errors: postErrors,
      loadgen_loop_delay_ms: ld,
      cpu: cpuDelta(a, b),
    };
    step.saturated = !drained || dps < 0.85 * rate * perEvent || (p99 != null && p99 > (cfg.satP99Ms || 1000));
    steps.push(step);
    if (!drained) { // re-sync the counter so the next step starts clean (should not happen before saturation)
      totalSent = Math.ceil(deliveries / perEvent);
    }
    if (step.saturated) break;
    await sleep(500);
  }
  closeAll(cr.conns);
  return { users: U, sockets_per_user: K, sockets: cr.ok, connect_fail: cr.fail, connect_errors: cr.errors,
    connect_rate_per_s: cr.rate, steps };
}

// ---------------------------------------------------------------- scenario (c): one big room
async function scenarioBigroom() {
  const base = cfg.targets[0];
  const N = cfg.N;
  const specs = [];
  for (let k = 0; k < N; k++) specs.push({ base, auth: authFor('all') });
  const cr = await connectMany(specs, cfg.concurrency || 100);
  await sleep(1000);
  console.error('PHASE connected'); // profile.py attaches py-spy on this line
  const n = cr.ok;
  const bursts = [];
  const plan = [{ M: cfg.warmM || 5, warm: true }];
  for (let r = 0; r < (cfg.reps || 3); r++) plan.push({ M: cfg.M, warm: false });
  for (const b of plan) {
    if (Date.now() > HARD_DEADLINE - 20000) break;
    const d0 = deliveries;
    const expected = n * b.M;
    latN = 0; recording = !b.warm;
    const s0 = snap();
    const t0 = now();
    let postMs = null;
    const pr = (ours
      ? post(base, '/api/_bench/creates', Array.from({ length: b.M }, () => [userId('all'), 'b' + t0.toFixed(3)]))
      : post(base, '/broadcast', { room: 'user:all', count: b.M, data: { ts: t0 } }))
      .then((st) => { postMs = st >= 300 ? -st : now() - t0; }, () => { postMs = -1; });
    const complete = await waitFor(() => deliveries - d0 >= expected, cfg.burstTimeoutMs || 60000, 5);
    await pr;
    const s1 = snap();
    recording = false;
    if (b.warm) { await sleep(500); continue; }
    const got = deliveries - d0;
    const elapsed = (complete ? lastDeliveryT : now()) - t0;
    const [p50, p99] = pct(lat, latN, [50, 99]);
    bursts.push({
      N: n, M: b.M, deliveries: got, complete, elapsed_ms: +elapsed.toFixed(1),
      deliveries_per_s: +((1000 * got) / elapsed).toFixed(0),
      emit_call_ms: postMs == null ? null : +postMs.toFixed(1),
      delivery_time_ms: { p50, p99 },
      cpu: cpuDelta(s0, s1),
    });
    await sleep(500);
  }
  closeAll(cr.conns);
  const dps = bursts.map((x) => x.deliveries_per_s).sort((x, y) => x - y);
  return { sockets: n, connect_fail: cr.fail, connect_errors: cr.errors, connect_rate_per_s: cr.rate,
    median_deliveries_per_s: dps.length ? dps[Math.floor(dps.length / 2)] : null, bursts };
}

// ---------------------------------------------------------------- main
(async () => {
  const t0 = Date.now();
  let result;
  if (cfg.scenario === 'idle') result = await scenarioIdle();
  else if (cfg.scenario === 'fanout') result = await scenarioFanout();
  else if (cfg.scenario === 'bigroom') result = await scenarioBigroom();
  else throw new Error('unknown scenario ' + cfg.scenario);
  result.scenario = cfg.scenario;
  result.client = clientKind;
  result.proto = proto;
  result.server = ours ? 'ours' : 'peer';
  if (ours) result.publish = publish;
  result.bad_packets = badPackets;
  result.seq_dup = seqDup;
  result.seq_gap = seqGap;
  result.sync_deliveries = syncDeliveries;
  result.deliveries = deliveries;
  result.other_events = otherEvents;
  result.mean_frame_bytes = deliveries ? +(frameBytes / deliveries).toFixed(1) : null;
  result.closed_after_open = closedAfterOpen;
  result.loadgen_peak_rss_mb = +(process.memoryUsage().rss / 1048576).toFixed(1);
  result.duration_s = (Date.now() - t0) / 1000;
  const out = JSON.stringify(result);
  if (cfg.out) fs.writeFileSync(cfg.out, out + '\n');
  console.log(out);
  await sleep(200);
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(2); });
