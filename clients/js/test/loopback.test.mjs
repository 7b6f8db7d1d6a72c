// tether.js against a real WebSocket server on 127.0.0.1 (real sockets, real timers).
// The server is the small RFC 6455 one in loopback-ws.mjs, played by each test as tether
// would per docs/protocol.md. Every wait is on an event with a timeout, never a bare sleep.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';

import { TetherClient } from '../tether.js';
import { startServer, LoopbackWebSocket } from './loopback-ws.mjs';

const WebSocketImpl = typeof globalThis.WebSocket === 'function' ? globalThis.WebSocket : LoopbackWebSocket;

function jwt(payload) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(payload)}.c2ln`;
}

/** Resolve with the first item `subscribe(fn)` reports that matches `pred`, or fail after `ms`. */
function waitFor(subscribe, pred, ms, what) {
  return new Promise((resolve, reject) => {
    let stop = () => {};
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`timed out waiting for ${what}`));
    }, ms);
    stop = subscribe((x) => {
      if (pred(x)) {
        clearTimeout(timer);
        stop();
        resolve(x);
      }
    });
  });
}

const statusIs = (client, pred, ms = 3000) => waitFor((fn) => client.onStatus(fn), pred, ms, 'status');
const event = (client, name, ms = 3000) => waitFor((fn) => client.onEvent(name, fn), () => true, ms, `event ${name}`);

function newClient(server, options) {
  const client = new TetherClient(server.url, {
    clientId: 'c',
    WebSocket: WebSocketImpl,
    autoConnect: false,
    minDelayMs: 20,
    maxDelayMs: 100,
    jitter: 0,
    minUptimeMs: 0,
    ...options,
  });
  after(() => client.close());
  return client;
}

describe('loopback server', () => {
  test('token per connect, since on reconnect, per-channel since, duplicates dropped', async (t) => {
    const server = await startServer();
    t.after(() => server.close());
    let n = 0;
    const client = newClient(server, { getToken: async () => `tok-${++n}`, channels: ['news'] });
    const got = [];
    client.on('*', (m) => m.seq != null && got.push(`${m.channel ?? '-'}:${m.seq}`));
    client.connect();

    const c1 = await server.connection(0);
    assert.equal(c1.param('token'), 'tok-1');
    assert.equal(c1.param('since'), '0:0');
    assert.equal(c1.param('client_id'), 'c');
    c1.welcome({ epoch: 'e1', seq: 0, recovered: true, missed: 0 });
    assert.deepEqual((await c1.receive('subscribe')).data, { channel: 'news' });
    c1.send({ type: 'subscribed', data: { channel: 'news', epoch: 'n1', seq: 4 } });
    c1.send({ type: 'notify', data: {}, seq: 1 });
    c1.send({ type: 'notify', data: {}, seq: 2 });
    c1.send({ type: 'notify', data: {}, seq: 2 });
    c1.send({ type: 'post', channel: 'news', data: {}, seq: 5 });
    // A heartbeat round trip orders the test after everything above reached the client.
    const ack = waitFor((fn) => client.on('heartbeat_ack', fn), () => true, 3000, 'ack');
    c1.send({ type: 'heartbeat_ack' });
    await ack;
    assert.deepEqual(got, ['-:1', '-:2', 'news:5']);
    assert.deepEqual(client.lastPosition(), { client: 'e1:2', channels: { news: 'n1:5' } });

    const resumed = event(client, 'resumed');
    await c1.close(1011, 'internal error');
    const c2 = await server.connection(1);
    assert.equal(c2.param('token'), 'tok-2');
    assert.equal(c2.param('since'), 'e1:2');
    c2.welcome({ epoch: 'e1', seq: 3, recovered: true, missed: 1 });
    assert.equal((await resumed).missed, 1);
    assert.deepEqual((await c2.receive('subscribe')).data, { channel: 'news', since: 'n1:5' });
    c2.send({ type: 'notify', data: {}, seq: 2 }); // an overlap at the joint: dropped
    c2.send({ type: 'notify', data: {}, seq: 3 });
    const last = waitFor((fn) => client.on('notify', fn), (m) => m.seq === 3, 3000, 'seq 3');
    await last;
    assert.deepEqual(got, ['-:1', '-:2', 'news:5', '-:3']);
    client.close();
    await c2.closed;
  });

  test('refresh before exp over the wire; 4004 reconnects at once with a new token', async (t) => {
    const server = await startServer();
    t.after(() => server.close());
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const tokens = [jwt({ sub: 'c', exp }), jwt({ sub: 'c', exp: exp + 1 }), jwt({ sub: 'c', exp: exp + 2 })];
    let n = 0;
    // A margin that puts the refresh ~100 ms after the welcome.
    const client = newClient(server, { getToken: () => tokens[n++], refreshMarginMs: exp * 1000 - Date.now() - 100, minDelayMs: 5000 });
    client.connect();
    const c1 = await server.connection(0);
    assert.equal(c1.param('token'), tokens[0]);
    c1.welcome();
    const refresh = await c1.receive('refresh');
    assert.deepEqual(refresh.data, { token: tokens[1] });
    const refreshed = event(client, 'token_refreshed');
    c1.send({ type: 'refreshed', data: { expires_at: new Date((exp + 1) * 1000).toISOString() } });
    await refreshed;
    const t0 = Date.now();
    c1.close(4004, 'token expired');
    const c2 = await server.connection(1);
    assert.ok(Date.now() - t0 < 2000, 'not the 5 s backoff');
    assert.equal(c2.param('token'), tokens[2]);
    client.close();
  });

  test('401 at the handshake looks like 1006: backoff, then maxRetries ends it', async (t) => {
    const server = await startServer({ refuse: () => 401 });
    t.after(() => server.close());
    const client = newClient(server, { getToken: () => 'bad', maxRetries: 3 });
    const closed = statusIs(client, (s) => s.status === 'closed');
    client.connect();
    const ev = await closed;
    assert.equal(ev.gaveUp, true);
    assert.equal(server.upgrades.length, 4, 'the first attempt and 3 retries');
    const gaps = server.upgrades.slice(1).map((u, i) => u.at - server.upgrades[i].at);
    assert.ok(gaps.every((g) => g >= 15), `backed off between attempts: ${gaps}`);
  });

  test('shutdown hint honoured; a channel-relayed shutdown changes nothing', async (t) => {
    const server = await startServer();
    t.after(() => server.close());
    const client = newClient(server, { channels: ['room'] });
    client.connect();
    const c1 = await server.connection(0);
    c1.welcome();
    await c1.receive('subscribe');
    c1.send({ type: 'shutdown', channel: 'room', data: { mode: 'drain', reconnect_after_ms: 1e12 } });
    c1.send({ type: 'shutdown', data: { mode: 'drain', reconnect_after_ms: 300 } });
    const closed = await c1.closed;
    const t0 = Date.now();
    assert.equal(closed.code, 1000, 'the client closed the draining connection itself');
    const c2 = await server.connection(1);
    const waited = c2.at - t0;
    assert.ok(waited >= 250, `waited for the hint (${waited} ms), not the 20 ms backoff`);
    assert.equal(server.connections.length, 2, 'the relayed shutdown did not cause a reconnect of its own');
    client.close();
  });
});
