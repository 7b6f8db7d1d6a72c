#!/usr/bin/env node
// A webhook receiver for benchmarks (docs/protocol.md §10): counts every event tether POSTs and answers
// 204 at once. Node only (node:http, node:crypto), no npm packages; loopback only.
//
//   WEBHOOK_SECRET=... node scripts/webhook-sink.mjs --port 18090 [--out FILE] \
//       [--fail-first K] [--delay-ms D]
//
// - Listens on 127.0.0.1:PORT; any POST is an event (the path is not checked).
// - With WEBHOOK_SECRET set, checks `X-Tether-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of
//   "<t>.<body>">` (docs/webhooks.md) and counts missing / bad signatures and stale ones (t more
//   than 5 minutes off); the event is still answered 204 and counted.
// - Counts events without `X-Tether-Event-Id` and repeated event ids (a retry of an event the
//   sink already took, e.g. after an answer tether did not see).
// - --fail-first K: answers 500 to the first K POSTs (not counted as received: tether retries
//   them); --delay-ms D: waits D ms before every answer. Both off by default.
// - Counts events by `event`, distinct (client_id, session_id) pairs, duplicates (a body seen
//   before: at-least-once delivery may resend one), arrivals in 100 ms bins (Unix ms of the bin's
//   start), delivery latency = arrival − the body's `timestamp` (ms; both clocks are this
//   machine's), and each client id's sequence of events in arrival order (tether sends a client
//   id's events in order), summarised as pattern → number of client ids; sessions are numbered
//   per client id in the order they first arrived ("connect:1,online,disconnect:1,connect:2");
//   out_of_order counts events older (by `timestamp`) than the one before them of their client id.
// - Whether the sink kept up: its CPU time, its event loop's delay, the connections tether opened.
// - The summary (JSON) answers `GET /summary`; on SIGTERM or SIGINT it is written to --out (or
//   printed) and the process exits.
import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const port = Number(opt('--port', '18090'));
const out = opt('--out', '');
let failLeft = Number(opt('--fail-first', '0'));
const delayMs = Number(opt('--delay-ms', '0'));
const secret = process.env.WEBHOOK_SECRET || '';
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`webhook-sink: bad --port ${opt('--port')}`);
  process.exit(2);
}

const BIN_MS = 100;
const s = {
  requests: 0, // every HTTP request
  answered_500: 0, // POSTs refused on purpose (--fail-first)
  received: 0, // events accepted (204)
  bad_signature: 0,
  missing_signature: 0,
  stale_signature: 0,
  missing_event_id: 0,
  repeated_event_id: 0,
  bad_json: 0,
  duplicates: 0,
  disconnect_before_connect: 0, // a session's first event here was not its connect
  out_of_order: 0, // an event whose timestamp is older than the last one of its client id
  connections: 0, // TCP connections tether opened to the sink
  max_open_connections: 0,
  by_event: {},
  first_ms: 0,
  last_ms: 0,
};
const firstLast = {}; // event -> [first arrival ms, last arrival ms]
const bins = new Map(); // bin start (Unix ms) -> events
const latency = []; // ms
const latencyBy = {}; // event -> [ms]
const sessions = new Set(); // client_id \0 session_id
const clients = new Map(); // client_id -> "connect,online,..."
const bodies = new Set(); // raw bodies, for duplicates
const eventIds = new Set(); // X-Tether-Event-Id values seen
const codes = {}; // disconnect close codes

function record(raw, sig, eventId, now) {
  if (secret) {
    const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(sig || '');
    if (!sig) s.missing_signature++;
    else if (!m) s.bad_signature++;
    else {
      const mac = crypto.createHmac('sha256', secret).update(`${m[1]}.`).update(raw).digest();
      if (!crypto.timingSafeEqual(mac, Buffer.from(m[2], 'hex'))) s.bad_signature++;
      else if (Math.abs(now / 1000 - Number(m[1])) > 300) s.stale_signature++;
    }
  }
  if (!eventId) s.missing_event_id++;
  else if (eventIds.has(eventId)) s.repeated_event_id++;
  else eventIds.add(eventId);
  const text = raw.toString('utf8');
  if (bodies.has(text)) { s.duplicates++; return; }
  bodies.add(text);
  let e;
  try { e = JSON.parse(text); } catch { s.bad_json++; return; }
  s.received++;
  if (!s.first_ms) s.first_ms = now;
  s.last_ms = now;
  const ev = String(e.event);
  s.by_event[ev] = (s.by_event[ev] || 0) + 1;
  const fl = firstLast[ev] || (firstLast[ev] = [now, now]);
  fl[1] = now;
  const bin = now - (now % BIN_MS);
  bins.set(bin, (bins.get(bin) || 0) + 1);
  const t = Date.parse(e.timestamp);
  if (Number.isFinite(t)) {
    latency.push(now - t);
    (latencyBy[ev] || (latencyBy[ev] = [])).push(now - t);
  }
  if (e.session_id !== undefined) sessions.add(`${e.client_id}\0${e.session_id}`);
  if (ev === 'disconnect') codes[e.close_code] = (codes[e.close_code] || 0) + 1;
  // The client id's sequence: sessions numbered in the order they first arrived here
  // ("connect:1,online,disconnect:1,connect:2,..."), so a pattern shows any reordering.
  let c = clients.get(e.client_id);
  if (!c) clients.set(e.client_id, (c = { seq: [], sessions: new Map(), last: -Infinity }));
  if (Number.isFinite(t)) {
    if (t < c.last) s.out_of_order++;
    c.last = t;
  }
  let item = ev;
  if (e.session_id !== undefined) {
    let k = c.sessions.get(e.session_id);
    if (k === undefined) {
      c.sessions.set(e.session_id, (k = c.sessions.size + 1));
      if (ev !== 'connect') s.disconnect_before_connect++;
    }
    item = `${ev}:${k}`;
  }
  c.seq.push(item);
}

function pcts(xs) {
  if (!xs.length) return null;
  const v = Float64Array.from(xs).sort();
  const at = (p) => v[Math.min(v.length - 1, Math.ceil((p / 100) * v.length) - 1)];
  return { count: v.length, min: v[0], p50: at(50), p90: at(90), p99: at(99), max: v[v.length - 1] };
}

function summary() {
  const keys = [...bins.keys()].sort((a, b) => a - b);
  const first = keys.length ? keys[0] : 0;
  const last = keys.length ? keys[keys.length - 1] : 0;
  const perBin = [];
  for (let b = first; keys.length && b <= last; b += BIN_MS) perBin.push(bins.get(b) || 0);
  let peak = 0, peakAt = 0;
  perBin.forEach((n, i) => { if (n > peak) { peak = n; peakAt = first + i * BIN_MS; } });
  const busy = perBin.filter((n) => n > 0).length;
  const patterns = {};
  for (const c of clients.values()) {
    const p = c.seq.join(',');
    patterns[p] = (patterns[p] || 0) + 1;
  }
  const by = {};
  for (const [ev, xs] of Object.entries(latencyBy)) by[ev] = pcts(xs);
  const span = (s.last_ms - s.first_ms) / 1000;
  const cpu = process.cpuUsage();
  return {
    ...s,
    distinct_sessions: sessions.size,
    distinct_clients: clients.size,
    close_codes: codes,
    first_last_ms: firstLast,
    events_per_sec_first_to_last: span > 0 ? s.received / span : null,
    events_per_sec_busy_bins: busy ? (s.received / busy) * (1000 / BIN_MS) : null,
    bin_ms: BIN_MS,
    first_bin_ms: first,
    per_100ms: perBin,
    busy_bins: busy,
    peak_per_100ms: peak,
    peak_at_ms: peakAt,
    latency_ms: pcts(latency),
    latency_ms_by_event: by,
    sequences: patterns,
    // Whether the sink itself kept up: its CPU time and how late its event loop ran.
    cpu_ms: { user: cpu.user / 1000, system: cpu.system / 1000 },
    event_loop_delay_ms: {
      p50: loopDelay.percentile(50) / 1e6, p99: loopDelay.percentile(99) / 1e6,
      max: loopDelay.max / 1e6,
    },
    options: { port, fail_first: Number(opt('--fail-first', '0')), delay_ms: delayMs, signed: !!secret },
  };
}

const server = http.createServer((req, res) => {
  s.requests++;
  if (req.method === 'GET' && req.url === '/summary') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(summary()));
    return;
  }
  if (req.method !== 'POST') { res.writeHead(405); res.end(); return; }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const now = Date.now();
    const answer = (status) => { res.writeHead(status); res.end(); };
    if (failLeft > 0) {
      failLeft--;
      s.answered_500++;
      return delayMs > 0 ? setTimeout(answer, delayMs, 500) : answer(500);
    }
    record(Buffer.concat(chunks), req.headers['x-tether-signature'],
      req.headers['x-tether-event-id'], now);
    return delayMs > 0 ? setTimeout(answer, delayMs, 204) : answer(204);
  });
});
server.keepAliveTimeout = 60_000;
let open = 0;
server.on('connection', (sock) => {
  s.connections++;
  s.max_open_connections = Math.max(s.max_open_connections, ++open);
  sock.on('close', () => open--);
});
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();
server.listen(port, '127.0.0.1', () => console.error(`webhook-sink: listening on 127.0.0.1:${port}`));

function finish() {
  const text = JSON.stringify(summary(), null, 1);
  if (out) fs.writeFileSync(out, text + '\n');
  else process.stdout.write(text + '\n');
  process.exit(0);
}
process.on('SIGTERM', finish);
process.on('SIGINT', finish);
