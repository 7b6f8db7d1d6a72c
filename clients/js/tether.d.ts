// Type declarations for tether.js, the browser / Node client of the tether push server.
//
// Hand-written beside the module (which stays one dependency-free file the server also serves at
// /tether.js). The names mirror docs/protocol.md §2 (messages), §4 (close codes), §8 (resume) and
// §14 (server-side control); README.md in this folder explains each option, event and status.
// `tsc --strict` checks them against examples/usage.ts (scripts/js-client-test.sh).
//
// No DOM types are needed: the WebSocket the client uses is described structurally
// (WebSocketLike), so a project compiled without `lib: ["dom"]` (server-side rendering, Node)
// can import these declarations too.

/** The `exp` claim (seconds since the epoch) of a JWT, read without verifying it; null if none. */
export declare function jwtExpiry(token: string | null | undefined): number | null;

/** A parsed stream position `"<epoch>:<seq>"` (split at the last `:`), or null. */
export declare function parsePosition(text: unknown): { epoch: string; seq: number } | null;

/** Backoff settings of reconnects (and of token refresh retries). */
export interface BackoffOptions {
  /** Delay before the first retry, before jitter. Default 1000. */
  minDelayMs?: number;
  /** Cap on the delay, before jitter. Default 10000. */
  maxDelayMs?: number;
  /** Growth per failed attempt (>= 1). Default 1.3. */
  factor?: number;
  /** Fraction of the delay added or removed at random (0..1). Default 0.2. */
  jitter?: number;
}

/** The defaults of {@link BackoffOptions}. */
export declare const DEFAULT_BACKOFF: Readonly<Required<BackoffOptions>>;

/** `min(maxDelayMs, minDelayMs × factor^attempt) × (1 ± jitter)`, in whole milliseconds. */
export declare function backoffDelay(attempt: number, opts?: BackoffOptions, random?: () => number): number;

/** Timer functions; inject a fake clock in tests. `now` is wall-clock ms (compared with a token's `exp`). */
export interface Scheduler {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: any): void;
  now(): number;
}

/** What the client needs of a WebSocket: browsers', Node 22's built-in one and the `ws` package all fit. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor (`globalThis.WebSocket`, or `ws`'s default export). */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** A saved position, as {@link TetherClient.lastPosition} returns and the `position` option takes. */
export interface Position {
  /** `"<epoch>:<seq>"` of the client's own stream. */
  client?: string | null;
  /** `"<epoch>:<seq>"` per channel. */
  channels?: Record<string, string>;
}

/** What a token source may hand back: a token, or nothing (connect without one). */
export type TokenResult = string | null | undefined;

/** Options of {@link TetherClient}. Every one is optional. */
export interface TetherOptions extends BackoffOptions {
  /** Sent as `?client_id=`. */
  clientId?: string;
  /** Called before every (re)connect and before the token expires. */
  getToken?: () => TokenResult | Promise<TokenResult>;
  /** A static token for `?token=`, or a function used like `getToken` (`getToken` wins). */
  token?: string | (() => TokenResult);
  /** Refresh this long before the token's `exp`. Default 30000. */
  refreshMarginMs?: number;
  /** Send `since` on every connection and re-subscribe. Default true. */
  resume?: boolean;
  /** Where to resume from, e.g. a saved `lastPosition()`. */
  position?: Position;
  /** Channels to subscribe to after every (re)connect. */
  channels?: string[];
  /** Consecutive failed attempts after which the client gives up (`closed`, `gaveUp`). Default Infinity. */
  maxRetries?: number;
  /** A connection must stay open this long before the attempt count resets. Default 5000. */
  minUptimeMs?: number;
  /** Drop an attempt without `welcome` after this long (token wait included). Default 4000. */
  connectTimeoutMs?: number;
  /** Send `heartbeat` and watch for server silence. Default true. */
  heartbeat?: boolean;
  /** Connect in a microtask after construction. Default true. */
  autoConnect?: boolean;
  /** Reconnect after a `shutdown` message's `reconnect_after_ms`. Default true. */
  reconnectOnShutdown?: boolean;
  /** Largest `reconnect_after_ms` accepted; larger ones are cut to it. Default 60000. */
  maxReconnectHintMs?: number;
  /** The WebSocket constructor. Default `globalThis.WebSocket` (required where there is none). */
  WebSocket?: WebSocketConstructor;
  /** Timer functions (tests). */
  scheduler?: Scheduler;
  /** Uniform source in [0, 1) for the jitter (tests). */
  random?: () => number;
}

/** A message envelope from the server (docs/protocol.md §2). */
export interface Envelope<T = unknown> {
  type: string;
  /** RFC 3339 UTC with milliseconds, set by the server. */
  timestamp?: string;
  data: T;
  /** A correlation id, echoed from the client. */
  id?: string;
  /** The channel of a channel message. */
  channel?: string;
  /** Position in the client's or the channel's stream (history on). */
  seq?: number;
}

/** Answers that may carry a stream position and the outcome of a resume (§8). */
export interface StreamState {
  epoch?: string;
  seq?: number;
  recovered?: boolean;
  missed?: number;
  /** `"bad_position"` when the server could not read `since`. */
  reason?: string;
}

/** `welcome`: the first frame of every connection. */
export interface WelcomeData extends StreamState {
  session_id: string;
  client_id: string;
  heartbeat_interval_ms: number;
  heartbeat_timeout_ms: number;
}

/** `subscribed`: an answer to `subscribe`, or a join made by the server (`by: "server"`, §14). */
export interface SubscribedData extends StreamState {
  channel: string;
  by?: 'server';
}

/** `unsubscribed`: an answer to `unsubscribe`, a server-side unsubscribe (`by: "server"`), or a grant lost on refresh (`reason: "forbidden"`). */
export interface UnsubscribedData {
  channel: string;
  by?: 'server';
  reason?: string;
}

/** `error`: a frame the server refused; the connection stays open. */
export interface ErrorData {
  code: string;
  message: string;
  /** The offending frame, cut to 256 bytes. */
  original?: string;
}

/** `shutdown`: the server is draining or restarting (§6). */
export interface ShutdownData {
  mode: 'drain' | 'restart' | (string & {});
  reconnect_after_ms: number;
}

/** `refreshed`: the server accepted a `refresh` (§7). */
export interface RefreshedData {
  expires_at: string;
}

/** `join` / `leave` on a channel listed in `presence_channels` (§14). */
export interface PresenceChangeData {
  channel: string;
  client_id: string;
}

/** One client id present on a channel. */
export interface PresenceClient {
  client_id: string;
  sessions: number;
}

/** `presence`: who is on a channel (§14), the answer to {@link TetherClient.presence}. */
export interface ChannelPresence {
  channel: string;
  sessions: number;
  clients: PresenceClient[];
}

/** The messages whose shape the protocol fixes, by `type`. Anything else is the application's. */
export interface ServerMessages {
  welcome: Envelope<WelcomeData>;
  heartbeat_ack: Envelope<undefined>;
  subscribed: Envelope<SubscribedData>;
  unsubscribed: Envelope<UnsubscribedData>;
  refreshed: Envelope<RefreshedData>;
  error: Envelope<ErrorData>;
  shutdown: Envelope<ShutdownData>;
  join: Envelope<PresenceChangeData>;
  leave: Envelope<PresenceChangeData>;
  presence: Envelope<ChannelPresence>;
}

export type Status = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** What {@link TetherClient.onStatus} listeners get. */
export interface StatusEvent {
  status: Status;
  previous: Status;
  /** The close code that caused it. */
  code?: number;
  /** The close reason, or the client's own (`connect timeout`, `heartbeat timeout`, `server shutdown`, `token error: …`, `client closed`). */
  reason?: string;
  /** For `reconnecting`: the wait before the next attempt. */
  delayMs?: number;
  /** For `reconnecting`: consecutive failed attempts. */
  attempt?: number;
  /** For `closed`: `maxRetries` was reached. */
  gaveUp?: boolean;
  /** For `open`: the session id from `welcome`. */
  sessionId?: string | null;
}

export type StreamName = 'client' | 'channel';

/** Client events by name, as {@link TetherClient.onEvent} listeners get them. */
export interface TetherEvents {
  resumed: { stream: StreamName; channel?: string; missed: number; position: string };
  recovery_failed: { stream: StreamName; channel?: string; since: string | null; position: string | null; reason?: string };
  duplicate: { stream: StreamName; channel?: string; seq: number };
  restarted: { stream: StreamName; channel?: string; previous: number };
  token_refreshed: { expiresAt: string | null };
  token_rejected: { code: string; message: string };
  token_error: { phase: 'connect' | 'refresh'; error: unknown };
}

export type EventName = keyof TetherEvents;

/** A self-healing connection to a tether server. */
export declare class TetherClient {
  /**
   * @param url the WebSocket endpoint (`wss://host/ws`); in a browser also relative (`/ws`) or http(s).
   * @throws TypeError when there is no WebSocket (pass `options.WebSocket`) or the URL scheme is not ws(s)/http(s).
   */
  constructor(url: string, options?: TetherOptions);

  /** Sent as `?client_id=`. */
  clientId: string | undefined;
  readonly status: Status;
  /** From the last `welcome`, null before the first. */
  readonly sessionId: string | null;
  /** The channels kept subscribed (a copy). */
  readonly channels: string[];
  /** The URL of the next connection attempt. */
  readonly url: string;

  /** Where the client's and each channel's stream stand, to persist and pass back as `position`. */
  lastPosition(): { client: string | null; channels: Record<string, string> };
  /** Start connecting (with `autoConnect: false`, or again after `close()` or a final close code). */
  connect(): this;
  /** Close for good: no reconnect, every timer cleared. */
  close(code?: number, reason?: string): void;
  /** Send `{type, data, ...extra}`; false when not connected (nothing is queued). */
  send(type: string, data?: unknown, extra?: { id?: string; channel?: string }): boolean;
  /** Publish to a channel (the server must allow `client_publish`). */
  publish(channel: string, type: string, data?: unknown): boolean;
  /** Subscribe now and after every reconnect; true when the frame went out now. */
  subscribe(channel: string, opts?: { since?: string }): boolean;
  /** Unsubscribe and forget the channel and its position; true when the frame went out now. */
  unsubscribe(channel: string): boolean;
  /**
   * Who is on a `presence_channels` channel the client is subscribed to (§14): sends
   * `presence {channel}` and resolves with the answer's `clients` (the first 1,000 by name;
   * `sessions` 0 for a client id within its grace, not yet `leave`d). Rejects with the
   * server's error (its `code` on the Error), after `timeoutMs` (default 10000), or when not
   * connected or the connection ends first.
   */
  presence(channel: string, opts?: { timeoutMs?: number }): Promise<PresenceClient[]>;

  /** Listen to messages of one `type`; `'*'` gets every message. Returns a remover. */
  on<K extends keyof ServerMessages>(type: K, fn: (msg: ServerMessages[K]) => void): () => void;
  on<T = unknown>(type: string, fn: (msg: Envelope<T>) => void): () => void;
  off<K extends keyof ServerMessages>(type: K, fn: (msg: ServerMessages[K]) => void): void;
  off<T = unknown>(type: string, fn: (msg: Envelope<T>) => void): void;

  /** Listen to a client event. Returns a remover. */
  onEvent<K extends EventName>(name: K, fn: (ev: TetherEvents[K]) => void): () => void;
  offEvent<K extends EventName>(name: K, fn: (ev: TetherEvents[K]) => void): void;

  /** Listen to status changes. Returns a remover. */
  onStatus(fn: (ev: StatusEvent) => void): () => void;
  offStatus(fn: (ev: StatusEvent) => void): void;
}

export default TetherClient;
