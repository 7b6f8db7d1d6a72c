// Self-check for the reference server: node smoke.mjs
// Starts server.js on port 0, drives it with the `ws` client, and prints
// "N passed, N failed" as its last line (exit 1 on any failure).

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import WebSocket from 'ws';

const here = dirname(fileURLToPath(import.meta.url));
const HEARTBEAT_MS = 400;
const STEP_TIMEOUT = 3000;

let passed = 0;
let failed = 0;

function check(name, ok, detail) {
  if (ok) {
    passed++;
    console.log(`ok   ${name}`);
  } else {
    failed++;
    console.log(`FAIL ${name}${detail !== undefined ? ` -- ${detail}` : ''}`);
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TS_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

// ---------------------------------------------------------------------------
// Server process

function startServer() {
  const child = spawn(process.execPath, [join(here, 'server.js'), '--port', '0'], {
    env: { ...process.env, HEARTBEAT_INTERVAL_MS: String(HEARTBEAT_MS), HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const port = new Promise((resolve, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const m = /^listening on 127\.0\.0\.1:(\d+)$/m.exec(out);
      if (m) resolve(Number(m[1]));
    });
    exited.then(({ code, signal }) => reject(new Error(`server exited early (${code ?? signal})`)));
  });
  return { child, port, exited };
}

// ---------------------------------------------------------------------------
// Client with a message queue

class Client {
  constructor(url, options) {
    this.ws = new WebSocket(url, options);
    this.queue = [];
    this.waiters = [];
    this.ws.on('message', (raw, isBinary) => {
      const msg = { raw: raw.toString('utf8'), isBinary };
      try { msg.json = JSON.parse(msg.raw); } catch (_) { msg.json = undefined; }
      const w = this.waiters.shift();
      if (w) w(msg); else this.queue.push(msg);
    });
    this.ws.on('error', () => {});
    this.closed = new Promise((resolve) => this.ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    this.opened = new Promise((resolve, reject) => {
      this.ws.on('open', resolve);
      this.ws.on('error', reject);
      this.ws.on('unexpected-response', (req, res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => { body += c; });
        res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body })));
      });
    });
  }

  next(what, ms = STEP_TIMEOUT) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return withTimeout(new Promise((resolve) => this.waiters.push(resolve)), ms, what);
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }
}

async function api(base, method, path, body) {
  const res = await withTimeout(fetch(base + path, {
    method,
    headers: body !== undefined ? { 'content-type': 'application/json' } : {},
    body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)),
  }), STEP_TIMEOUT, `${method} ${path}`);
  const text = await withTimeout(res.text(), STEP_TIMEOUT, `${method} ${path} body`);
  let json;
  try { json = JSON.parse(text); } catch (_) { json = undefined; }
  return { status: res.status, json, text };
}

// ---------------------------------------------------------------------------

async function run() {
  const server = startServer();
  let port;
  try {
    port = await withTimeout(server.port, 5000, 'listening line');
    check('server prints "listening on 127.0.0.1:<port>"', port > 0, port);
  } catch (e) {
    check('server starts', false, e.message);
    server.child.kill('SIGKILL');
    return;
  }
  const base = `http://127.0.0.1:${port}`;
  const wsUrl = (id) => `ws://127.0.0.1:${port}/ws?client_id=${encodeURIComponent(id)}`;

  try {
    // --- refusal before upgrade
    {
      const c = new Client(`ws://127.0.0.1:${port}/ws`);
      try {
        await withTimeout(c.opened, STEP_TIMEOUT, 'missing client_id refusal');
        check('missing client_id -> 400', false, 'connection was accepted');
        c.ws.terminate();
      } catch (e) {
        let code;
        try { code = JSON.parse(e.body).error.code; } catch (_) { /* */ }
        check('missing client_id -> 400 missing_client_id', e.status === 400 && code === 'missing_client_id', `${e.message} ${e.body ?? ''}`);
      }
    }

    // --- three clients, welcome
    const ids = ['alice', 'bob', 'carol'];
    const clients = ids.map((id) => new Client(wsUrl(id)));
    await withTimeout(Promise.all(clients.map((c) => c.opened)), STEP_TIMEOUT, 'three clients open');
    check('3 clients connect', true);

    const sessions = new Set();
    for (let i = 0; i < 3; i++) {
      const m = await clients[i].next('welcome');
      const d = m.json && m.json.data;
      const ok = m.json && m.json.type === 'welcome' && TS_RE.test(m.json.timestamp) && d &&
        typeof d.session_id === 'string' && d.client_id === ids[i] &&
        d.heartbeat_interval_ms === HEARTBEAT_MS && d.heartbeat_timeout_ms === 2 * HEARTBEAT_MS;
      check(`welcome for ${ids[i]}`, ok, m.raw);
      if (d) sessions.add(d.session_id);
    }
    check('session ids are distinct', sessions.size === 3);

    // --- heartbeat
    clients[0].send({ type: 'heartbeat', id: 'h1' });
    {
      const m = await clients[0].next('heartbeat_ack');
      check('heartbeat -> heartbeat_ack (id echoed)', m.json && m.json.type === 'heartbeat_ack' && m.json.id === 'h1' && TS_RE.test(m.json.timestamp), m.raw);
    }

    // --- bad frames
    clients[1].send('not json');
    {
      const m = await clients[1].next('error for non-JSON');
      const d = m.json && m.json.data;
      check('non-JSON -> error bad_message', m.json && m.json.type === 'error' && d && d.code === 'bad_message' && d.original === 'not json', m.raw);
    }
    clients[1].send({ data: 1 });
    {
      const m = await clients[1].next('error for missing type');
      check('missing type -> error bad_message', m.json && m.json.type === 'error' && m.json.data.code === 'bad_message', m.raw);
    }
    clients[1].send({ type: 'heartbeat' });
    {
      const m = await clients[1].next('heartbeat_ack after error');
      check('connection stays open after bad frame', m.json && m.json.type === 'heartbeat_ack', m.raw);
    }

    // --- subscribe / unsubscribe
    clients[2].send({ type: 'subscribe', data: { channel: 'news' } });
    {
      const m = await clients[2].next('subscribed');
      check('subscribe -> subscribed', m.json && m.json.type === 'subscribed' && m.json.data.channel === 'news', m.raw);
    }
    clients[2].send({ type: 'unsubscribe', data: { channel: 'news' } });
    {
      const m = await clients[2].next('unsubscribed');
      check('unsubscribe -> unsubscribed', m.json && m.json.type === 'unsubscribed' && m.json.data.channel === 'news', m.raw);
    }

    // --- health
    {
      const r = await api(base, 'GET', '/health');
      check('GET /health -> ok, connections=3', r.status === 200 && r.json && r.json.status === 'ok' && r.json.connections === 3, r.text);
    }

    // --- broadcast
    {
      const data = { n: 1, text: 'héllo' };
      const r = await api(base, 'POST', '/api/v1/broadcast', { type: 'notify', data });
      check('broadcast -> 200 delivered=3', r.status === 200 && r.json && r.json.delivered === 3, `${r.status} ${r.text}`);
      const got = await withTimeout(Promise.all(clients.map((c) => c.next('broadcast'))), STEP_TIMEOUT, 'broadcast delivery');
      const allOk = got.every((m) => !m.isBinary && m.json && m.json.type === 'notify' && TS_RE.test(m.json.timestamp) &&
        JSON.stringify(m.json.data) === JSON.stringify(data));
      check('broadcast reaches all 3 as text frames', allOk, got.map((m) => m.raw).join(' | '));
      check('broadcast frames are identical', got.every((m) => m.raw === got[0].raw));
    }
    {
      const r = await api(base, 'POST', '/api/v1/broadcast', '{not json');
      check('broadcast bad JSON -> 400 with error body', r.status === 400 && r.json && r.json.error && typeof r.json.error.code === 'string', `${r.status} ${r.text}`);
    }

    // --- push
    {
      const r = await api(base, 'POST', '/api/v1/push', { client_id: 'bob', type: 'direct', data: { x: 1 } });
      check('push to bob -> 200 delivered=1', r.status === 200 && r.json && r.json.delivered === 1, `${r.status} ${r.text}`);
      const m = await clients[1].next('push');
      check('bob receives the push', m.json && m.json.type === 'direct' && m.json.data.x === 1, m.raw);
      // The others must not have it: their next frame is the reply to a heartbeat.
      for (const i of [0, 2]) {
        clients[i].send({ type: 'heartbeat' });
        const n = await clients[i].next('heartbeat_ack after push');
        check(`${ids[i]} did not receive bob's push`, n.json && n.json.type === 'heartbeat_ack', n.raw);
      }
    }
    {
      const r = await api(base, 'POST', '/api/v1/push', { client_id: 'nobody', type: 'direct', data: {} });
      check('push to unknown client -> 404 no_session', r.status === 404 && r.json && r.json.error && r.json.error.code === 'no_session', `${r.status} ${r.text}`);
    }

    // --- heartbeat: a client that never answers pings is terminated
    {
      const silent = new Client(wsUrl('silent'), { autoPong: false });
      await withTimeout(silent.opened, STEP_TIMEOUT, 'silent client open');
      await silent.next('silent welcome');
      const t0 = Date.now();
      const closed = await withTimeout(silent.closed, 4 * HEARTBEAT_MS + 2000, 'silent client terminated');
      const elapsed = Date.now() - t0;
      check(`silent client terminated within 2 intervals (${elapsed} ms, code ${closed.code})`,
        closed.code === 1006 && elapsed <= 2 * HEARTBEAT_MS + 300, closed.code);
      await sleep(3 * HEARTBEAT_MS);
      check('ponging clients stay open through several intervals', clients.every((c) => c.ws.readyState === WebSocket.OPEN));
    }

    // --- shutdown
    {
      server.child.kill('SIGTERM');
      const closes = await withTimeout(Promise.all(clients.map((c) => c.closed)), 5000, 'close on SIGTERM');
      check('SIGTERM closes sockets with 1001', closes.every((c) => c.code === 1001), closes.map((c) => c.code).join(','));
      const { code, signal } = await withTimeout(server.exited, 5000, 'server exit');
      check('server exits 0 after SIGTERM', code === 0, `code=${code} signal=${signal}`);
    }
  } catch (e) {
    check('unexpected error', false, e.stack || e.message);
  } finally {
    if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
  }
}

const overall = setTimeout(() => {
  check('whole run finishes in 30 s', false);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(1);
}, 30000);

await run();
clearTimeout(overall);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
