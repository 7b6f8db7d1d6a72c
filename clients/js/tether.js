/**
 * tether.js — browser / Node client for the tether WebSocket push server.
 *
 * One dependency-free ES module. It speaks the wire contract of tether
 * (JSON envelopes `{"type", "timestamp", "data", ...}` over text frames),
 * keeps the connection alive with application heartbeats, notices a dead
 * connection by server silence, and reconnects with exponential backoff and
 * jitter, honouring tether's close codes.
 *
 * ```js
 * import { TetherClient } from './tether.js';
 * const client = new TetherClient('wss://push.example.com/ws', { clientId: 'user-42' });
 * client.on('notify', (msg) => console.log(msg.data));
 * client.onStatus((s) => console.log(s.status, s.code ?? ''));
 * ```
 *
 * In Node (>= 20, which has no built-in WebSocket) pass a constructor, e.g.
 * `import WebSocket from 'ws'; new TetherClient(url, { WebSocket })`.
 *
 * @module tether
 */

/** WebSocket readyState value of an open socket (same in browsers and `ws`). */
const OPEN = 1;

/** Close codes after which the client stops instead of reconnecting. */
const FINAL_CLOSE_CODES = new Set([1000, 4002]);

/** Close code of a service restart: reconnect at once, to any node. */
const SERVICE_RESTART = 1012;

/** Code the client itself uses when it drops a socket (browsers allow 1000 or 3000-4999). */
const CLIENT_CLOSE = 1000;

/**
 * Backoff settings, shared by {@link backoffDelay} and {@link TetherClient}.
 *
 * @typedef {object} BackoffOptions
 * @property {number} [minDelayMs=1000] delay before the first retry, before jitter
 * @property {number} [maxDelayMs=10000] cap on the delay, before jitter
 * @property {number} [factor=1.3] growth per failed attempt (>= 1)
 * @property {number} [jitter=0.2] fraction of the delay added or removed at random (0..1)
 */

/** @type {Required<BackoffOptions>} */
export const DEFAULT_BACKOFF = Object.freeze({
  minDelayMs: 1000,
  maxDelayMs: 10000,
  factor: 1.3,
  jitter: 0.2,
});

/**
 * Delay before reconnect attempt number `attempt` (0 = first retry after a drop).
 *
 * `base = min(maxDelayMs, minDelayMs * factor ** attempt)`, then a uniform jitter
 * of `± jitter * base` is applied, so the result lies in
 * `[base * (1 - jitter), base * (1 + jitter)]` (rounded to whole milliseconds and
 * never negative). The jitter is applied after the cap, so with jitter the delay
 * can exceed `maxDelayMs` by up to `jitter * maxDelayMs`; that keeps clients that
 * all hit the cap spread out.
 *
 * Pure: given the same `random` values it returns the same delays.
 *
 * @param {number} attempt number of failed attempts so far (negative or non-numeric counts as 0)
 * @param {BackoffOptions} [opts] backoff settings; missing fields take the defaults
 * @param {() => number} [random=Math.random] source of uniform numbers in [0, 1)
 * @returns {number} delay in milliseconds
 */
export function backoffDelay(attempt, opts = {}, random = Math.random) {
  const minDelayMs = opts.minDelayMs ?? DEFAULT_BACKOFF.minDelayMs;
  const maxDelayMs = opts.maxDelayMs ?? DEFAULT_BACKOFF.maxDelayMs;
  const factor = opts.factor ?? DEFAULT_BACKOFF.factor;
  const jitter = opts.jitter ?? DEFAULT_BACKOFF.jitter;
  const n = Number.isFinite(attempt) && attempt > 0 ? Math.floor(attempt) : 0;

  let base;
  if (minDelayMs <= 0) {
    base = 0;
  } else {
    const raw = minDelayMs * Math.pow(factor, n);
    base = Number.isFinite(raw) ? Math.min(maxDelayMs, raw) : maxDelayMs;
  }
  const r = random();
  const unit = Number.isFinite(r) ? Math.min(1, Math.max(0, r)) : 0.5;
  const delay = base * (1 + jitter * (2 * unit - 1));
  return Math.max(0, Math.round(delay));
}

/**
 * Timer functions the client uses. Inject your own to drive the client with a
 * fake clock in tests.
 *
 * @typedef {object} Scheduler
 * @property {(fn: () => void, ms: number) => any} setTimeout
 * @property {(handle: any) => void} clearTimeout
 * @property {() => number} now milliseconds, monotonic enough for measuring silence
 */

/**
 * Options of {@link TetherClient}.
 *
 * @typedef {object} TetherOptions
 * @property {string} [clientId] sent as the `client_id` query parameter
 * @property {string | (() => string | null | undefined)} [token] sent as the `token`
 *   query parameter; a function is called on every (re)connect, so it can hand out a fresh token
 * @property {string[]} [channels] channels to subscribe to after every (re)connect
 * @property {number} [minDelayMs=1000] first reconnect delay (before jitter)
 * @property {number} [maxDelayMs=10000] reconnect delay cap (before jitter)
 * @property {number} [factor=1.3] backoff growth per failed attempt
 * @property {number} [jitter=0.2] random fraction added to / removed from each delay
 * @property {number} [connectTimeoutMs=4000] give up on a connection without `welcome` after this long
 * @property {boolean} [heartbeat=true] send `heartbeat` on the interval the server advertises and
 *   treat server silence longer than its `heartbeat_timeout_ms` as a dead connection
 * @property {boolean} [autoConnect=true] connect right after construction (in a microtask, so
 *   listeners added synchronously after `new` see the first `connecting` status)
 * @property {boolean} [reconnectOnShutdown=true] on a `shutdown` message (server draining), close
 *   and reconnect after its `reconnect_after_ms` instead of waiting for the server to drop us
 * @property {new (url: string) => WebSocket} [WebSocket] WebSocket constructor; defaults to
 *   `globalThis.WebSocket` (required in Node 20, e.g. the `ws` package)
 * @property {Scheduler} [scheduler] timer functions (tests)
 * @property {() => number} [random] uniform source in [0, 1) for the jitter (tests)
 */

/**
 * A message envelope, as received from the server.
 *
 * @typedef {object} Envelope
 * @property {string} type
 * @property {string} [timestamp] RFC 3339 UTC time set by the server
 * @property {any} [data]
 * @property {string} [id] correlation id echoed from the client
 * @property {string} [channel] channel of a channel message
 * @property {number} [seq] per-client sequence number
 */

/**
 * A status report, given to {@link TetherClient#onStatus} listeners.
 *
 * @typedef {object} StatusEvent
 * @property {'connecting' | 'open' | 'reconnecting' | 'closed'} status
 * @property {string} previous the status before this one
 * @property {number} [code] close code that caused it (when a close caused it)
 * @property {string} [reason] close reason, or why the client dropped the connection
 *   (`connect timeout`, `heartbeat timeout`, `server shutdown`, `client closed`, ...)
 * @property {number} [delayMs] for `reconnecting`: the wait before the next attempt
 * @property {number} [attempt] for `reconnecting`: failed attempts since the last `welcome`
 * @property {string} [sessionId] for `open`: the session id from `welcome`
 */

const defaultScheduler = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle),
  now: () => Date.now(),
};

const noop = () => {};

function checkNumber(name, value, min, max = Infinity) {
  if (typeof value !== 'number' || Number.isNaN(value) || value < min || value > max) {
    throw new RangeError(`tether: option ${name} must be a number in [${min}, ${max}], got ${value}`);
  }
  return value;
}

/** Report a listener's exception without breaking the client. */
function reportListenerError(err) {
  if (typeof globalThis.reportError === 'function') {
    globalThis.reportError(err);
  } else if (typeof console !== 'undefined') {
    console.error('tether: listener threw', err);
  }
}

/**
 * A self-healing connection to a tether server.
 *
 * Lifecycle: `connecting` → (`welcome` received) `open` → on a drop `reconnecting`
 * (repeated for every scheduled attempt) → `open` again, until `close()` is called
 * or the server closes with 1000 or 4002, which end in `closed`.
 *
 * Close codes: 1000 (normal) and 4002 (closed by the admin API) stop the client.
 * 1012 (service restart) reconnects at once (the first attempt has no delay; later
 * ones back off). Every other code — 1001, 1006, 1008, 1009, 1011, 4001, 4003, … —
 * reconnects with exponential backoff and jitter. The backoff resets once a
 * `welcome` arrives.
 */
export class TetherClient {
  /**
   * @param {string} url WebSocket URL of the tether endpoint, e.g. `wss://host/ws`. In a
   *   browser a relative URL (`/ws`) or an http(s) URL is resolved against the page.
   * @param {TetherOptions} [options]
   */
  constructor(url, options = {}) {
    const o = options;
    this._WebSocket = o.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') {
      throw new TypeError('tether: no WebSocket implementation; pass options.WebSocket (e.g. the "ws" package) in Node');
    }
    this._backoff = {
      minDelayMs: checkNumber('minDelayMs', o.minDelayMs ?? DEFAULT_BACKOFF.minDelayMs, 0),
      maxDelayMs: checkNumber('maxDelayMs', o.maxDelayMs ?? DEFAULT_BACKOFF.maxDelayMs, 0),
      factor: checkNumber('factor', o.factor ?? DEFAULT_BACKOFF.factor, 1),
      jitter: checkNumber('jitter', o.jitter ?? DEFAULT_BACKOFF.jitter, 0, 1),
    };
    this._connectTimeoutMs = checkNumber('connectTimeoutMs', o.connectTimeoutMs ?? 4000, 0);
    this._heartbeat = o.heartbeat !== false;
    this._reconnectOnShutdown = o.reconnectOnShutdown !== false;
    this._scheduler = o.scheduler ?? defaultScheduler;
    this._random = o.random ?? Math.random;
    this._token = o.token;

    /** @type {string | undefined} */
    this.clientId = o.clientId;
    this._baseUrl = TetherClient._resolveUrl(url);

    /** @type {Set<string>} channels re-subscribed on every (re)connect */
    this._channels = new Set(o.channels ?? []);
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** @type {Set<Function>} */
    this._statusListeners = new Set();

    this._status = 'closed';
    this._ws = null;
    this._welcomed = false;
    this._stopped = true;
    this._attempt = 0;
    this._immediateUsed = false;
    this._sessionId = null;
    this._lastSeen = 0;
    this._unansweredSince = null;
    this._hbIntervalMs = 0;
    this._hbTimeoutMs = 0;
    this._timers = { connect: null, heartbeat: null, silence: null, reconnect: null };

    if (o.autoConnect !== false) {
      this._autoConnectPending = true;
      queueMicrotask(() => {
        if (this._autoConnectPending) {
          this._autoConnectPending = false;
          this.connect();
        }
      });
    }
  }

  /** Current status: `connecting`, `open`, `reconnecting` or `closed`. */
  get status() {
    return this._status;
  }

  /** Session id from the last `welcome`, or null before the first one. */
  get sessionId() {
    return this._sessionId;
  }

  /** The channels the client keeps subscribed to (a copy). */
  get channels() {
    return [...this._channels];
  }

  /** The URL that the next connection attempt will use (with `client_id` and `token`). */
  get url() {
    return this._buildUrl();
  }

  /**
   * Start connecting. Only needed with `autoConnect: false`, or to start again after
   * `close()` or after the server ended the session (1000 / 4002). A no-op while the
   * client is already connected or reconnecting.
   * @returns {this}
   */
  connect() {
    this._autoConnectPending = false;
    if (!this._stopped) return this;
    this._stopped = false;
    this._attempt = 0;
    this._immediateUsed = false;
    this._setStatus('connecting', {});
    this._openSocket();
    return this;
  }

  /**
   * Close the connection for good: no reconnect, every timer cleared.
   * @param {number} [code=1000] close code sent to the server (1000 or 3000-4999)
   * @param {string} [reason='client closed']
   */
  close(code = CLIENT_CLOSE, reason = 'client closed') {
    this._autoConnectPending = false;
    this._stopped = true;
    this._clearTimer('reconnect');
    this._dropSocket(code, reason);
    this._setStatus('closed', { code, reason });
  }

  /**
   * Send an envelope `{type, data, ...extra}`.
   * @param {string} type message type
   * @param {any} [data] payload (omitted from the frame when undefined)
   * @param {{id?: string, channel?: string}} [extra] further envelope fields, e.g. a correlation `id`
   * @returns {boolean} true when the frame was handed to an open socket, false when not connected
   *   (the message is then dropped, not queued)
   */
  send(type, data, extra) {
    if (typeof type !== 'string' || type === '') throw new TypeError('tether: type must be a non-empty string');
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    const env = { ...extra, type };
    if (data !== undefined) env.data = data;
    ws.send(JSON.stringify(env));
    return true;
  }

  /**
   * Publish to a channel through the server (needs `client_publish` on the server;
   * otherwise the server answers with an `error` envelope, code `forbidden`).
   * @param {string} channel
   * @param {string} type type of the message the subscribers receive
   * @param {any} [data]
   * @returns {boolean} as {@link TetherClient#send}
   */
  publish(channel, type, data) {
    return this.send('publish', { channel, type, data });
  }

  /**
   * Subscribe to a channel now (when open) and after every reconnect.
   * @param {string} channel
   * @returns {boolean} true when the `subscribe` frame went out now; false when it will go
   *   out on the next `welcome`
   */
  subscribe(channel) {
    if (typeof channel !== 'string' || channel === '') throw new TypeError('tether: channel must be a non-empty string');
    this._channels.add(channel);
    return this._welcomed ? this.send('subscribe', { channel }) : false;
  }

  /**
   * Unsubscribe from a channel and forget it for later reconnects.
   * @param {string} channel
   * @returns {boolean} true when the `unsubscribe` frame went out now
   */
  unsubscribe(channel) {
    const had = this._channels.delete(channel);
    return had && this._welcomed ? this.send('unsubscribe', { channel }) : false;
  }

  /**
   * Listen to incoming envelopes of one `type` (`'*'` for every envelope). The
   * listener gets the whole envelope. Server errors arrive as type `error`.
   * @param {string} type
   * @param {(msg: Envelope) => void} fn
   * @returns {() => void} a function that removes the listener
   */
  on(type, fn) {
    if (typeof fn !== 'function') throw new TypeError('tether: listener must be a function');
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /**
   * Remove a listener added with {@link TetherClient#on}.
   * @param {string} type
   * @param {(msg: Envelope) => void} fn
   */
  off(type, fn) {
    const set = this._listeners.get(type);
    if (set && set.delete(fn) && set.size === 0) this._listeners.delete(type);
  }

  /**
   * Listen to status changes. Called on every transition and again for every new
   * reconnect attempt scheduled while `reconnecting` (with its delay).
   * Status is kept apart from `on(type)` because the server may push messages of any
   * type, including one called `status`.
   * @param {(ev: StatusEvent) => void} fn
   * @returns {() => void} a function that removes the listener
   */
  onStatus(fn) {
    if (typeof fn !== 'function') throw new TypeError('tether: listener must be a function');
    this._statusListeners.add(fn);
    return () => this._statusListeners.delete(fn);
  }

  /**
   * Remove a status listener.
   * @param {(ev: StatusEvent) => void} fn
   */
  offStatus(fn) {
    this._statusListeners.delete(fn);
  }

  // ---------------------------------------------------------------- internals

  static _resolveUrl(url) {
    const base = globalThis.location && globalThis.location.href;
    const u = base ? new URL(url, base) : new URL(url);
    if (u.protocol === 'http:') u.protocol = 'ws:';
    else if (u.protocol === 'https:') u.protocol = 'wss:';
    if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
      throw new TypeError(`tether: unsupported URL scheme ${u.protocol}`);
    }
    u.hash = '';
    return u.toString();
  }

  _buildUrl() {
    const u = new URL(this._baseUrl);
    if (this.clientId != null && this.clientId !== '') u.searchParams.set('client_id', String(this.clientId));
    const token = typeof this._token === 'function' ? this._token() : this._token;
    if (token != null && token !== '') u.searchParams.set('token', String(token));
    return u.toString();
  }

  _setStatus(status, info) {
    const previous = this._status;
    if (status === previous && status !== 'reconnecting') return;
    this._status = status;
    const ev = { status, previous, ...info };
    for (const fn of [...this._statusListeners]) {
      try {
        fn(ev);
      } catch (err) {
        reportListenerError(err);
      }
    }
  }

  _dispatch(msg) {
    const targets = [...(this._listeners.get(msg.type) ?? []), ...(this._listeners.get('*') ?? [])];
    for (const fn of targets) {
      try {
        fn(msg);
      } catch (err) {
        reportListenerError(err);
      }
    }
  }

  _setTimer(name, fn, ms) {
    this._clearTimer(name);
    this._timers[name] = this._scheduler.setTimeout(() => {
      this._timers[name] = null;
      fn();
    }, ms);
  }

  _clearTimer(name) {
    if (this._timers[name] != null) {
      this._scheduler.clearTimeout(this._timers[name]);
      this._timers[name] = null;
    }
  }

  /** Clear the timers that belong to one connection (not the reconnect timer). */
  _clearConnectionTimers() {
    this._clearTimer('connect');
    this._clearTimer('heartbeat');
    this._clearTimer('silence');
  }

  _openSocket() {
    this._clearConnectionTimers();
    this._welcomed = false;
    let ws;
    try {
      ws = new this._WebSocket(this._buildUrl());
    } catch (err) {
      this._ws = null;
      this._scheduleReconnect({ reason: `connect failed: ${err && err.message ? err.message : err}` });
      return;
    }
    this._ws = ws;
    ws.onopen = noop;
    // Browsers fire `close` (1006) right after `error`, but some implementations (Node 20's
    // experimental WebSocket on a refused connection) fire only `error`. Either way the
    // socket is finished: drop it (its late `close`, if any, is ignored) and back off.
    // A server's deliberate close (1000, 4002, ...) never comes with an `error`.
    ws.onerror = () => {
      if (this._ws === ws) this._abandon('connection error', undefined, 1006);
    };
    ws.onmessage = (ev) => {
      if (this._ws === ws) this._onMessage(ev.data);
    };
    ws.onclose = (ev) => {
      if (this._ws === ws) this._onClose(ev.code, ev.reason);
    };
    if (this._connectTimeoutMs > 0) {
      this._setTimer('connect', () => this._abandon('connect timeout'), this._connectTimeoutMs);
    }
  }

  /**
   * Forget the current socket: detach its handlers (with no-ops, so a late `error`
   * event cannot go unhandled), close it, clear its timers.
   */
  _dropSocket(code, reason) {
    this._clearConnectionTimers();
    this._welcomed = false;
    const ws = this._ws;
    this._ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = noop;
    try {
      ws.close(code, reason);
    } catch {
      // Browsers reject codes other than 1000 / 3000-4999 and reasons over 123 bytes:
      // close without them rather than leave the socket open.
      try {
        ws.close();
      } catch {
        // already closed or failed: nothing to do
      }
    }
  }

  /** Give up on the current connection ourselves and reconnect. */
  _abandon(reason, delayMs, code) {
    this._dropSocket(CLIENT_CLOSE, reason);
    this._scheduleReconnect(code === undefined ? { reason } : { code, reason }, delayMs);
  }

  _scheduleReconnect(info, delayOverride) {
    if (this._stopped) return;
    let delayMs;
    if (delayOverride != null) {
      delayMs = delayOverride;
    } else if (info.code === SERVICE_RESTART && !this._immediateUsed) {
      // Service restart: go at once to another node; only the first attempt skips the backoff.
      this._immediateUsed = true;
      delayMs = 0;
    } else {
      delayMs = backoffDelay(this._attempt, this._backoff, this._random);
      this._attempt += 1;
    }
    this._setStatus('reconnecting', { ...info, delayMs, attempt: this._attempt });
    if (this._stopped) return; // a status listener called close()
    this._setTimer('reconnect', () => {
      if (!this._stopped) this._openSocket();
    }, delayMs);
  }

  _onClose(code, reason) {
    this._ws = null;
    this._clearConnectionTimers();
    this._welcomed = false;
    if (this._stopped) return;
    if (FINAL_CLOSE_CODES.has(code)) {
      this._stopped = true;
      this._clearTimer('reconnect');
      this._setStatus('closed', { code, reason });
      return;
    }
    this._scheduleReconnect({ code, reason });
  }

  _onMessage(raw) {
    // Any frame from the server proves the connection is alive.
    this._lastSeen = this._scheduler.now();
    this._unansweredSince = null;
    if (typeof raw !== 'string') return; // binary frames: liveness only
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return;
    }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;

    if (msg.type === 'welcome' && !this._welcomed) this._onWelcome(msg);
    this._dispatch(msg);
    if (msg.type === 'shutdown' && this._reconnectOnShutdown && this._ws && !this._stopped) {
      this._onShutdown(msg);
    }
  }

  _onWelcome(msg) {
    const data = msg.data && typeof msg.data === 'object' ? msg.data : {};
    this._clearTimer('connect');
    this._welcomed = true;
    this._attempt = 0;
    this._immediateUsed = false;
    this._sessionId = data.session_id ?? null;
    this._hbIntervalMs = Number(data.heartbeat_interval_ms) > 0 ? Number(data.heartbeat_interval_ms) : 0;
    this._hbTimeoutMs = Number(data.heartbeat_timeout_ms) > 0 ? Number(data.heartbeat_timeout_ms) : 0;
    this._setStatus('open', { sessionId: this._sessionId });
    // A status listener may have closed the client.
    if (!this._welcomed) return;
    for (const channel of this._channels) this.send('subscribe', { channel });
    if (this._heartbeat) {
      if (this._hbIntervalMs > 0) this._armHeartbeat();
      if (this._hbTimeoutMs > 0) this._armSilence(this._hbTimeoutMs);
    }
  }

  _sendHeartbeat() {
    if (this.send('heartbeat') && this._unansweredSince == null) {
      this._unansweredSince = this._scheduler.now();
    }
  }

  _armHeartbeat() {
    this._setTimer('heartbeat', () => {
      this._sendHeartbeat();
      this._armHeartbeat();
    }, this._hbIntervalMs);
  }

  _armSilence(ms) {
    this._setTimer('silence', () => this._checkSilence(), Math.max(0, ms));
  }

  /**
   * The connection is dead when the server has been silent for `heartbeat_timeout_ms`
   * and a heartbeat we sent has gone unanswered for a while. The second condition
   * matters in background browser tabs, whose timers can fire a minute late: a late
   * check then sends a probe heartbeat and judges only after the probe had time to be
   * answered, instead of dropping a healthy connection.
   */
  _checkSilence() {
    const now = this._scheduler.now();
    const timeout = this._hbTimeoutMs;
    const silence = now - this._lastSeen;
    if (silence < timeout) {
      this._armSilence(timeout - silence);
      return;
    }
    const grace = Math.max(1, Math.min(this._hbIntervalMs || timeout, timeout) / 2);
    if (this._unansweredSince != null && now - this._unansweredSince >= grace) {
      this._abandon('heartbeat timeout');
      return;
    }
    if (this._unansweredSince == null) this._sendHeartbeat();
    this._armSilence(this._unansweredSince == null ? grace : this._unansweredSince + grace - now);
  }

  _onShutdown(msg) {
    const after = msg.data && Number(msg.data.reconnect_after_ms);
    // Spread the herd upwards only: never come back earlier than the server asked.
    const delayMs = Number.isFinite(after) && after >= 0
      ? Math.round(after * (1 + this._backoff.jitter * this._random()))
      : undefined;
    this._abandon('server shutdown', delayMs);
  }
}

export default TetherClient;
