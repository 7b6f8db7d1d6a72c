/**
 * tether.js — browser / Node client for the tether WebSocket push server.
 *
 * One dependency-free ES module. It speaks the wire contract of tether
 * (JSON envelopes `{"type", "timestamp", "data", ...}` over text frames),
 * keeps the connection alive with application heartbeats, notices a dead
 * connection by server silence, reconnects with exponential backoff and
 * jitter honouring tether's close codes, keeps a token fresh (`getToken`,
 * `refresh`), and resumes the client's and each channel's stream after a
 * reconnect (`since=<epoch>:<seq>`) without gaps or duplicates.
 *
 * ```js
 * import { TetherClient } from './tether.js';
 * const client = new TetherClient('wss://push.example.com/ws', {
 *   getToken: async () => (await fetch('/push-token')).text(),
 *   position: JSON.parse(localStorage.getItem('tether-pos') ?? 'null') ?? undefined,
 * });
 * client.on('notify', (msg) => {
 *   console.log(msg.data);
 *   localStorage.setItem('tether-pos', JSON.stringify(client.lastPosition()));
 * });
 * client.onEvent('recovery_failed', () => reloadStateFromTheApp());
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

/** Server going away (drain finished). */
const GOING_AWAY = 1001;

/** Close code of a service restart: reconnect at once, to any node. */
const SERVICE_RESTART = 1012;

/** Token expired and not refreshed: a new token fixes it, so waiting would only lose time. */
const TOKEN_EXPIRED = 4004;

/** Close codes whose first reconnect attempt skips the backoff. */
const IMMEDIATE_CLOSE_CODES = new Set([SERVICE_RESTART, TOKEN_EXPIRED]);

/** Code the client itself uses when it drops a socket (browsers allow 1000 or 3000-4999). */
const CLIENT_CLOSE = 1000;

/**
 * The `exp` claim (seconds since the epoch) of a JWT, read without verifying the
 * signature — the server verifies; the client only needs to know when to refresh.
 *
 * @param {string | null | undefined} token a compact JWT (`header.payload.signature`)
 * @returns {number | null} `exp`, or null when the token is not a JWT or has no numeric `exp`
 */
export function jwtExpiry(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length < 2 || parts[1] === '') return null;
  try {
    let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4 !== 0) b64 += '=';
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const payload = JSON.parse(new TextDecoder().decode(bytes));
    const exp = payload && typeof payload === 'object' ? payload.exp : undefined;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp : null;
  } catch {
    return null;
  }
}

/**
 * Parse a stream position `"<epoch>:<seq>"`. The epoch is opaque and may itself
 * contain `:`, so the split is at the last one.
 *
 * @param {any} text
 * @returns {{epoch: string, seq: number} | null}
 */
export function parsePosition(text) {
  if (typeof text !== 'string') return null;
  const at = text.lastIndexOf(':');
  if (at < 0) return null;
  const seq = Number(text.slice(at + 1));
  if (!Number.isSafeInteger(seq) || seq < 0 || text.slice(at + 1) === '') return null;
  return { epoch: text.slice(0, at), seq };
}

function formatPosition(pos) {
  return `${pos.epoch}:${pos.seq}`;
}

/** Where a stream stands before the `missed` messages a not-recovered answer still replays. */
function replayFrom(head, data) {
  const missed = toSeq(data.missed) ?? 0;
  return missed <= head ? head - missed : 0;
}

/** A `recovery_failed` event, with the server's `reason` when it gave one. */
function failure(ev, data) {
  return typeof data.reason === 'string' ? { ...ev, reason: data.reason } : ev;
}

function toSeq(value) {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : null;
}

function toEpoch(value) {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return null;
}

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
 * @property {() => number} now wall-clock milliseconds since the Unix epoch (compared with a
 *   token's `exp`; also used to measure silence and uptime)
 */

/**
 * A saved stream position, as returned by {@link TetherClient#lastPosition} and
 * accepted by the `position` option.
 *
 * @typedef {object} Position
 * @property {string | null} [client] `"<epoch>:<seq>"` of the client's own stream
 * @property {Record<string, string>} [channels] `"<epoch>:<seq>"` per channel
 */

/**
 * Options of {@link TetherClient}.
 *
 * @typedef {object} TetherOptions
 * @property {string} [clientId] sent as the `client_id` query parameter
 * @property {() => (string | null | undefined | Promise<string | null | undefined>)} [getToken]
 *   called before every (re)connect and before the token expires; its token goes in the `token`
 *   query parameter and in `refresh` messages. A throw or rejection is reported (`token_error`
 *   event, `reconnecting` status) and retried with backoff
 * @property {string | (() => string | null | undefined)} [token] a static token, or a function
 *   used like `getToken` (kept for compatibility; `getToken` wins when both are given)
 * @property {number} [refreshMarginMs=30000] refresh this long before the token's `exp`
 * @property {boolean} [resume=true] ask the server for what was missed (`since`) on every
 *   (re)connect and re-subscribe
 * @property {Position} [position] where to resume from (e.g. a saved {@link TetherClient#lastPosition})
 * @property {string[]} [channels] channels to subscribe to after every (re)connect
 * @property {number} [minDelayMs=1000] first reconnect delay (before jitter)
 * @property {number} [maxDelayMs=10000] reconnect delay cap (before jitter)
 * @property {number} [factor=1.3] backoff growth per failed attempt
 * @property {number} [jitter=0.2] random fraction added to / removed from each delay
 * @property {number} [maxRetries=Infinity] consecutive failed attempts after which the client
 *   gives up (status `closed`, `gaveUp: true`)
 * @property {number} [minUptimeMs=5000] a connection must stay open this long before the attempt
 *   counter (backoff, `maxRetries`, the immediate 1012 / 4004 retry) starts again from zero
 * @property {number} [connectTimeoutMs=4000] give up on an attempt (token + upgrade) without
 *   `welcome` after this long
 * @property {boolean} [heartbeat=true] send `heartbeat` on the interval the server advertises and
 *   treat server silence longer than its `heartbeat_timeout_ms` as a dead connection
 * @property {boolean} [autoConnect=true] connect right after construction (in a microtask, so
 *   listeners added synchronously after `new` see the first `connecting` status)
 * @property {boolean} [reconnectOnShutdown=true] on a `shutdown` message (server draining), close
 *   and reconnect after its `reconnect_after_ms` instead of waiting for the server to drop us
 * @property {number} [maxReconnectHintMs=60000] cap on a `shutdown`'s `reconnect_after_ms`
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
 * @property {number} [seq] position in the client's or the channel's stream (history on)
 */

/**
 * A status report, given to {@link TetherClient#onStatus} listeners.
 *
 * @typedef {object} StatusEvent
 * @property {'connecting' | 'open' | 'reconnecting' | 'closed'} status
 * @property {string} previous the status before this one
 * @property {number} [code] close code that caused it (when a close caused it)
 * @property {string} [reason] close reason, or why the client dropped the connection
 *   (`connect timeout`, `heartbeat timeout`, `server shutdown`, `client closed`,
 *   `token error: ...`, ...)
 * @property {number} [delayMs] for `reconnecting`: the wait before the next attempt
 * @property {number} [attempt] for `reconnecting`: consecutive failed attempts
 * @property {boolean} [gaveUp] for `closed`: `maxRetries` was reached
 * @property {string} [sessionId] for `open`: the session id from `welcome`
 */

/**
 * Client events, given to {@link TetherClient#onEvent} listeners. They are kept apart
 * from `on(type)` because the server may push messages of any type.
 *
 * - `resumed` `{stream: 'client'|'channel', channel?, missed, position}` — the server
 *   confirmed the resume; `missed` messages follow.
 * - `recovery_failed` `{stream, channel?, since, position, reason?}` — what was missed since
 *   `since` cannot be replayed (epoch changed, trimmed, history gone): reload state from the
 *   application. The saved position is dropped for `position`, the stream's head, so it is
 *   never sent again. `reason: 'bad_position'`: the server could not read `since` at all (a
 *   position from another server or an old format). Whatever the server still stores follows
 *   and is dispatched.
 * - `duplicate` `{stream, channel?, seq}` — a message at or before the last seen `seq` was dropped.
 * - `restarted` `{stream, channel?, previous}` — the stream began again at `seq` 1 (its history
 *   expired or was evicted while connected); the message is dispatched, and a later resume from
 *   this position reports `recovery_failed`.
 * - `token_refreshed` `{expiresAt}` — the server accepted a `refresh`.
 * - `token_rejected` `{code, message}` — the server refused a `refresh` (`invalid_token`); the
 *   connection stays, the old token's expiry still applies.
 * - `token_error` `{phase: 'connect'|'refresh', error}` — `getToken` threw or rejected.
 *
 * @typedef {'resumed' | 'recovery_failed' | 'duplicate' | 'restarted' | 'token_refreshed' | 'token_rejected' | 'token_error'} EventName
 */

const defaultScheduler = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle),
  now: () => Date.now(),
};

const noop = () => {};

/** Longest delay setTimeout honours (browsers and Node). */
const MAX_TIMER_MS = 2 ** 31 - 1;

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

function errorText(err) {
  return err && err.message ? err.message : String(err);
}

function isThenable(value) {
  return value != null && typeof value.then === 'function';
}

/**
 * A self-healing connection to a tether server.
 *
 * Lifecycle: `connecting` → (`welcome` received) `open` → on a drop `reconnecting`
 * (repeated for every scheduled attempt) → `open` again, until `close()` is called,
 * `maxRetries` consecutive attempts failed, or the server closes with 1000 or 4002,
 * which end in `closed`.
 *
 * Close codes: 1000 (normal) and 4002 (closed by the admin API) stop the client.
 * 1012 (service restart) and 4004 (token expired) reconnect at once (the first attempt
 * has no delay; later ones back off). 1001 / 1012 after a `shutdown` message wait for
 * its `reconnect_after_ms` instead. Every other code — 1006, 1008, 1009, 1011, 4001,
 * 4003, … — reconnects with exponential backoff and jitter. The backoff resets once a
 * connection has stayed open `minUptimeMs`.
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
    this._maxRetries = checkNumber('maxRetries', o.maxRetries ?? Infinity, 0);
    this._minUptimeMs = checkNumber('minUptimeMs', o.minUptimeMs ?? 5000, 0);
    this._refreshMarginMs = checkNumber('refreshMarginMs', o.refreshMarginMs ?? 30000, 0);
    this._maxHintMs = checkNumber('maxReconnectHintMs', o.maxReconnectHintMs ?? 60000, 0);
    this._heartbeat = o.heartbeat !== false;
    this._reconnectOnShutdown = o.reconnectOnShutdown !== false;
    this._resume = o.resume !== false;
    this._scheduler = o.scheduler ?? defaultScheduler;
    this._random = o.random ?? Math.random;
    this._token = o.token;
    if (o.getToken != null && typeof o.getToken !== 'function') throw new TypeError('tether: getToken must be a function');
    /** @type {Function | null} where fresh tokens come from, if anywhere */
    this._tokenFn = o.getToken ?? (typeof o.token === 'function' ? o.token : null);

    /** @type {string | undefined} */
    this.clientId = o.clientId;
    this._baseUrl = TetherClient._resolveUrl(url);

    /** @type {Set<string>} channels re-subscribed on every (re)connect */
    this._channels = new Set(o.channels ?? []);
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** @type {Set<Function>} */
    this._statusListeners = new Set();
    /** @type {Map<string, Set<Function>>} */
    this._eventListeners = new Map();

    // Stream positions. The client stream's is null until a welcome (or the `position`
    // option) gives it an epoch; a channel's epoch may stay null when its `subscribed`
    // carries none, and then only duplicate dropping uses it.
    /** @type {{epoch: string, seq: number} | null} */
    this._clientPos = parsePosition(o.position?.client);
    /** @type {Map<string, {epoch: string | null, seq: number}>} */
    this._chanPos = new Map();
    for (const [ch, text] of Object.entries(o.position?.channels ?? {})) {
      const pos = parsePosition(text);
      if (pos) this._chanPos.set(ch, pos);
    }
    this._historyOff = false;
    /** `since` sent by the current connection, and per channel by its `subscribe` frames */
    this._sentSince = null;
    /** @type {Map<string, {epoch: string, seq: number}>} */
    this._chanSince = new Map();
    /** Channels the server joined on this connection (`subscribed` with `by: "server"`) */
    this._serverChannels = new Set();
    /** Server-joined channels whose missed messages this client asked for: until the answer,
     * their live messages are held back (the replay brings them again, in order) */
    this._serverResume = new Set();

    this._status = 'closed';
    this._ws = null;
    this._gen = 0;
    this._welcomed = false;
    this._stopped = true;
    this._attempt = 0;
    this._retries = 0;
    this._immediateUsed = false;
    this._openedAt = null;
    this._sessionId = null;
    this._lastSeen = 0;
    this._unansweredSince = null;
    this._hbIntervalMs = 0;
    this._hbTimeoutMs = 0;
    /** `presence` asks waiting for their answer, by correlation id. */
    this._asks = new Map();
    this._askId = 0;
    this._currentToken = typeof o.token === 'string' ? o.token : null;
    this._connToken = null;
    this._connExpiresAtMs = null;
    this._pendingToken = null;
    this._refreshAttempt = 0;
    this._shutdownAt = null;
    this._timers = { connect: null, heartbeat: null, silence: null, reconnect: null, refresh: null };

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

  /**
   * The URL that the next connection attempt will use (with `client_id`, `token` and
   * `since`). With `getToken` it shows the last token obtained; the next attempt asks again.
   */
  get url() {
    const token = this._tokenFn && this._tokenFn !== this._token
      ? this._currentToken
      : typeof this._token === 'function' ? this._token() : this._token;
    return this._buildUrl(token, this._sinceParam());
  }

  /**
   * Where the client's stream and each channel's stream stand, for the application to
   * persist and hand back as the `position` option (e.g. after a page reload).
   * @returns {{client: string | null, channels: Record<string, string>}}
   */
  lastPosition() {
    const channels = {};
    for (const [ch, pos] of this._chanPos) {
      if (pos.epoch != null) channels[ch] = formatPosition(pos);
    }
    return { client: this._clientPos ? formatPosition(this._clientPos) : null, channels };
  }

  /**
   * Start connecting. Only needed with `autoConnect: false`, or to start again after
   * `close()`, after the server ended the session (1000 / 4002) or after `maxRetries`.
   * A no-op while the client is already connected or reconnecting.
   * @returns {this}
   */
  connect() {
    this._autoConnectPending = false;
    if (!this._stopped) return this;
    this._stopped = false;
    this._resetAttempts();
    this._shutdownAt = null;
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
   * Subscribe to a channel now (when open) and after every reconnect. After a reconnect
   * the `subscribe` carries `since` = the last position seen on that channel.
   * @param {string} channel
   * @param {{since?: string}} [opts] `since`: resume this channel from a saved `"<epoch>:<seq>"`
   * @returns {boolean} true when the `subscribe` frame went out now; false when it will go
   *   out on the next `welcome`
   */
  subscribe(channel, opts) {
    if (typeof channel !== 'string' || channel === '') throw new TypeError('tether: channel must be a non-empty string');
    const since = parsePosition(opts?.since);
    if (since) this._chanPos.set(channel, since);
    this._channels.add(channel);
    return this._welcomed ? this._sendSubscribe(channel) : false;
  }

  /**
   * Unsubscribe from a channel and forget it (and its position) for later reconnects.
   * @param {string} channel
   * @returns {boolean} true when the `unsubscribe` frame went out now
   */
  unsubscribe(channel) {
    const own = this._channels.delete(channel);
    const joined = this._serverChannels.delete(channel);
    const had = own || joined;
    this._serverResume.delete(channel);
    this._chanPos.delete(channel);
    this._chanSince.delete(channel);
    return had && this._welcomed ? this.send('unsubscribe', { channel }) : false;
  }

  /**
   * Who is on a presence channel (server `presence_channels`) this client is subscribed to:
   * the server answers with the channel's clients on every node. Presence channels also
   * deliver `join` and `leave` envelopes (`data`: `{channel, client_id}`): `on('join', fn)`.
   * @param {string} channel
   * @param {{timeoutMs?: number}} [opts] how long to wait for the answer (default 10000)
   * @returns {Promise<Array<{client_id: string, sessions: number}>>} rejects with the server's
   *   error (`err.code`, e.g. `forbidden`), on timeout, or when not connected
   */
  presence(channel, opts) {
    const id = `presence-${++this._askId}`;
    if (!this.send('presence', { channel }, { id })) {
      return Promise.reject(new Error('tether: not connected'));
    }
    return new Promise((resolve, reject) => {
      const timer = this._scheduler.setTimeout(() => {
        this._asks.delete(id);
        reject(new Error('tether: no presence answer in time'));
      }, opts?.timeoutMs ?? 10000);
      this._asks.set(id, { resolve, reject, timer });
    });
  }

  /** Settles a `presence` ask answered by `msg`; true when it was one. */
  _answerAsk(msg) {
    const ask = this._asks.get(msg.id);
    if (!ask) return false;
    this._asks.delete(msg.id);
    this._scheduler.clearTimeout(ask.timer);
    if (msg.type === 'presence') {
      ask.resolve(Array.isArray(msg.data?.clients) ? msg.data.clients : []);
    } else {
      const err = new Error(msg.data?.message ?? 'tether: presence refused');
      err.code = msg.data?.code;
      ask.reject(err);
    }
    return true;
  }

  /**
   * Listen to incoming envelopes of one `type` (`'*'` for every envelope). The
   * listener gets the whole envelope. Server errors arrive as type `error`.
   * @param {string} type
   * @param {(msg: Envelope) => void} fn
   * @returns {() => void} a function that removes the listener
   */
  on(type, fn) {
    return this._addListener(this._listeners, type, fn);
  }

  /**
   * Remove a listener added with {@link TetherClient#on}.
   * @param {string} type
   * @param {(msg: Envelope) => void} fn
   */
  off(type, fn) {
    this._removeListener(this._listeners, type, fn);
  }

  /**
   * Listen to a client event (see {@link EventName}): `resumed`, `recovery_failed`,
   * `duplicate`, `token_refreshed`, `token_rejected`, `token_error`.
   * @param {EventName} name
   * @param {(ev: object) => void} fn
   * @returns {() => void} a function that removes the listener
   */
  onEvent(name, fn) {
    return this._addListener(this._eventListeners, name, fn);
  }

  /**
   * Remove a listener added with {@link TetherClient#onEvent}.
   * @param {EventName} name
   * @param {(ev: object) => void} fn
   */
  offEvent(name, fn) {
    this._removeListener(this._eventListeners, name, fn);
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

  _buildUrl(token, since) {
    const u = new URL(this._baseUrl);
    if (this.clientId != null && this.clientId !== '') u.searchParams.set('client_id', String(this.clientId));
    if (token != null && token !== '') u.searchParams.set('token', String(token));
    if (since != null) u.searchParams.set('since', since);
    return u.toString();
  }

  /**
   * A first connection asks for `0:0` (everything still stored, §8) because it cannot
   * know yet whether the server keeps history; once a `welcome` without `epoch` said
   * it does not, the parameter is left out.
   */
  _sinceParam() {
    if (!this._resume || this._historyOff) return null;
    return this._clientPos ? formatPosition(this._clientPos) : '0:0';
  }

  _addListener(map, key, fn) {
    if (typeof fn !== 'function') throw new TypeError('tether: listener must be a function');
    let set = map.get(key);
    if (!set) map.set(key, (set = new Set()));
    set.add(fn);
    return () => this._removeListener(map, key, fn);
  }

  _removeListener(map, key, fn) {
    const set = map.get(key);
    if (set && set.delete(fn) && set.size === 0) map.delete(key);
  }

  _emit(name, ev) {
    for (const fn of [...(this._eventListeners.get(name) ?? [])]) {
      try {
        fn(ev);
      } catch (err) {
        reportListenerError(err);
      }
    }
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
    this._clearTimer('refresh');
  }

  _resetAttempts() {
    this._attempt = 0;
    this._retries = 0;
    this._immediateUsed = false;
  }

  /**
   * Called whenever a connection ends. Only one that stayed open `minUptimeMs` earns a
   * fresh start, so a server that welcomes and drops at once still sees backoff.
   */
  _connectionEnded() {
    for (const [id, ask] of this._asks) {
      this._scheduler.clearTimeout(ask.timer);
      ask.reject(new Error('tether: connection closed before the presence answer'));
      this._asks.delete(id);
    }
    if (this._openedAt != null && this._scheduler.now() - this._openedAt >= this._minUptimeMs) {
      this._resetAttempts();
    }
    this._openedAt = null;
  }

  /**
   * One attempt: get a token (maybe asynchronously), then open the socket. `_gen`
   * identifies the attempt, so a token that arrives after the attempt was abandoned
   * or the client closed opens nothing.
   */
  _openSocket() {
    this._clearConnectionTimers();
    this._welcomed = false;
    // A hint belongs to the connection that received it, not to the next node we try.
    this._shutdownAt = null;
    const gen = ++this._gen;
    // Armed before the token is asked for, so a getToken that never settles cannot park us.
    if (this._connectTimeoutMs > 0) {
      this._setTimer('connect', () => this._abandon('connect timeout'), this._connectTimeoutMs);
    }
    if (!this._tokenFn) {
      this._startSocket(this._token);
      return;
    }
    let result;
    try {
      result = this._tokenFn();
    } catch (err) {
      this._tokenFailed(err);
      return;
    }
    if (!isThenable(result)) {
      this._startSocket(result);
      return;
    }
    result.then(
      (token) => {
        if (gen === this._gen && !this._stopped) this._startSocket(token);
      },
      (err) => {
        if (gen === this._gen && !this._stopped) this._tokenFailed(err);
      },
    );
  }

  _tokenFailed(err) {
    this._emit('token_error', { phase: 'connect', error: err });
    if (this._stopped) return;
    // Through the ordinary failure path: backoff and maxRetries apply, never a tight loop.
    this._abandon(`token error: ${errorText(err)}`);
  }

  _startSocket(token) {
    const tok = token == null || token === '' ? null : String(token);
    this._connToken = tok;
    this._connExpiresAtMs = null;
    this._pendingToken = null;
    if (tok != null) this._currentToken = tok;
    const since = this._sinceParam();
    this._sentSince = since == null ? null : parsePosition(since);
    let ws;
    try {
      ws = new this._WebSocket(this._buildUrl(tok, since));
    } catch (err) {
      this._ws = null;
      this._clearTimer('connect');
      this._scheduleReconnect({ reason: `connect failed: ${errorText(err)}` });
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
  }

  /**
   * Forget the current socket (or pending token request): detach its handlers (with
   * no-ops, so a late `error` event cannot go unhandled), close it, clear its timers.
   */
  _dropSocket(code, reason) {
    this._gen += 1;
    this._clearConnectionTimers();
    this._welcomed = false;
    this._connectionEnded();
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
    if (this._retries >= this._maxRetries) {
      this._stopped = true;
      this._clearTimer('reconnect');
      this._setStatus('closed', { ...info, gaveUp: true, attempt: this._retries });
      return;
    }
    this._retries += 1;
    let delayMs;
    if (delayOverride != null) {
      delayMs = delayOverride;
    } else if (IMMEDIATE_CLOSE_CODES.has(info.code) && !this._immediateUsed) {
      // Another node (1012) or a fresh token (4004) fixes it now; only the first attempt
      // skips the backoff, so a node that keeps refusing is not hammered.
      this._immediateUsed = true;
      delayMs = 0;
    } else {
      delayMs = backoffDelay(this._attempt, this._backoff, this._random);
      this._attempt += 1;
    }
    this._setStatus('reconnecting', { ...info, delayMs, attempt: this._retries });
    if (this._stopped) return; // a status listener called close()
    this._setTimer('reconnect', () => {
      if (!this._stopped) this._openSocket();
    }, delayMs);
  }

  _onClose(code, reason) {
    this._ws = null;
    this._gen += 1;
    this._clearConnectionTimers();
    this._welcomed = false;
    this._connectionEnded();
    if (this._stopped) return;
    if (FINAL_CLOSE_CODES.has(code)) {
      this._stopped = true;
      this._clearTimer('reconnect');
      this._setStatus('closed', { code, reason });
      return;
    }
    let delayMs;
    if ((code === GOING_AWAY || code === SERVICE_RESTART) && this._shutdownAt != null) {
      // The hint counts from the shutdown message, not from the close: in restart mode
      // the server closes at the hinted time itself, and waiting again would double it.
      delayMs = Math.max(0, this._shutdownAt - this._scheduler.now());
    }
    this._shutdownAt = null;
    this._scheduleReconnect({ code, reason }, delayMs);
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

    // Control messages come from the server itself, never with a `channel`: one that has
    // it was relayed from a publisher and must not steer the client.
    const control = msg.channel == null;
    if (control) {
      if (msg.type === 'welcome' && !this._welcomed) this._onWelcome(msg);
      else if (msg.type === 'refreshed') this._onRefreshed(msg);
      else if (msg.type === 'error' && msg.data && msg.data.code === 'invalid_token') this._onTokenRejected(msg);
      if ((msg.type === 'presence' || msg.type === 'error') && typeof msg.id === 'string') this._answerAsk(msg);
    }
    // `subscribed` names its channel in `data`; a server may also set the envelope field.
    if (msg.type === 'subscribed') this._onSubscribed(msg);
    if (msg.type === 'unsubscribed' && control) this._onUnsubscribed(msg);
    if (!this._acceptSeq(msg)) return;
    this._dispatch(msg);
    if (control && msg.type === 'shutdown' && this._ws && !this._stopped) this._onShutdown(msg);
  }

  /** Track the stream position of a message; false for a duplicate, which is not dispatched. */
  _acceptSeq(msg) {
    const seq = toSeq(msg.seq);
    if (seq == null) return true;
    let pos;
    if (msg.channel == null) {
      pos = this._clientPos;
      if (!pos) return true; // no epoch known: nothing to compare against
    } else {
      if (typeof msg.channel !== 'string') return true;
      pos = this._chanPos.get(msg.channel);
      if (this._serverResume.has(msg.channel)) return false;
      if (!pos) {
        if (!this._tracked(msg.channel)) return true;
        this._chanPos.set(msg.channel, (pos = { epoch: null, seq: 0 }));
      }
    }
    const stream = msg.channel == null ? { stream: 'client' } : { stream: 'channel', channel: msg.channel };
    if (seq === 1 && pos.seq >= 1) {
      // A stream only ever starts again at 1: the server dropped its history (expired past
      // history_ttl, or evicted) while this session stayed connected, and numbering began anew
      // in a new epoch. The message is new, not a duplicate. The new epoch is not known here,
      // so a later resume from this position is answered `recovered: false` — never a silent gap.
      this._emit('restarted', { ...stream, previous: pos.seq });
      pos.seq = 1;
      return true;
    }
    if (seq <= pos.seq) {
      const ev = { ...stream, seq };
      this._emit('duplicate', ev);
      return false;
    }
    pos.seq = seq;
    return true;
  }

  _onWelcome(msg) {
    const data = msg.data && typeof msg.data === 'object' ? msg.data : {};
    this._clearTimer('connect');
    this._welcomed = true;
    this._openedAt = this._scheduler.now();
    this._shutdownAt = null;
    this._sessionId = data.session_id ?? null;
    this._hbIntervalMs = Number(data.heartbeat_interval_ms) > 0 ? Number(data.heartbeat_interval_ms) : 0;
    this._hbTimeoutMs = Number(data.heartbeat_timeout_ms) > 0 ? Number(data.heartbeat_timeout_ms) : 0;
    this._setStatus('open', { sessionId: this._sessionId });
    // A status listener may have closed the client.
    if (!this._welcomed) return;
    this._resumeClientStream(data);
    if (!this._welcomed) return;
    this._chanSince.clear();
    this._serverChannels.clear();
    this._serverResume.clear();
    for (const channel of this._channels) this._sendSubscribe(channel);
    if (this._heartbeat) {
      if (this._hbIntervalMs > 0) this._armHeartbeat();
      if (this._hbTimeoutMs > 0) this._armSilence(this._hbTimeoutMs);
    }
    this._refreshAttempt = 0;
    this._armRefresh();
  }

  /**
   * With `recovered: true` the missed messages follow the welcome, so the position stays
   * at what we asked from (setting it to the welcome's head `seq` would drop them all as
   * duplicates). Otherwise the app reloads its state as of now and the old position is
   * dropped: the head is the position, less the `missed` messages the server still replays
   * (what it stores for a client without state), so they are dispatched, not taken for
   * duplicates.
   */
  _resumeClientStream(data) {
    const epoch = toEpoch(data.epoch);
    const sent = this._sentSince;
    const sentText = sent ? formatPosition(sent) : null;
    // The speculative 0:0 of a connection with nothing saved is not a position the app
    // holds: only an explicit refusal of it is reported.
    const askedReal = sent != null && !(sent.epoch === '0' && sent.seq === 0);
    if (epoch == null) {
      this._historyOff = true;
      if (askedReal) {
        this._emit('recovery_failed', { stream: 'client', since: sentText, position: null });
      }
      return;
    }
    this._historyOff = false;
    const head = toSeq(data.seq) ?? 0;
    if (data.recovered === true && sent) {
      this._clientPos = { epoch, seq: sent.seq };
      this._emit('resumed', { stream: 'client', missed: toSeq(data.missed) ?? 0, position: formatPosition(this._clientPos) });
      return;
    }
    this._clientPos = { epoch, seq: replayFrom(head, data) };
    if (data.recovered === false || askedReal) {
      this._emit('recovery_failed', failure({ stream: 'client', since: sentText, position: formatPosition({ epoch, seq: head }) }, data));
    }
  }

  _sendSubscribe(channel) {
    const pos = this._resume ? this._chanPos.get(channel) : undefined;
    if (pos && pos.epoch != null) {
      this._chanSince.set(channel, { epoch: pos.epoch, seq: pos.seq });
      return this.send('subscribe', { channel, since: formatPosition(pos) });
    }
    this._chanSince.delete(channel);
    return this.send('subscribe', { channel });
  }

  /** As {@link TetherClient#_resumeClientStream}, for one channel's stream. */
  _onSubscribed(msg) {
    const data = msg.data && typeof msg.data === 'object' ? msg.data : {};
    const channel = typeof data.channel === 'string' ? data.channel : msg.channel;
    if (typeof channel !== 'string') return;
    if (data.by === 'server' && msg.channel == null) return this._onServerSubscribed(channel, data);
    if (!this._tracked(channel)) return;
    this._serverResume.delete(channel);
    const sent = this._chanSince.get(channel) ?? null;
    this._chanSince.delete(channel);
    const epoch = toEpoch(data.epoch);
    const head = toSeq(data.seq);
    if (data.recovered === true && sent) {
      const pos = { epoch: epoch ?? sent.epoch, seq: sent.seq };
      this._chanPos.set(channel, pos);
      this._emit('resumed', { stream: 'channel', channel, missed: toSeq(data.missed) ?? 0, position: formatPosition(pos) });
      return;
    }
    let pos = null;
    if (epoch != null || head != null) {
      pos = { epoch, seq: head ?? 0 };
      this._chanPos.set(channel, { epoch, seq: replayFrom(head ?? 0, data) });
    } else {
      // No history on this channel: forget the old position so no live message is
      // mistaken for a duplicate of the previous subscription's numbering.
      this._chanPos.delete(channel);
    }
    if (sent) {
      this._emit('recovery_failed', failure({
        stream: 'channel',
        channel,
        since: formatPosition(sent),
        position: pos && pos.epoch != null ? formatPosition(pos) : null,
      }, data));
    }
  }

  /** Whether the client keeps a position for `channel`: its own or joined by the server. */
  _tracked(channel) {
    return this._channels.has(channel) || this._serverChannels.has(channel);
  }

  /**
   * The server joined `channel` (an API subscribe, or at connect for remembered channels and
   * the token's `subs`). At connect it sends no `since`: when this client holds a position on
   * the channel from an earlier connection, it asks for what it missed with its own
   * `subscribe` + `since`, and drops the channel's live messages until that answer, since the
   * replay brings them again in order.
   */
  _onServerSubscribed(channel, data) {
    this._serverChannels.add(channel);
    // Our own subscribe is in flight: its answer settles the position.
    if (this._chanSince.has(channel)) return;
    const old = this._chanPos.get(channel);
    if (data.recovered == null && toEpoch(data.epoch) != null && this._resume && old && old.epoch != null) {
      this._serverResume.add(channel);
      this._chanSince.set(channel, { epoch: old.epoch, seq: old.seq });
      this.send('subscribe', { channel, since: formatPosition(old) });
      return;
    }
    const epoch = toEpoch(data.epoch);
    const head = toSeq(data.seq);
    if (epoch != null || head != null) this._chanPos.set(channel, { epoch, seq: replayFrom(head ?? 0, data) });
    else this._chanPos.delete(channel);
    if (data.recovered === false) {
      this._emit('recovery_failed', failure({ stream: 'channel', channel, since: null, position: epoch != null ? formatPosition({ epoch, seq: head ?? 0 }) : null }, data));
    }
  }

  /** The server took the session out of a channel: its position goes unless the client keeps
   * the channel itself. */
  _onUnsubscribed(msg) {
    const channel = msg.data && typeof msg.data === 'object' ? msg.data.channel : null;
    if (typeof channel !== 'string') return;
    this._serverChannels.delete(channel);
    this._serverResume.delete(channel);
    if (msg.data.by === 'server' && !this._channels.has(channel)) this._chanPos.delete(channel);
  }

  // ------------------------------------------------------------ token refresh

  _tokenExpiryMs(token) {
    const exp = jwtExpiry(token);
    return exp != null ? exp * 1000 : null;
  }

  _armRefresh() {
    this._clearTimer('refresh');
    if (!this._tokenFn || !this._welcomed) return;
    const expMs = this._tokenExpiryMs(this._connToken) ?? this._connExpiresAtMs;
    if (expMs == null) return;
    const due = expMs - this._refreshMarginMs;
    const delay = Math.max(0, due - this._scheduler.now());
    // Timers overflow past 2^31-1 ms and fire at once: wait in steps for a far-off expiry.
    this._setTimer('refresh', () => (this._scheduler.now() < due ? this._armRefresh() : this._refresh()), Math.min(delay, MAX_TIMER_MS));
  }

  _retryRefresh() {
    const delay = backoffDelay(this._refreshAttempt, this._backoff, this._random);
    this._refreshAttempt += 1;
    this._setTimer('refresh', () => this._refresh(), delay);
  }

  _refresh() {
    const gen = this._gen;
    const current = this._connToken;
    const fail = (err) => {
      if (gen !== this._gen || !this._welcomed) return;
      this._emit('token_error', { phase: 'refresh', error: err });
      // A listener may have closed the client.
      if (gen === this._gen && this._welcomed) this._retryRefresh();
    };
    const use = (token) => {
      if (gen !== this._gen || !this._welcomed) return;
      const tok = token == null ? '' : String(token);
      const oldExp = this._tokenExpiryMs(current);
      const newExp = this._tokenExpiryMs(tok);
      // The application has nothing newer yet: ask again after a backoff rather than
      // re-sending the same token in a loop (the margin may already be behind us).
      if (tok === '' || tok === current || (oldExp != null && newExp != null && newExp <= oldExp)) {
        this._retryRefresh();
        return;
      }
      this._pendingToken = tok;
      this.send('refresh', { token: tok });
    };
    let result;
    try {
      result = this._tokenFn();
    } catch (err) {
      fail(err);
      return;
    }
    if (isThenable(result)) result.then(use, fail);
    else use(result);
  }

  _onRefreshed(msg) {
    const data = msg.data && typeof msg.data === 'object' ? msg.data : {};
    if (this._pendingToken != null) {
      this._connToken = this._currentToken = this._pendingToken;
      this._pendingToken = null;
    }
    const at = typeof data.expires_at === 'string' ? Date.parse(data.expires_at) : NaN;
    this._connExpiresAtMs = Number.isFinite(at) ? at : null;
    this._refreshAttempt = 0;
    this._emit('token_refreshed', { expiresAt: data.expires_at ?? null });
    this._armRefresh();
  }

  /**
   * No retry here: the application just handed out this token, asking again at once
   * would likely get the same one. At `exp` the server closes with 4004 and the
   * reconnect asks for a new token.
   */
  _onTokenRejected(msg) {
    this._pendingToken = null;
    this._emit('token_rejected', { code: msg.data.code, message: msg.data.message ?? '' });
  }

  // ------------------------------------------------------------ heartbeat

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

  // ------------------------------------------------------------ shutdown

  /**
   * The hint is clamped: a `shutdown` is trusted to say "come back later", not to park
   * the client for as long as it likes. A hint that is not a non-negative number is
   * ignored and the normal backoff applies.
   */
  _shutdownDelay(data) {
    const v = data && typeof data === 'object' ? data.reconnect_after_ms : undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) return null;
    const hint = Math.min(v, this._maxHintMs);
    // Spread the herd upwards only: never come back earlier than the server asked.
    return Math.round(hint * (1 + this._backoff.jitter * this._random()));
  }

  _onShutdown(msg) {
    const delayMs = this._shutdownDelay(msg.data);
    this._shutdownAt = delayMs == null ? null : this._scheduler.now() + delayMs;
    if (this._reconnectOnShutdown) this._abandon('server shutdown', delayMs ?? undefined);
  }
}

export default TetherClient;
