// presence(channel) and join / leave over a real loopback socket: the server in loopback-ws.mjs
// plays tether's part of docs/protocol.md §14. Every wait is on an event with a timeout.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import { TetherClient } from '../tether.js';
import { startServer, LoopbackWebSocket } from './loopback-ws.mjs';

const WebSocketImpl = typeof globalThis.WebSocket === 'function' ? globalThis.WebSocket : LoopbackWebSocket;

function newClient(server) {
  const client = new TetherClient(server.url, {
    clientId: 'c',
    WebSocket: WebSocketImpl,
    autoConnect: false,
    channels: ['lobby'],
    minDelayMs: 20,
    maxDelayMs: 100,
    jitter: 0,
    minUptimeMs: 0,
  });
  after(() => client.close());
  return client;
}

function next(client, type, ms = 3000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} in time`)), ms);
    const stop = client.on(type, (m) => {
      clearTimeout(timer);
      stop();
      resolve(m);
    });
  });
}

test('presence resolves with the clients, rejects with the error code; join and leave arrive', async (t) => {
  const server = await startServer();
  t.after(() => server.close());
  const client = newClient(server);
  assert.equal(await client.presence('lobby').catch((e) => e.message), 'tether: not connected');
  client.connect();
  const c = await server.connection(0);
  c.welcome();
  await c.receive('subscribe');
  c.send({ type: 'subscribed', data: { channel: 'lobby' } });

  const joined = next(client, 'join');
  c.send({ type: 'join', channel: 'lobby', data: { channel: 'lobby', client_id: 'alice' } });
  assert.equal((await joined).data.client_id, 'alice');

  const asked = client.presence('lobby');
  const ask = await c.receive('presence');
  assert.deepEqual(ask.data, { channel: 'lobby' });
  assert.equal(typeof ask.id, 'string');
  const clients = [{ client_id: 'alice', sessions: 2 }, { client_id: 'c', sessions: 1 }];
  c.send({ type: 'presence', id: ask.id, data: { channel: 'lobby', sessions: 3, clients } });
  assert.deepEqual(await asked, clients);

  const refused = client.presence('other');
  const ask2 = await c.receive((m) => m.type === 'presence' && m.id !== ask.id);
  c.send({ type: 'error', id: ask2.id, data: { code: 'forbidden', message: 'not a presence channel' } });
  await assert.rejects(refused, (e) => e.code === 'forbidden');

  const left = next(client, 'leave');
  c.send({ type: 'leave', channel: 'lobby', data: { channel: 'lobby', client_id: 'alice' } });
  assert.equal((await left).data.client_id, 'alice');

  // An ask in flight when the connection ends is rejected, not left hanging.
  const pending = client.presence('lobby');
  const rejected = assert.rejects(pending, /connection closed/);
  await c.receive((m) => m.type === 'presence' && m.id !== ask.id && m.id !== ask2.id);
  await c.close(1011, 'internal error');
  await rejected;
});
