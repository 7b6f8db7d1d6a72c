// A usage example that `tsc --strict --noEmit` checks against tether.d.ts (scripts/js-client-test.sh).
// It is never run: it only has to type-check, and wrong uses marked @ts-expect-error must not.

import TetherDefault, {
  TetherClient,
  backoffDelay,
  jwtExpiry,
  parsePosition,
  DEFAULT_BACKOFF,
  type ChannelPresence,
  type PresenceClient,
  type Envelope,
  type Position,
  type StatusEvent,
  type TetherOptions,
} from '@tether/client';

interface Goal {
  team: string;
  minute: number;
}

const saved: Position | null = JSON.parse(localStorage.getItem('tether-position') ?? 'null');

const options: TetherOptions = {
  getToken: async () => {
    const res = await fetch('/push-token', { credentials: 'include' });
    if (!res.ok) throw new Error(`token endpoint: ${res.status}`);
    return res.text();
  },
  channels: ['scores.live', 'room.1'],
  position: saved ?? undefined,
  minDelayMs: 500,
  maxDelayMs: 15_000,
  factor: 1.5,
  jitter: 0.1,
  maxRetries: 20,
  minUptimeMs: 5000,
  connectTimeoutMs: 4000,
  refreshMarginMs: 30_000,
  heartbeat: true,
  autoConnect: false,
  resume: true,
  reconnectOnShutdown: true,
  maxReconnectHintMs: 60_000,
  WebSocket: globalThis.WebSocket,
};

const client = new TetherClient(`wss://${location.host}/ws`, options);
const same: TetherClient = new TetherDefault('/ws', { clientId: 'alice', token: 'jwt' });
same.close();

// Known protocol messages are typed by their `type`.
client.on('welcome', (msg) => {
  const id: string = msg.data.session_id;
  const interval: number = msg.data.heartbeat_interval_ms;
  const epoch: string | undefined = msg.data.epoch;
  console.log(id, interval, epoch);
});
client.on('error', (msg) => console.warn(msg.data.code, msg.data.message, msg.data.original));
client.on('presence', (msg) => {
  const answer: ChannelPresence = msg.data;
  console.log(answer.channel, answer.sessions, answer.clients.length);
});
client.on('shutdown', (msg) => console.log(msg.data.mode, msg.data.reconnect_after_ms));
client.on('subscribed', (msg) => {
  if (msg.data.by === 'server') console.log('the backend subscribed us to', msg.data.channel);
  if (msg.data.recovered === false) console.log('reload', msg.data.channel, msg.data.reason);
});
client.on('unsubscribed', (msg) => console.log('left', msg.data.channel, msg.data.by, msg.data.reason));
client.on('join', (msg) => console.log(`${msg.data.client_id} joined ${msg.data.channel}`));
client.on('leave', (msg) => console.log(`${msg.data.client_id} left ${msg.data.channel}`));
client.on('refreshed', (msg) => console.log('token good until', msg.data.expires_at));

// Application messages: the data type is the application's to state.
const stop = client.on<Goal>('goal', (msg: Envelope<Goal>) => {
  console.log(msg.data.team, msg.data.minute, msg.channel, msg.seq, msg.timestamp);
  localStorage.setItem('tether-position', JSON.stringify(client.lastPosition()));
});
stop();
client.on('*', (msg) => console.log(msg.type, msg.data));

client.onEvent('resumed', (e) => console.log(`caught up on ${e.missed} ${e.stream} messages at ${e.position}`));
client.onEvent('recovery_failed', (e) => console.log('reload', e.stream, e.channel, e.since, e.position, e.reason));
client.onEvent('duplicate', (e) => console.log(e.seq));
client.onEvent('restarted', (e) => console.log(e.previous));
client.onEvent('token_refreshed', (e) => console.log(e.expiresAt));
client.onEvent('token_rejected', (e) => console.log(e.code, e.message));
client.onEvent('token_error', (e) => console.log(e.phase, e.error));

const onStatus = (s: StatusEvent) => console.log(s.status, s.previous, s.code, s.reason, s.delayMs, s.attempt, s.gaveUp, s.sessionId);
client.onStatus(onStatus);
client.offStatus(onStatus);

client.connect().subscribe('room.2', { since: 'k3j9:4' });
const sent: boolean = client.send('typing', { on: true }, { id: 'req-1' });
client.publish('room.1', 'chat', { text: 'hi' });
client.unsubscribe('room.2');

async function whoIsHere(): Promise<string[]> {
  const here: PresenceClient[] = await client.presence('room.1', { timeoutMs: 5000 });
  return here.filter((c) => c.sessions > 0).map((c) => c.client_id);
}
void whoIsHere();

const status: 'connecting' | 'open' | 'reconnecting' | 'closed' = client.status;
const session: string | null = client.sessionId;
const channels: string[] = client.channels;
const url: string = client.url;
const delay: number = backoffDelay(3, { ...DEFAULT_BACKOFF, jitter: 0 }, () => 0.5);
const exp: number | null = jwtExpiry('a.b.c');
const pos = parsePosition('e:1');
console.log(sent, status, session, channels, url, delay, exp, pos?.epoch, pos?.seq);

// Mistakes the declarations catch.
// @ts-expect-error a status is not a message type's listener argument
client.onStatus((s: Envelope) => s);
// @ts-expect-error unknown client event
client.onEvent('resumd', () => {});
// @ts-expect-error the error data has no `reason`
client.on('error', (msg) => msg.data.reason);
// @ts-expect-error channels is a list
new TetherClient('/ws', { channels: 'news' });
// @ts-expect-error presence needs a channel
void client.presence();

client.close(1000, 'bye');
