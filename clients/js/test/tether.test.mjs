// Tests for clients/js/tether.js — run with `node --test clients/js/test/` (Node >= 20, no npm packages).
//
// The client is driven by a fake WebSocket and a fake clock (injected via the `scheduler`
// option), so every timing assertion is exact and no test sleeps. One test at the end uses
// the real timers with short timeouts and awaits status events.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import TetherDefault, { TetherClient, backoffDelay, DEFAULT_BACKOFF, jwtExpiry, parsePosition } from '../tether.js';

// ------------------------------------------------------------------ test doubles

/** A manual clock: timers run only when the test advances time. */
class FakeClock {
  constructor() {
    this.time = 0;
    this.nextId = 1;
    /** @type {Map<number, {at: number, fn: () => void, seq: number}>} */
    this.timers = new Map();
    this.scheduler = {
      setTimeout: (fn, ms) => {
        const id = this.nextId++;
        this.timers.set(id, { at: this.time + Math.max(0, ms), fn, seq: id });
        return id;
      },
      clearTimeout: (id) => {
        this.timers.delete(id);
      },
      now: () => this.time,
    };
  }

  /** Number of timers still scheduled. */
  get pending() {
    return this.timers.size;
  }

  /** Move time forward by `ms`, running due timers in order (including ones they schedule). */
  advance(ms) {
    const target = this.time + ms;
    for (;;) {
      let nextId = null;
      let next = null;
      for (const [id, t] of this.timers) {
        if (t.at <= target && (next === null || t.at < next.at || (t.at === next.at && t.seq < next.seq))) {
          next = t;
          nextId = id;
        }
      }
      if (next === null) break;
      this.timers.delete(nextId);
      this.time = next.at;
      next.fn();
    }
    this.time = target;
  }
}

/** A WebSocket stand-in that the test plays the server side of. */
class FakeWebSocket {
  static instances = [];

  static waiters = [];

  static reset() {
    FakeWebSocket.instances = [];
    FakeWebSocket.waiters = [];
  }

  /** Resolve once `n` sockets have been created (for the real-timer test). */
  static waitForInstances(n, ms = 2000) {
    if (FakeWebSocket.instances.length >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for socket #${n}`)), ms);
      FakeWebSocket.waiters.push({ n, resolve: () => (clearTimeout(timer), resolve()) });
    });
  }

  static get last() {
    return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
  }

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closeCalls = [];
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    FakeWebSocket.instances.push(this);
    const count = FakeWebSocket.instances.length;
    FakeWebSocket.waiters = FakeWebSocket.waiters.filter((w) => (w.n <= count ? (w.resolve(), false) : true));
  }

  // client side API
  send(text) {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    this.sent.push(JSON.parse(text));
  }

  close(code, reason) {
    this.closeCalls.push({ code, reason });
    if (this.readyState >= 2) return;
    this.readyState = 2;
    // Like a browser, the close event comes later; the client must have detached by then.
    queueMicrotask(() => {
      this.readyState = 3;
      this.onclose?.({ code: 1006, reason: '', wasClean: false });
    });
  }

  // server side helpers
  serverOpen() {
    this.readyState = 1;
    this.onopen?.({});
  }

  serverSend(obj) {
    this.onmessage?.({ data: typeof obj === 'string' ? obj : JSON.stringify(obj) });
  }

  serverWelcome({ interval = 30000, timeout = 60000, sessionId = 's-1', clientId = 'c' } = {}) {
    if (this.readyState === 0) this.serverOpen();
    this.serverSend({
      type: 'welcome',
      timestamp: '2026-11-22T10:00:00.000Z',
      data: { session_id: sessionId, client_id: clientId, heartbeat_interval_ms: interval, heartbeat_timeout_ms: timeout },
    });
  }

  serverError() {
    this.onerror?.({ type: 'error' });
  }

  serverClose(code, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason, wasClean: true });
  }

  /** Frames sent by the client with the given type. */
  sentOfType(type) {
    return this.sent.filter((m) => m.type === type);
  }
}

/** A client wired to a fresh fake clock and fake socket class; jitter source fixed at 0.5 (= no jitter). */
function setup(options = {}) {
  FakeWebSocket.reset();
  const clock = new FakeClock();
  const statuses = [];
  const client = new TetherClient('ws://push.test/ws', {
    clientId: 'c',
    WebSocket: FakeWebSocket,
    scheduler: clock.scheduler,
    random: () => 0.5,
    autoConnect: false,
    ...options,
  });
  client.onStatus((ev) => statuses.push(ev));
  return { client, clock, statuses };
}

const statusNames = (statuses) => statuses.map((s) => s.status);

// ------------------------------------------------------------------ backoffDelay

describe('backoffDelay', () => {
  const mid = () => 0.5; // the middle of the jitter range: no jitter

  test('starts at minDelayMs and grows by factor', () => {
    assert.equal(backoffDelay(0, {}, mid), 1000);
    assert.equal(backoffDelay(1, {}, mid), 1300);
    assert.equal(backoffDelay(2, {}, mid), 1690);
    assert.equal(backoffDelay(3, {}, mid), 2197);
    for (let a = 1; a < 30; a++) {
      assert.ok(backoffDelay(a, {}, mid) >= backoffDelay(a - 1, {}, mid), `non-decreasing at attempt ${a}`);
    }
  });

  test('is capped at maxDelayMs', () => {
    assert.equal(backoffDelay(9, {}, mid), 10000); // 1000 * 1.3^9 = 10604 > cap
    assert.equal(backoffDelay(50, {}, mid), 10000);
    assert.equal(backoffDelay(100000, {}, mid), 10000); // factor ** attempt overflows to Infinity
    assert.equal(backoffDelay(3, { minDelayMs: 100, maxDelayMs: 500, factor: 2, jitter: 0 }, mid), 500);
  });

  test('jitter stays within +/- jitter fraction of the base delay', () => {
    assert.equal(backoffDelay(0, {}, () => 0), 800);
    assert.equal(backoffDelay(0, {}, () => 0.999999), 1200);
    assert.equal(backoffDelay(50, {}, () => 0), 8000);
    assert.equal(backoffDelay(50, {}, () => 0.999999), 12000);
    let seed = 42;
    const lcg = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    const seen = new Set();
    for (let attempt = 0; attempt < 20; attempt++) {
      const base = Math.min(10000, 1000 * 1.3 ** attempt);
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(attempt, {}, lcg);
        assert.ok(d >= Math.floor(base * 0.8) && d <= Math.ceil(base * 1.2), `attempt ${attempt}: ${d}`);
        seen.add(d);
      }
    }
    assert.ok(seen.size > 100, 'jitter actually spreads the delays');
  });

  test('jitter 0 is deterministic; custom options are honoured', () => {
    const opts = { minDelayMs: 50, maxDelayMs: 1000, factor: 2, jitter: 0 };
    assert.deepEqual([0, 1, 2, 3, 4, 5].map((a) => backoffDelay(a, opts, Math.random)), [50, 100, 200, 400, 800, 1000]);
  });

  test('odd inputs stay sane', () => {
    assert.equal(backoffDelay(-3, {}, mid), 1000);
    assert.equal(backoffDelay(NaN, {}, mid), 1000);
    assert.equal(backoffDelay(1.7, {}, mid), 1300);
    assert.equal(backoffDelay(5, { minDelayMs: 0 }, mid), 0);
    assert.equal(backoffDelay(1000, { minDelayMs: 0 }, mid), 0);
    assert.ok(backoffDelay(0) >= 800 && backoffDelay(0) <= 1200, 'defaults to Math.random');
    assert.deepEqual(DEFAULT_BACKOFF, { minDelayMs: 1000, maxDelayMs: 10000, factor: 1.3, jitter: 0.2 });
  });
});

// ------------------------------------------------------------------ construction and URL

describe('construction', () => {
  test('default export is the class', () => {
    assert.equal(TetherDefault, TetherClient);
  });

  test('appends client_id and token, keeping existing query parameters', () => {
    FakeWebSocket.reset();
    const client = new TetherClient('wss://push.test/ws?region=eu', {
      clientId: 'user 42',
      token: 'abc.def',
      WebSocket: FakeWebSocket,
      autoConnect: false,
    });
    const u = new URL(client.url);
    assert.equal(u.protocol, 'wss:');
    assert.equal(u.pathname, '/ws');
    assert.equal(u.searchParams.get('region'), 'eu');
    assert.equal(u.searchParams.get('client_id'), 'user 42');
    assert.equal(u.searchParams.get('token'), 'abc.def');
  });

  test('no token parameter without a token; a token function is called per connect', () => {
    FakeWebSocket.reset();
    const plain = new TetherClient('ws://h/ws', { clientId: 'a', WebSocket: FakeWebSocket, autoConnect: false });
    assert.equal(new URL(plain.url).searchParams.has('token'), false);
    let n = 0;
    const fresh = new TetherClient('ws://h/ws', { clientId: 'a', token: () => `t${++n}`, WebSocket: FakeWebSocket, autoConnect: false });
    assert.equal(new URL(fresh.url).searchParams.get('token'), 't1');
    assert.equal(new URL(fresh.url).searchParams.get('token'), 't2');
  });

  test('http(s) URLs are mapped to ws(s)', () => {
    const c = new TetherClient('https://h/ws', { WebSocket: FakeWebSocket, autoConnect: false });
    assert.equal(new URL(c.url).protocol, 'wss:');
  });

  test('throws without a WebSocket implementation, and on bad options', () => {
    const saved = globalThis.WebSocket;
    try {
      delete globalThis.WebSocket;
      assert.throws(() => new TetherClient('ws://h/ws', { autoConnect: false }), TypeError);
    } finally {
      if (saved !== undefined) globalThis.WebSocket = saved;
    }
    assert.throws(() => new TetherClient('ws://h/ws', { WebSocket: FakeWebSocket, jitter: 2, autoConnect: false }), RangeError);
    assert.throws(() => new TetherClient('ws://h/ws', { WebSocket: FakeWebSocket, factor: 0.5, autoConnect: false }), RangeError);
  });

  test('autoConnect connects in a microtask, so listeners added after new see "connecting"', async () => {
    FakeWebSocket.reset();
    const clock = new FakeClock();
    const client = new TetherClient('ws://h/ws', { clientId: 'x', WebSocket: FakeWebSocket, scheduler: clock.scheduler });
    const seen = [];
    client.onStatus((ev) => seen.push(ev.status));
    assert.equal(FakeWebSocket.instances.length, 0);
    await Promise.resolve();
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.deepEqual(seen, ['connecting']);
    client.close();
  });

  test('close() before the auto connect cancels it', async () => {
    FakeWebSocket.reset();
    const client = new TetherClient('ws://h/ws', { WebSocket: FakeWebSocket });
    client.close();
    await Promise.resolve();
    assert.equal(FakeWebSocket.instances.length, 0);
    assert.equal(client.status, 'closed');
  });
});

// ------------------------------------------------------------------ welcome and heartbeat

describe('welcome and heartbeat', () => {
  test('connecting -> open on welcome; session id exposed', () => {
    const { client, statuses } = setup();
    client.connect();
    assert.equal(client.status, 'connecting');
    const ws = FakeWebSocket.last;
    assert.equal(new URL(ws.url).searchParams.get('client_id'), 'c');
    ws.serverOpen();
    assert.equal(client.status, 'connecting', 'open only after welcome');
    ws.serverWelcome({ sessionId: 'sess-9' });
    assert.equal(client.status, 'open');
    assert.equal(client.sessionId, 'sess-9');
    assert.deepEqual(statusNames(statuses), ['connecting', 'open']);
    assert.equal(statuses[1].sessionId, 'sess-9');
    client.close();
  });

  test('sends heartbeat on the interval advertised in welcome', () => {
    const { client, clock } = setup();
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverWelcome({ interval: 500, timeout: 2000 });
    clock.advance(499);
    assert.equal(ws.sentOfType('heartbeat').length, 0);
    clock.advance(1);
    assert.equal(ws.sentOfType('heartbeat').length, 1);
    assert.deepEqual(ws.sent.at(-1), { type: 'heartbeat' });
    ws.serverSend({ type: 'heartbeat_ack', timestamp: 't' });
    clock.advance(500);
    assert.equal(ws.sentOfType('heartbeat').length, 2);
    ws.serverSend({ type: 'heartbeat_ack', timestamp: 't' });
    clock.advance(5000);
    // Server silent since t=1000: the client keeps sending until it declares the connection dead.
    assert.ok(ws.sentOfType('heartbeat').length >= 4);
    client.close();
  });

  test('heartbeat: false sends no heartbeat and never judges silence', () => {
    const { client, clock } = setup({ heartbeat: false });
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverWelcome({ interval: 100, timeout: 300 });
    clock.advance(10000);
    assert.equal(ws.sentOfType('heartbeat').length, 0);
    assert.equal(client.status, 'open');
    assert.equal(FakeWebSocket.instances.length, 1);
    client.close();
  });

  test('a connection answering heartbeats stays open', () => {
    const { client, clock } = setup();
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverWelcome({ interval: 100, timeout: 250 });
    // Answer every heartbeat, a little late.
    for (let i = 0; i < 50; i++) {
      clock.advance(100);
      clock.advance(30);
      ws.serverSend({ type: 'heartbeat_ack', timestamp: 't' });
    }
    assert.equal(client.status, 'open');
    assert.equal(FakeWebSocket.instances.length, 1);
    client.close();
  });

  test('silence past heartbeat_timeout_ms closes the socket and reconnects', () => {
    const { client, clock, statuses } = setup();
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverWelcome({ interval: 100, timeout: 250 });
    clock.advance(249);
    assert.equal(client.status, 'open');
    assert.equal(ws.closeCalls.length, 0);
    clock.advance(1);
    assert.equal(ws.closeCalls.length, 1, 'dead socket closed by the client');
    assert.equal(client.status, 'reconnecting');
    const ev = statuses.at(-1);
    assert.equal(ev.reason, 'heartbeat timeout');
    assert.equal(ev.delayMs, 1000);
    clock.advance(999);
    assert.equal(FakeWebSocket.instances.length, 1);
    clock.advance(1);
    assert.equal(FakeWebSocket.instances.length, 2, 'reconnected after the backoff delay');
    FakeWebSocket.last.serverWelcome();
    assert.equal(client.status, 'open');
    client.close();
  });

  test('any server message counts as liveness, not just heartbeat_ack', () => {
    const { client, clock } = setup({ heartbeat: true });
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverWelcome({ interval: 100, timeout: 250 });
    for (let i = 0; i < 20; i++) {
      clock.advance(200);
      ws.serverSend({ type: 'notify', timestamp: 't', data: { i } });
    }
    clock.advance(200);
    ws.serverSend('not json at all'); // unparseable, still a frame from the server
    clock.advance(200);
    ws.serverSend({ type: 'notify', timestamp: 't' });
    assert.equal(client.status, 'open');
    assert.equal(FakeWebSocket.instances.length, 1);
    client.close();
  });

  test('late timers (throttled background tab) do not drop a healthy connection', () => {
    // Like Chrome's intensive throttling of hidden tabs: every timer fires at the next
    // multiple of 1000 ms, far later than the 100 ms interval and 250 ms timeout asked for.
    const { clock } = setup();
    const aligned = {
      setTimeout: (fn, ms) => {
        const due = clock.time + ms;
        return clock.scheduler.setTimeout(fn, Math.ceil(due / 1000) * 1000 - clock.time);
      },
      clearTimeout: clock.scheduler.clearTimeout,
      now: clock.scheduler.now,
    };
    FakeWebSocket.reset();
    const client = new TetherClient('ws://h/ws', { clientId: 'c', WebSocket: FakeWebSocket, scheduler: aligned, random: () => 0.5, autoConnect: false });
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverWelcome({ interval: 100, timeout: 250 });
    // The server answers every heartbeat within 10 ms.
    let answered = 0;
    for (let t = 0; t < 20000; t += 10) {
      clock.advance(10);
      const hbs = ws.sentOfType('heartbeat').length;
      if (hbs > answered) {
        answered = hbs;
        ws.serverSend({ type: 'heartbeat_ack', timestamp: 't' });
      }
    }
    assert.ok(answered >= 15);
    assert.equal(client.status, 'open');
    assert.equal(FakeWebSocket.instances.length, 1);
    // ...but when the server stops answering, the connection is still declared dead.
    clock.advance(3000);
    assert.equal(client.status, 'reconnecting');
    assert.equal(FakeWebSocket.instances[0].closeCalls.length, 1);
    client.close();
  });

  test('no welcome within connectTimeoutMs: close and retry with backoff', () => {
    const { client, clock, statuses } = setup({ connectTimeoutMs: 300 });
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverOpen(); // TCP + upgrade fine, but no welcome
    clock.advance(299);
    assert.equal(ws.closeCalls.length, 0);
    clock.advance(1);
    assert.equal(ws.closeCalls.length, 1);
    assert.equal(client.status, 'reconnecting');
    assert.equal(statuses.at(-1).reason, 'connect timeout');
    clock.advance(1000);
    assert.equal(FakeWebSocket.instances.length, 2);
    // The next attempt times out too; the delay grows.
    clock.advance(300);
    assert.equal(statuses.at(-1).delayMs, 1300);
    client.close();
  });
});

// ------------------------------------------------------------------ close codes

describe('close codes', () => {
  for (const code of [4002, 1000]) {
    test(`${code}: no reconnect, status closed`, () => {
      const { client, clock, statuses } = setup();
      client.connect();
      const ws = FakeWebSocket.last;
      ws.serverWelcome();
      ws.serverClose(code, code === 4002 ? 'closed by admin' : 'bye');
      assert.equal(client.status, 'closed');
      const ev = statuses.at(-1);
      assert.equal(ev.status, 'closed');
      assert.equal(ev.code, code);
      clock.advance(10 * 60 * 1000);
      assert.equal(FakeWebSocket.instances.length, 1, 'never reconnects');
      assert.equal(clock.pending, 0, 'no timer left behind');
      assert.deepEqual(statusNames(statuses), ['connecting', 'open', 'closed']);
    });
  }

  test('4002 before welcome also stops', () => {
    const { client, clock } = setup();
    client.connect();
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(4002, 'closed by admin');
    clock.advance(60000);
    assert.equal(client.status, 'closed');
    assert.equal(FakeWebSocket.instances.length, 1);
  });

  test('connect() starts again after a final close', () => {
    const { client } = setup();
    client.connect();
    FakeWebSocket.last.serverWelcome();
    FakeWebSocket.last.serverClose(4002);
    client.connect();
    assert.equal(FakeWebSocket.instances.length, 2);
    assert.equal(client.status, 'connecting');
    client.close();
  });

  test('1012: reconnect immediately, then back off if that fails', () => {
    const { client, clock, statuses } = setup();
    client.connect();
    FakeWebSocket.last.serverWelcome();
    FakeWebSocket.last.serverClose(1012, 'service restart');
    assert.equal(client.status, 'reconnecting');
    assert.equal(statuses.at(-1).code, 1012);
    assert.equal(statuses.at(-1).delayMs, 0);
    clock.advance(0);
    assert.equal(FakeWebSocket.instances.length, 2, 'reconnected with no delay');
    // That node is also going down before it welcomed us: now the backoff applies.
    FakeWebSocket.last.serverClose(1012, 'service restart');
    assert.equal(statuses.at(-1).delayMs, 1000);
    clock.advance(999);
    assert.equal(FakeWebSocket.instances.length, 2);
    clock.advance(1);
    assert.equal(FakeWebSocket.instances.length, 3);
    // After a connection that stayed up minUptimeMs (default 5 s) the next 1012 is immediate again.
    FakeWebSocket.last.serverWelcome();
    clock.advance(5000);
    FakeWebSocket.last.serverClose(1012, 'service restart');
    clock.advance(0);
    assert.equal(FakeWebSocket.instances.length, 4);
    client.close();
  });

  for (const code of [1001, 1006, 1008, 1009, 1011, 4001, 4003]) {
    test(`${code}: reconnect with backoff`, () => {
      const { client, clock, statuses } = setup({ random: () => 0 }); // lowest jitter: 800 ms
      client.connect();
      FakeWebSocket.last.serverWelcome();
      FakeWebSocket.last.serverClose(code, 'x');
      assert.equal(client.status, 'reconnecting');
      assert.equal(statuses.at(-1).code, code);
      assert.equal(statuses.at(-1).delayMs, 800);
      clock.advance(799);
      assert.equal(FakeWebSocket.instances.length, 1, 'not before the backoff delay');
      clock.advance(1);
      assert.equal(FakeWebSocket.instances.length, 2);
      client.close();
    });
  }

  test('backoff grows over consecutive failures and resets after minUptimeMs open', () => {
    const { client, clock, statuses } = setup();
    client.connect();
    const delays = [];
    for (let i = 0; i < 12; i++) {
      FakeWebSocket.last.serverClose(1006);
      delays.push(statuses.at(-1).delayMs);
      clock.advance(statuses.at(-1).delayMs);
    }
    assert.deepEqual(delays, [1000, 1300, 1690, 2197, 2856, 3713, 4827, 6275, 8157, 10000, 10000, 10000]);
    FakeWebSocket.last.serverWelcome();
    clock.advance(5000);
    FakeWebSocket.last.serverClose(1006);
    assert.equal(statuses.at(-1).delayMs, 1000, 'reset by a connection that stayed up');
    client.close();
  });

  test('an error event alone (no close event) still leads to a reconnect', () => {
    const { client, clock, statuses } = setup();
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverError(); // e.g. connection refused, reported by error only
    assert.equal(client.status, 'reconnecting');
    assert.equal(statuses.at(-1).code, 1006);
    assert.equal(statuses.at(-1).reason, 'connection error');
    // A close event that does follow (as in browsers) must not schedule a second attempt.
    ws.serverClose(1006);
    assert.equal(statuses.filter((s) => s.status === 'reconnecting').length, 1);
    clock.advance(999);
    assert.equal(FakeWebSocket.instances.length, 1);
    clock.advance(1);
    assert.equal(FakeWebSocket.instances.length, 2);
    FakeWebSocket.last.serverWelcome();
    assert.equal(client.status, 'open');
    clock.advance(0);
    assert.equal(FakeWebSocket.instances.length, 2, 'only one reconnect');
    client.close();
  });

  test('a failing WebSocket constructor is retried with backoff', () => {
    FakeWebSocket.reset();
    const clock = new FakeClock();
    let fail = true;
    class Flaky extends FakeWebSocket {
      constructor(url) {
        if (fail) throw new SyntaxError('boom');
        super(url);
      }
    }
    const client = new TetherClient('ws://h/ws', { WebSocket: Flaky, scheduler: clock.scheduler, random: () => 0.5, autoConnect: false });
    client.connect();
    assert.equal(client.status, 'reconnecting');
    fail = false;
    clock.advance(1000);
    assert.equal(FakeWebSocket.instances.length, 1);
    client.close();
  });
});

// ------------------------------------------------------------------ shutdown message

describe('shutdown', () => {
  test('shutdown message: close and reconnect after reconnect_after_ms (jitter only upwards)', () => {
    const { client, clock, statuses } = setup({ random: () => 0 });
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverWelcome();
    const got = [];
    client.on('shutdown', (m) => got.push(m));
    ws.serverSend({ type: 'shutdown', timestamp: 't', data: { mode: 'drain', reconnect_after_ms: 2000 } });
    assert.equal(got.length, 1, 'listeners still see the shutdown message');
    assert.equal(ws.closeCalls.length, 1);
    assert.equal(client.status, 'reconnecting');
    assert.equal(statuses.at(-1).reason, 'server shutdown');
    assert.equal(statuses.at(-1).delayMs, 2000);
    clock.advance(1999);
    assert.equal(FakeWebSocket.instances.length, 1);
    clock.advance(1);
    assert.equal(FakeWebSocket.instances.length, 2);
    client.close();
  });

  test('reconnectOnShutdown: false leaves the socket to the server', () => {
    const { client } = setup({ reconnectOnShutdown: false });
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverWelcome();
    ws.serverSend({ type: 'shutdown', timestamp: 't', data: { mode: 'drain', reconnect_after_ms: 2000 } });
    assert.equal(ws.closeCalls.length, 0);
    assert.equal(client.status, 'open');
    client.close();
  });
});

// ------------------------------------------------------------------ subscriptions

describe('subscriptions', () => {
  test('channels option and subscribe() are sent after welcome and re-sent after reconnect', () => {
    const { client, clock } = setup({ channels: ['news'] });
    assert.equal(client.subscribe('sport'), false, 'not connected: remembered for later');
    client.connect();
    let ws = FakeWebSocket.last;
    ws.serverOpen();
    assert.equal(ws.sentOfType('subscribe').length, 0, 'nothing before welcome');
    ws.serverWelcome();
    assert.deepEqual(ws.sentOfType('subscribe').map((m) => m.data.channel), ['news', 'sport']);

    assert.equal(client.subscribe('weather'), true);
    assert.deepEqual(ws.sent.at(-1), { type: 'subscribe', data: { channel: 'weather' } });
    assert.equal(client.unsubscribe('news'), true);
    assert.deepEqual(ws.sent.at(-1), { type: 'unsubscribe', data: { channel: 'news' } });
    assert.equal(client.unsubscribe('never-subscribed'), false);
    assert.deepEqual(client.channels, ['sport', 'weather']);

    ws.serverClose(1006);
    clock.advance(1000);
    ws = FakeWebSocket.last;
    assert.equal(FakeWebSocket.instances.length, 2);
    ws.serverWelcome({ sessionId: 's-2' });
    assert.deepEqual(ws.sentOfType('subscribe').map((m) => m.data.channel), ['sport', 'weather']);
    assert.equal(ws.sentOfType('unsubscribe').length, 0);

    // After a 1012 restart as well.
    ws.serverClose(1012);
    clock.advance(0);
    FakeWebSocket.last.serverWelcome({ sessionId: 's-3' });
    assert.deepEqual(FakeWebSocket.last.sentOfType('subscribe').map((m) => m.data.channel), ['sport', 'weather']);
    client.close();
  });

  test('send and publish build envelopes; send returns false when not connected', () => {
    const { client } = setup();
    assert.equal(client.send('ping', { a: 1 }), false);
    client.connect();
    assert.equal(client.send('ping', { a: 1 }), false, 'socket still connecting');
    const ws = FakeWebSocket.last;
    ws.serverWelcome();
    assert.equal(client.send('chat', { text: 'hi' }, { id: 'r1' }), true);
    assert.deepEqual(ws.sent.at(-1), { id: 'r1', type: 'chat', data: { text: 'hi' } });
    assert.equal(client.publish('room', 'chat', { text: 'yo' }), true);
    assert.deepEqual(ws.sent.at(-1), { type: 'publish', data: { channel: 'room', type: 'chat', data: { text: 'yo' } } });
    assert.throws(() => client.send(''), TypeError);
    client.close();
    assert.equal(client.send('chat', {}), false);
  });
});

// ------------------------------------------------------------------ dispatch

describe('dispatch', () => {
  test('on(type) gets envelopes of that type, on("*") gets all, off() removes', () => {
    const { client } = setup();
    const notify = [];
    const all = [];
    const errors = [];
    const fn = (m) => notify.push(m);
    client.on('notify', fn);
    client.on('*', (m) => all.push(m.type));
    client.on('error', (m) => errors.push(m.data.code));
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverWelcome();
    const msg = { type: 'notify', timestamp: '2026-11-22T10:00:00.123Z', data: { any: 'json' }, seq: 7 };
    ws.serverSend(msg);
    ws.serverSend({ type: 'order.updated', timestamp: 't', data: [1, 2] });
    ws.serverSend({ type: 'error', timestamp: 't', data: { code: 'unknown_type', message: 'm', original: '{}' } });
    ws.serverSend({ no: 'type' }); // ignored
    ws.serverSend('garbage'); // ignored
    assert.deepEqual(notify, [msg], 'listener gets the whole envelope');
    assert.deepEqual(all, ['welcome', 'notify', 'order.updated', 'error']);
    assert.deepEqual(errors, ['unknown_type']);
    client.off('notify', fn);
    ws.serverSend(msg);
    assert.equal(notify.length, 1);
    client.close();
  });

  test('on() returns an unsubscribe function; a pushed type named "status" is an ordinary message', () => {
    const { client, statuses } = setup();
    const got = [];
    const stop = client.on('status', (m) => got.push(m.data));
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverWelcome();
    ws.serverSend({ type: 'status', timestamp: 't', data: 'shipped' });
    stop();
    ws.serverSend({ type: 'status', timestamp: 't', data: 'delivered' });
    assert.deepEqual(got, ['shipped']);
    assert.deepEqual(statusNames(statuses), ['connecting', 'open']);
    client.close();
  });

  test('a throwing listener does not break the client or the other listeners', () => {
    const { client } = setup();
    const saved = globalThis.reportError;
    const reported = [];
    globalThis.reportError = (e) => reported.push(e.message);
    try {
      const got = [];
      client.on('notify', () => {
        throw new Error('listener bug');
      });
      client.on('notify', (m) => got.push(m.data));
      client.connect();
      const ws = FakeWebSocket.last;
      ws.serverWelcome();
      ws.serverSend({ type: 'notify', timestamp: 't', data: 1 });
      ws.serverSend({ type: 'notify', timestamp: 't', data: 2 });
      assert.deepEqual(got, [1, 2]);
      assert.deepEqual(reported, ['listener bug', 'listener bug']);
      assert.equal(client.status, 'open');
    } finally {
      if (saved === undefined) delete globalThis.reportError;
      else globalThis.reportError = saved;
      client.close();
    }
  });
});

// ------------------------------------------------------------------ cleanup

describe('close()', () => {
  test('clears every timer and never reconnects', async () => {
    const { client, clock, statuses } = setup();
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverWelcome({ interval: 100, timeout: 250 });
    assert.ok(clock.pending > 0);
    client.close();
    assert.equal(clock.pending, 0, 'no timers left');
    assert.deepEqual(ws.closeCalls, [{ code: 1000, reason: 'client closed' }]);
    await Promise.resolve(); // the fake socket's late close event
    clock.advance(60000);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(client.status, 'closed');
    assert.deepEqual(statusNames(statuses), ['connecting', 'open', 'closed']);
  });

  test('close() while waiting to reconnect cancels the reconnect', () => {
    const { client, clock } = setup();
    client.connect();
    FakeWebSocket.last.serverClose(1006);
    assert.equal(clock.pending, 1);
    client.close();
    assert.equal(clock.pending, 0);
    clock.advance(60000);
    assert.equal(FakeWebSocket.instances.length, 1);
  });

  test('close() from a status listener while reconnecting leaves no timer', () => {
    const { client, clock } = setup();
    client.onStatus((ev) => {
      if (ev.status === 'reconnecting') client.close();
    });
    client.connect();
    FakeWebSocket.last.serverWelcome();
    FakeWebSocket.last.serverClose(1006);
    assert.equal(client.status, 'closed');
    assert.equal(clock.pending, 0);
  });

  test('close() from inside a listener', () => {
    const { client, clock } = setup();
    client.on('welcome', () => client.close());
    client.connect();
    FakeWebSocket.last.serverWelcome({ interval: 100, timeout: 250 });
    assert.equal(client.status, 'closed');
    assert.equal(clock.pending, 0);
  });
});

// ------------------------------------------------------------------ real timers

describe('real timers', () => {
  /** Resolve with the first status event matching `pred`, or reject after `ms`. */
  function waitForStatus(client, pred, ms = 2000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        stop();
        reject(new Error('timed out waiting for status'));
      }, ms);
      const stop = client.onStatus((ev) => {
        if (pred(ev)) {
          clearTimeout(timer);
          stop();
          resolve(ev);
        }
      });
    });
  }

  test('default scheduler: 1012 reconnects without waiting for the backoff', async (t) => {
    FakeWebSocket.reset();
    // A minimum backoff far longer than the wait below: only the immediate path can pass.
    const client = new TetherClient('ws://h/ws', { clientId: 'rt', WebSocket: FakeWebSocket, autoConnect: false, minDelayMs: 60000 });
    t.after(() => client.close());
    client.connect();
    FakeWebSocket.last.serverWelcome({ interval: 1000, timeout: 5000 });
    assert.equal(client.status, 'open');
    FakeWebSocket.last.serverClose(1012, 'service restart');
    assert.equal(client.status, 'reconnecting');
    await FakeWebSocket.waitForInstances(2, 5000);
    FakeWebSocket.last.serverWelcome();
    assert.equal(client.status, 'open');
  });

  test('default scheduler: silence reconnects; close() leaves nothing running', async (t) => {
    FakeWebSocket.reset();
    const client = new TetherClient('ws://h/ws', { clientId: 'rt', WebSocket: FakeWebSocket, autoConnect: false, minDelayMs: 20, maxDelayMs: 50 });
    t.after(() => client.close());
    client.connect();
    const dead = waitForStatus(client, (e) => e.status === 'reconnecting', 5000);
    // Welcome, then go silent: the client must give up and reconnect by itself.
    FakeWebSocket.last.serverWelcome({ interval: 20, timeout: 60 });
    assert.equal((await dead).reason, 'heartbeat timeout');
    assert.ok(FakeWebSocket.instances[0].sentOfType('heartbeat').length >= 1);
    await FakeWebSocket.waitForInstances(2, 5000);
    client.close();
    // A timer left running would keep this test file from finishing.
  });
});

// ================================================================== tokens (§7)

/** An unsigned JWT: the client only reads the payload, the server verifies. */
function jwt(payload) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(payload)}.c2ln`;
}

/** Let pending promise callbacks run (async getToken); not a sleep. */
const flush = () => new Promise((resolve) => setImmediate(resolve));

/** A welcome with history fields (`serverWelcome` has none, i.e. history off). */
function welcome(ws, extra = {}) {
  if (ws.readyState === 0) ws.serverOpen();
  ws.serverSend({
    type: 'welcome',
    timestamp: 't',
    data: { session_id: 's', client_id: 'c', heartbeat_interval_ms: 30000, heartbeat_timeout_ms: 60000, ...extra },
  });
}

const param = (ws, name) => new URL(ws.url).searchParams.get(name);

describe('jwtExpiry and parsePosition', () => {
  test('jwtExpiry reads exp from base64url payloads, null otherwise', () => {
    assert.equal(jwtExpiry(jwt({ sub: 'a', exp: 1700000000 })), 1700000000);
    // base64url characters (- and _) and non-ASCII claims decode.
    assert.equal(jwtExpiry(jwt({ sub: 'ü>>>???', exp: 42, pad: '~~~' })), 42);
    assert.equal(jwtExpiry(jwt({ sub: 'a' })), null);
    assert.equal(jwtExpiry(jwt({ sub: 'a', exp: '42' })), null);
    assert.equal(jwtExpiry('opaque-token'), null);
    assert.equal(jwtExpiry('a.!!!.c'), null);
    assert.equal(jwtExpiry(null), null);
  });

  test('parsePosition splits at the last colon', () => {
    assert.deepEqual(parsePosition('e1:5'), { epoch: 'e1', seq: 5 });
    assert.deepEqual(parsePosition('node:a:17'), { epoch: 'node:a', seq: 17 });
    assert.deepEqual(parsePosition('0:0'), { epoch: '0', seq: 0 });
    for (const bad of ['e1', 'e1:', 'e1:-1', 'e1:1.5', 'e1:x', 5, null]) assert.equal(parsePosition(bad), null, String(bad));
  });
});

describe('tokens', () => {
  test('getToken is called before every connect and its token goes in the URL', async () => {
    let n = 0;
    const { client, clock } = setup({ getToken: async () => `tok-${++n}` });
    client.connect();
    assert.equal(FakeWebSocket.instances.length, 0, 'socket waits for the token');
    await flush();
    assert.equal(param(FakeWebSocket.last, 'token'), 'tok-1');
    FakeWebSocket.last.serverWelcome();
    FakeWebSocket.last.serverClose(1006);
    clock.advance(1000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 2);
    assert.equal(param(FakeWebSocket.last, 'token'), 'tok-2');
    assert.equal(n, 2);
    assert.equal(new URL(client.url).searchParams.get('token'), 'tok-2', 'url shows the last token without asking again');
    assert.equal(n, 2);
    client.close();
  });

  test('a synchronous getToken and the old token function still work', () => {
    const { client } = setup({ getToken: () => 'sync' });
    client.connect();
    assert.equal(param(FakeWebSocket.last, 'token'), 'sync');
    client.close();
    const legacy = setup({ token: () => 'fn' });
    legacy.client.connect();
    assert.equal(param(FakeWebSocket.last, 'token'), 'fn');
    legacy.client.close();
  });

  test('refresh is sent at exp - refreshMarginMs, and re-armed from the refreshed token', async () => {
    // The fake clock starts at 0 ms since the epoch, so exp 100 s is 100000 ms on it.
    const tokens = [jwt({ sub: 'c', exp: 100 }), jwt({ sub: 'c', exp: 200 }), jwt({ sub: 'c', exp: 300 })];
    let calls = 0;
    const { client, clock } = setup({ heartbeat: false, getToken: async () => tokens[calls++] });
    const events = [];
    client.onEvent('token_refreshed', (e) => events.push(e));
    client.connect();
    await flush();
    const ws = FakeWebSocket.last;
    ws.serverWelcome();
    clock.advance(69999);
    await flush();
    assert.equal(ws.sentOfType('refresh').length, 0);
    clock.advance(1);
    await flush();
    assert.deepEqual(ws.sentOfType('refresh'), [{ type: 'refresh', data: { token: tokens[1] } }]);
    ws.serverSend({ type: 'refreshed', timestamp: 't', data: { expires_at: '1970-01-01T00:03:20.000Z' } });
    assert.deepEqual(events, [{ expiresAt: '1970-01-01T00:03:20.000Z' }]);
    clock.advance(99999); // now 169999: the new token refreshes at 200 s - 30 s
    await flush();
    assert.equal(ws.sentOfType('refresh').length, 1);
    clock.advance(1);
    await flush();
    assert.equal(ws.sentOfType('refresh').at(-1).data.token, tokens[2]);
    assert.equal(client.status, 'open');
    client.close();
  });

  test('a token already inside the margin refreshes now, but the same token is not re-sent in a loop', () => {
    const tok = jwt({ sub: 'c', exp: 10 }); // 10 s left, margin 30 s
    let calls = 0;
    const { client, clock } = setup({ getToken: () => (calls++, tok) });
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverWelcome();
    clock.advance(0);
    assert.equal(calls, 2, 'connect + one immediate refresh attempt');
    assert.equal(ws.sentOfType('refresh').length, 0, 'nothing newer to send');
    clock.advance(999);
    assert.equal(calls, 2, 'no tight loop: the next ask waits for the backoff');
    clock.advance(1);
    assert.equal(calls, 3);
    client.close();
  });

  test('invalid_token keeps the connection and emits token_rejected', () => {
    let calls = 0;
    const { client, clock } = setup({ heartbeat: false, getToken: () => jwt({ sub: 'c', exp: 100 + calls++ }) });
    const rejected = [];
    const errors = [];
    client.onEvent('token_rejected', (e) => rejected.push(e));
    client.on('error', (m) => errors.push(m.data.code));
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverWelcome();
    clock.advance(70000);
    assert.equal(ws.sentOfType('refresh').length, 1);
    ws.serverSend({ type: 'error', timestamp: 't', data: { code: 'invalid_token', message: 'different sub' } });
    assert.deepEqual(rejected, [{ code: 'invalid_token', message: 'different sub' }]);
    assert.deepEqual(errors, ['invalid_token'], 'the error envelope is still dispatched');
    assert.equal(client.status, 'open');
    assert.equal(ws.closeCalls.length, 0);
    client.close();
  });

  test('4004: a new token and an immediate reconnect; a second 4004 in a row backs off', () => {
    let n = 0;
    const { client, clock, statuses } = setup({ heartbeat: false, getToken: () => `t${++n}` });
    client.connect();
    FakeWebSocket.last.serverWelcome();
    clock.advance(60000);
    FakeWebSocket.last.serverClose(4004, 'token expired');
    assert.equal(statuses.at(-1).delayMs, 0);
    clock.advance(0);
    assert.equal(FakeWebSocket.instances.length, 2);
    assert.equal(param(FakeWebSocket.last, 'token'), 't2');
    FakeWebSocket.last.serverClose(4004, 'token expired');
    assert.equal(statuses.at(-1).delayMs, 1000);
    client.close();
  });

  test('getToken throwing: token_error event, reconnecting status, growing backoff, no tight loop', async () => {
    let calls = 0;
    let fail = true;
    const { client, clock, statuses } = setup({
      getToken: async () => {
        calls++;
        if (fail) throw new Error('auth service down');
        return 'ok';
      },
    });
    const tokenErrors = [];
    client.onEvent('token_error', (e) => tokenErrors.push(e));
    client.connect();
    await flush();
    assert.equal(calls, 1);
    assert.equal(FakeWebSocket.instances.length, 0);
    assert.equal(client.status, 'reconnecting');
    assert.equal(statuses.at(-1).reason, 'token error: auth service down');
    assert.equal(statuses.at(-1).delayMs, 1000);
    assert.equal(tokenErrors[0].phase, 'connect');
    assert.equal(tokenErrors[0].error.message, 'auth service down');
    clock.advance(999);
    await flush();
    assert.equal(calls, 1, 'nothing before the backoff delay');
    clock.advance(1);
    await flush();
    assert.equal(calls, 2);
    assert.equal(statuses.at(-1).delayMs, 1300, 'the delay grows');
    fail = false;
    clock.advance(1300);
    await flush();
    assert.equal(param(FakeWebSocket.last, 'token'), 'ok');
    client.close();
  });

  test('a getToken that never settles is cut by connectTimeoutMs; a late token opens nothing', async () => {
    let resolveLate;
    const { client, clock, statuses } = setup({ connectTimeoutMs: 500, getToken: () => new Promise((r) => (resolveLate = r)) });
    client.connect();
    clock.advance(500);
    assert.equal(statuses.at(-1).reason, 'connect timeout');
    resolveLate('late');
    await flush();
    assert.equal(FakeWebSocket.instances.length, 0, 'the abandoned attempt stays abandoned');
    client.close();
    assert.equal(clock.pending, 0);
  });

  test('close() while getToken is pending: no socket afterwards', async () => {
    let resolveLate;
    const { client } = setup({ getToken: () => new Promise((r) => (resolveLate = r)) });
    client.connect();
    client.close();
    resolveLate('t');
    await flush();
    assert.equal(FakeWebSocket.instances.length, 0);
  });

  test('getToken throwing at refresh time: token_error (phase refresh), retried with backoff', () => {
    let calls = 0;
    const { client, clock } = setup({
      heartbeat: false,
      getToken: () => {
        if (calls++ > 0) throw new Error('nope');
        return jwt({ sub: 'c', exp: 100 });
      },
    });
    const errs = [];
    client.onEvent('token_error', (e) => errs.push(e.phase));
    client.connect();
    FakeWebSocket.last.serverWelcome();
    clock.advance(70000);
    assert.deepEqual(errs, ['refresh']);
    clock.advance(999);
    assert.equal(calls, 2);
    clock.advance(1);
    assert.equal(calls, 3);
    assert.equal(client.status, 'open');
    client.close();
  });
});

// ================================================================== resume (§8)

describe('resume', () => {
  test('first connection sends since=0:0; a resume keeps the position so the replay is not dropped', () => {
    const { client, clock } = setup();
    const resumed = [];
    const got = [];
    client.onEvent('resumed', (e) => resumed.push(e));
    client.on('notify', (m) => got.push(m.seq));
    client.connect();
    const ws = FakeWebSocket.last;
    assert.equal(param(ws, 'since'), '0:0');
    welcome(ws, { epoch: 'e1', seq: 3, recovered: true, missed: 3 });
    assert.deepEqual(resumed, [{ stream: 'client', missed: 3, position: 'e1:0' }]);
    for (const seq of [1, 2, 3, 4]) ws.serverSend({ type: 'notify', timestamp: 't', seq });
    assert.deepEqual(got, [1, 2, 3, 4]);
    assert.equal(client.lastPosition().client, 'e1:4');
    ws.serverClose(1006);
    clock.advance(1000);
    assert.equal(param(FakeWebSocket.last, 'since'), 'e1:4');
    client.close();
  });

  test('duplicates (seq <= last seen in this epoch) are dropped, per stream', () => {
    const { client } = setup({ channels: ['news'] });
    const got = [];
    const dups = [];
    client.on('*', (m) => m.seq != null && got.push(`${m.channel ?? '-'}:${m.seq}`));
    client.onEvent('duplicate', (e) => dups.push(e));
    client.connect();
    const ws = FakeWebSocket.last;
    welcome(ws, { epoch: 'e1', seq: 5 });
    ws.serverSend({ type: 'subscribed', timestamp: 't', data: { channel: 'news', epoch: 'n1', seq: 1 } });
    ws.serverSend({ type: 'notify', timestamp: 't', seq: 6 });
    ws.serverSend({ type: 'notify', timestamp: 't', seq: 6 });
    ws.serverSend({ type: 'notify', timestamp: 't', seq: 4 });
    ws.serverSend({ type: 'post', channel: 'news', timestamp: 't', seq: 2 });
    ws.serverSend({ type: 'post', channel: 'news', timestamp: 't', seq: 2 });
    ws.serverSend({ type: 'notify', timestamp: 't', seq: 7 });
    assert.deepEqual(got, ['-:6', 'news:2', '-:7']);
    assert.deepEqual(dups, [
      { stream: 'client', seq: 6 },
      { stream: 'client', seq: 4 },
      { stream: 'channel', channel: 'news', seq: 2 },
    ]);
    assert.deepEqual(client.lastPosition(), { client: 'e1:7', channels: { news: 'n1:2' } });
    client.close();
  });

  test('a stream that starts again at seq 1 while connected is dispatched, not dropped as a duplicate', () => {
    const { client } = setup({ channels: ['news'] });
    const got = [];
    const restarted = [];
    const dups = [];
    client.on('*', (m) => m.seq != null && got.push(`${m.channel ?? '-'}:${m.seq}`));
    client.onEvent('restarted', (e) => restarted.push(e));
    client.onEvent('duplicate', (e) => dups.push(e));
    client.connect();
    const ws = FakeWebSocket.last;
    welcome(ws, { epoch: 'e1', seq: 57 });
    ws.serverSend({ type: 'subscribed', timestamp: 't', data: { channel: 'news', epoch: 'n1', seq: 9 } });
    // history_ttl passed in silence: the server's streams start again in new epochs.
    ws.serverSend({ type: 'notify', timestamp: 't', seq: 1 });
    ws.serverSend({ type: 'post', channel: 'news', timestamp: 't', seq: 1 });
    ws.serverSend({ type: 'notify', timestamp: 't', seq: 2 });
    ws.serverSend({ type: 'notify', timestamp: 't', seq: 2 });
    assert.deepEqual(got, ['-:1', 'news:1', '-:2']);
    assert.deepEqual(restarted, [
      { stream: 'client', previous: 57 },
      { stream: 'channel', channel: 'news', previous: 9 },
    ]);
    assert.deepEqual(dups, [{ stream: 'client', seq: 2 }]);
    client.close();
  });

  test('recovered: false emits recovery_failed and takes the head as the position', () => {
    const { client, clock } = setup({ position: { client: 'old:9' } });
    const failed = [];
    client.onEvent('recovery_failed', (e) => failed.push(e));
    client.connect();
    assert.equal(param(FakeWebSocket.last, 'since'), 'old:9', 'resumes from the saved position');
    welcome(FakeWebSocket.last, { epoch: 'e2', seq: 40, recovered: false, missed: 0 });
    assert.deepEqual(failed, [{ stream: 'client', since: 'old:9', position: 'e2:40' }]);
    FakeWebSocket.last.serverSend({ type: 'notify', timestamp: 't', seq: 41 });
    FakeWebSocket.last.serverClose(1006);
    clock.advance(1000);
    assert.equal(param(FakeWebSocket.last, 'since'), 'e2:41');
    client.close();
  });

  test('a saved position the server cannot read: welcome (bad_position), the stored replay is dispatched, the position is forgotten', () => {
    const { client, clock } = setup({ position: { client: 'old-format-epoch:3', channels: { news: 'old-format-epoch:9' } }, channels: ['news'] });
    const failed = [];
    const got = [];
    client.onEvent('recovery_failed', (e) => failed.push(e));
    client.on('*', (m) => m.seq != null && got.push(`${m.channel ?? '-'}:${m.seq}`));
    client.connect();
    let ws = FakeWebSocket.last;
    assert.equal(param(ws, 'since'), 'old-format-epoch:3');
    // The server opens the session instead of refusing it, and replays what it stores.
    welcome(ws, { epoch: 'e2', seq: 2, recovered: false, reason: 'bad_position', missed: 2 });
    assert.equal(client.status, 'open');
    ws.serverSend({ type: 'notify', timestamp: 't', seq: 1 });
    ws.serverSend({ type: 'notify', timestamp: 't', seq: 2 });
    assert.deepEqual(ws.sentOfType('subscribe').map((m) => m.data), [{ channel: 'news', since: 'old-format-epoch:9' }]);
    ws.serverSend({ type: 'subscribed', timestamp: 't', data: { channel: 'news', epoch: 'n1', seq: 5, recovered: false, reason: 'bad_position', missed: 1 } });
    ws.serverSend({ type: 'post', channel: 'news', timestamp: 't', seq: 5 });
    assert.deepEqual(got, ['-:1', '-:2', 'news:5'], 'the replay is not taken for duplicates');
    assert.deepEqual(failed, [
      { stream: 'client', since: 'old-format-epoch:3', position: 'e2:2', reason: 'bad_position' },
      { stream: 'channel', channel: 'news', since: 'old-format-epoch:9', position: 'n1:5', reason: 'bad_position' },
    ]);
    assert.deepEqual(client.lastPosition(), { client: 'e2:2', channels: { news: 'n1:5' } });
    // The next connection resumes from the server's own positions: no loop on the old one.
    ws.serverClose(1006);
    clock.advance(1000);
    ws = FakeWebSocket.last;
    assert.equal(param(ws, 'since'), 'e2:2');
    welcome(ws, { epoch: 'e2', seq: 2, recovered: true, missed: 0 });
    assert.deepEqual(ws.sentOfType('subscribe').map((m) => m.data), [{ channel: 'news', since: 'n1:5' }]);
    client.close();
  });

  test('a not-recovered 0:0 still dispatches what the server replays', () => {
    const { client } = setup();
    const got = [];
    client.on('notify', (m) => got.push(m.seq));
    client.connect();
    welcome(FakeWebSocket.last, { epoch: 'e1', seq: 5, recovered: false, missed: 2 });
    for (const seq of [4, 5, 6]) FakeWebSocket.last.serverSend({ type: 'notify', timestamp: 't', seq });
    assert.deepEqual(got, [4, 5, 6]);
    assert.equal(client.lastPosition().client, 'e1:6');
    client.close();
  });

  test('a welcome without epoch (history off): since is left out from then on', () => {
    const { client, clock } = setup();
    const failed = [];
    client.onEvent('recovery_failed', (e) => failed.push(e));
    client.connect();
    assert.equal(param(FakeWebSocket.last, 'since'), '0:0');
    FakeWebSocket.last.serverWelcome(); // no epoch
    assert.deepEqual(failed, [], 'the speculative 0:0 is not a failed recovery');
    FakeWebSocket.last.serverClose(1006);
    clock.advance(1000);
    assert.equal(new URL(FakeWebSocket.last.url).searchParams.has('since'), false);
    assert.equal(new URL(client.url).searchParams.has('since'), false);
    client.close();
  });

  test('resume: false never sends since', () => {
    const { client } = setup({ resume: false, position: { client: 'e:3', channels: { a: 'x:1' } }, channels: ['a'] });
    client.connect();
    assert.equal(new URL(FakeWebSocket.last.url).searchParams.has('since'), false);
    welcome(FakeWebSocket.last, { epoch: 'e', seq: 3 });
    assert.deepEqual(FakeWebSocket.last.sentOfType('subscribe'), [{ type: 'subscribe', data: { channel: 'a' } }]);
    client.close();
  });

  test('channels re-subscribe with their own since; resumed and recovery_failed per channel', () => {
    const { client, clock } = setup({ channels: ['news', 'sport'], position: { channels: { sport: 's0:7' } } });
    const events = [];
    client.onEvent('resumed', (e) => events.push(['resumed', e]));
    client.onEvent('recovery_failed', (e) => events.push(['failed', e]));
    client.connect();
    let ws = FakeWebSocket.last;
    welcome(ws, { epoch: 'e1', seq: 0, recovered: true, missed: 0 });
    events.length = 0;
    assert.deepEqual(ws.sentOfType('subscribe').map((m) => m.data), [
      { channel: 'news' }, // nothing known about news yet: live from now
      { channel: 'sport', since: 's0:7' },
    ]);
    ws.serverSend({ type: 'subscribed', timestamp: 't', data: { channel: 'news', epoch: 'n1', seq: 10 } });
    ws.serverSend({ type: 'subscribed', timestamp: 't', data: { channel: 'sport', epoch: 's0', seq: 8, recovered: true, missed: 1 } });
    ws.serverSend({ type: 'goal', channel: 'sport', timestamp: 't', seq: 8 });
    ws.serverSend({ type: 'post', channel: 'news', timestamp: 't', seq: 11 });
    ws.serverSend({ type: 'post', channel: 'news', timestamp: 't', seq: 12 });
    assert.deepEqual(events, [['resumed', { stream: 'channel', channel: 'sport', missed: 1, position: 's0:7' }]]);
    assert.deepEqual(client.lastPosition().channels, { news: 'n1:12', sport: 's0:8' });

    ws.serverClose(1006);
    clock.advance(1000);
    ws = FakeWebSocket.last;
    assert.equal(param(ws, 'since'), 'e1:0');
    welcome(ws, { epoch: 'e1', seq: 0, recovered: true, missed: 0 });
    assert.deepEqual(ws.sentOfType('subscribe').map((m) => m.data), [
      { channel: 'news', since: 'n1:12' },
      { channel: 'sport', since: 's0:8' },
    ]);
    events.length = 0;
    ws.serverSend({ type: 'subscribed', timestamp: 't', data: { channel: 'news', epoch: 'n2', seq: 3, recovered: false } });
    assert.deepEqual(events, [['failed', { stream: 'channel', channel: 'news', since: 'n1:12', position: 'n2:3' }]]);
    ws.serverSend({ type: 'post', channel: 'news', timestamp: 't', seq: 4 });
    assert.equal(client.lastPosition().channels.news, 'n2:4');

    assert.equal(client.unsubscribe('news'), true);
    assert.deepEqual(Object.keys(client.lastPosition().channels), ['sport'], 'unsubscribe forgets the position');
    assert.equal(client.subscribe('replay', { since: 'r:5' }), true);
    assert.deepEqual(ws.sent.at(-1), { type: 'subscribe', data: { channel: 'replay', since: 'r:5' } });
    client.close();
  });
});

// ================================================================== server subscriptions

describe('server subscriptions', () => {
  test('by:"server" joins are events, keep positions, and resume with since after a reconnect', () => {
    const { client, clock } = setup();
    const got = [];
    client.on('subscribed', (m) => got.push(['subscribed', m.data]));
    client.on('unsubscribed', (m) => got.push(['unsubscribed', m.data]));
    client.on('post', (m) => got.push(['post', m.seq]));
    client.connect();
    let ws = FakeWebSocket.last;
    welcome(ws, { epoch: 'e1', seq: 0 });
    // The API subscribed this client id: the server joins without the client asking.
    ws.serverSend({ type: 'subscribed', timestamp: 't', data: { channel: 'news', by: 'server', epoch: 'n1', seq: 4 } });
    ws.serverSend({ type: 'post', channel: 'news', timestamp: 't', seq: 5 });
    ws.serverSend({ type: 'post', channel: 'news', timestamp: 't', seq: 5 }); // a duplicate, dropped
    assert.deepEqual(client.lastPosition().channels, { news: 'n1:5' });
    assert.deepEqual(ws.sentOfType('subscribe'), [], 'nothing to ask: the server joined');
    assert.deepEqual(client.channels, [], 'server-joined channels are not re-sent by the client');

    // Reconnect: the server joins again at connect, without since; the client asks for what
    // it missed and holds the live messages back until the answer (the replay brings them).
    ws.serverClose(1006);
    clock.advance(1000);
    ws = FakeWebSocket.last;
    welcome(ws, { epoch: 'e1', seq: 0, recovered: true, missed: 0 });
    ws.serverSend({ type: 'subscribed', timestamp: 't', data: { channel: 'news', by: 'server', epoch: 'n1', seq: 7 } });
    assert.deepEqual(ws.sentOfType('subscribe').map((m) => m.data), [{ channel: 'news', since: 'n1:5' }]);
    ws.serverSend({ type: 'post', channel: 'news', timestamp: 't', seq: 8 }); // before the answer: held back
    ws.serverSend({ type: 'subscribed', timestamp: 't', data: { channel: 'news', epoch: 'n1', seq: 8, recovered: true, missed: 3 } });
    for (const seq of [6, 7, 8, 9]) ws.serverSend({ type: 'post', channel: 'news', timestamp: 't', seq });
    assert.deepEqual(got.filter(([k]) => k === 'post').map(([, s]) => s), [5, 6, 7, 8, 9], 'no gap, no duplicate');
    assert.equal(client.lastPosition().channels.news, 'n1:9');

    // The server takes it away: the event, and the position is forgotten.
    ws.serverSend({ type: 'unsubscribed', timestamp: 't', data: { channel: 'news', by: 'server' } });
    assert.deepEqual(got.at(-1), ['unsubscribed', { channel: 'news', by: 'server' }]);
    assert.deepEqual(client.lastPosition().channels, {});
    assert.equal(got.filter(([k]) => k === 'subscribed').length, 3);
    client.close();
  });
});

// ================================================================== maxRetries, minUptimeMs

describe('maxRetries and minUptimeMs', () => {
  test('maxRetries: after that many failed attempts in a row, closed and no more tries', () => {
    const { client, clock, statuses } = setup({ maxRetries: 2 });
    client.connect();
    FakeWebSocket.last.serverClose(1006);
    clock.advance(1000);
    FakeWebSocket.last.serverClose(1006);
    clock.advance(1300);
    assert.equal(FakeWebSocket.instances.length, 3);
    FakeWebSocket.last.serverClose(1006);
    assert.equal(client.status, 'closed');
    assert.equal(statuses.at(-1).gaveUp, true);
    assert.equal(statuses.at(-1).code, 1006);
    clock.advance(10 * 60 * 1000);
    assert.equal(FakeWebSocket.instances.length, 3);
    assert.equal(clock.pending, 0);
    client.connect(); // the application may start again
    assert.equal(FakeWebSocket.instances.length, 4);
    client.close();
  });

  test('maxRetries: 0 never reconnects', () => {
    const { client, clock } = setup({ maxRetries: 0 });
    client.connect();
    FakeWebSocket.last.serverWelcome();
    FakeWebSocket.last.serverClose(1012);
    clock.advance(60000);
    assert.equal(client.status, 'closed');
    assert.equal(FakeWebSocket.instances.length, 1);
  });

  test('a server that welcomes and drops at once keeps growing the backoff and hits maxRetries', () => {
    const { client, clock, statuses } = setup({ maxRetries: 3 });
    client.connect();
    const delays = [];
    for (let i = 0; i < 4; i++) {
      FakeWebSocket.last.serverWelcome();
      clock.advance(4999);
      FakeWebSocket.last.serverClose(1011);
      if (client.status === 'closed') break;
      delays.push(statuses.at(-1).delayMs);
      clock.advance(statuses.at(-1).delayMs);
    }
    assert.deepEqual(delays, [1000, 1300, 1690]);
    assert.equal(client.status, 'closed');
    assert.equal(statuses.at(-1).gaveUp, true);
  });

  test('a connection that stayed up minUptimeMs resets the counter', () => {
    const { client, clock, statuses } = setup({ maxRetries: 2, minUptimeMs: 1000 });
    client.connect();
    for (let round = 0; round < 5; round++) {
      FakeWebSocket.last.serverClose(1006); // a failed attempt
      clock.advance(statuses.at(-1).delayMs);
      FakeWebSocket.last.serverWelcome();
      clock.advance(1000);
      FakeWebSocket.last.serverClose(1006); // after a good connection: delay back to the minimum
      assert.equal(statuses.at(-1).delayMs, 1000, `round ${round}`);
      assert.equal(statuses.at(-1).attempt, 1);
      clock.advance(1000);
      FakeWebSocket.last.serverWelcome();
      clock.advance(1000);
    }
    assert.equal(client.status, 'open', 'never gave up: no two failures in a row');
    client.close();
  });
});

// ================================================================== shutdown hint (§6)

describe('shutdown hint', () => {
  const shutdown = (ws, data, extra = {}) => ws.serverSend({ type: 'shutdown', timestamp: 't', data, ...extra });

  test('with reconnectOnShutdown: false, a 1001 after shutdown waits out the hint (counted from the message)', () => {
    const { client, clock, statuses } = setup({ reconnectOnShutdown: false, random: () => 0 });
    client.connect();
    FakeWebSocket.last.serverWelcome();
    shutdown(FakeWebSocket.last, { mode: 'drain', reconnect_after_ms: 3000 });
    clock.advance(1000);
    FakeWebSocket.last.serverClose(1001, 'going away');
    assert.equal(statuses.at(-1).delayMs, 2000);
    clock.advance(1999);
    assert.equal(FakeWebSocket.instances.length, 1);
    clock.advance(1);
    assert.equal(FakeWebSocket.instances.length, 2);
    client.close();
  });

  test('1012 after a restart hint honours the hint instead of reconnecting at once', () => {
    const { client, clock, statuses } = setup({ reconnectOnShutdown: false, random: () => 0 });
    client.connect();
    FakeWebSocket.last.serverWelcome();
    shutdown(FakeWebSocket.last, { mode: 'restart', reconnect_after_ms: 4000 });
    FakeWebSocket.last.serverClose(1012);
    assert.equal(statuses.at(-1).delayMs, 4000);
    client.close();
  });

  test('the hint gets upward jitter only', () => {
    const { client, statuses } = setup({ random: () => 0.999 });
    client.connect();
    FakeWebSocket.last.serverWelcome();
    shutdown(FakeWebSocket.last, { mode: 'drain', reconnect_after_ms: 1000 });
    assert.ok(statuses.at(-1).delayMs >= 1000 && statuses.at(-1).delayMs <= 1200, String(statuses.at(-1).delayMs));
    client.close();
  });

  test('a huge hint is clamped to maxReconnectHintMs (default 60 s)', () => {
    const { client, clock, statuses } = setup({ random: () => 0 });
    client.connect();
    FakeWebSocket.last.serverWelcome();
    shutdown(FakeWebSocket.last, { mode: 'drain', reconnect_after_ms: 1e12 });
    assert.equal(statuses.at(-1).delayMs, 60000);
    clock.advance(60000);
    assert.equal(FakeWebSocket.instances.length, 2);
    client.close();
    const other = setup({ random: () => 0, maxReconnectHintMs: 5000 });
    other.client.connect();
    FakeWebSocket.last.serverWelcome();
    shutdown(FakeWebSocket.last, { mode: 'drain', reconnect_after_ms: Number.MAX_VALUE });
    assert.equal(other.statuses.at(-1).delayMs, 5000);
    other.client.close();
  });

  for (const bad of ['5000', -1, null, { x: 1 }, true]) {
    test(`a non-numeric or negative hint (${JSON.stringify(bad)}) falls back to the backoff`, () => {
      const { client, statuses } = setup();
      client.connect();
      FakeWebSocket.last.serverWelcome();
      shutdown(FakeWebSocket.last, { mode: 'drain', reconnect_after_ms: bad });
      assert.equal(statuses.at(-1).reason, 'server shutdown');
      assert.equal(statuses.at(-1).delayMs, 1000);
      client.close();
    });
  }

  test('a shutdown relayed on a channel is not a control message', () => {
    const { client, clock, statuses } = setup({ channels: ['room'] });
    const seen = [];
    client.on('shutdown', (m) => seen.push(m.channel));
    client.connect();
    const ws = FakeWebSocket.last;
    ws.serverWelcome();
    shutdown(ws, { mode: 'drain', reconnect_after_ms: 1e12 }, { channel: 'room' });
    assert.deepEqual(seen, ['room'], 'still an ordinary channel message for listeners');
    assert.equal(ws.closeCalls.length, 0);
    assert.equal(client.status, 'open');
    // Nor does it leave a hint behind for a later 1001.
    clock.advance(5000);
    ws.serverClose(1001);
    assert.equal(statuses.at(-1).delayMs, 1000);
    client.close();
  });
});
