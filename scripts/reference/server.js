'use strict';

// Reference push server for benchmarking tether.
//
// Written the way the `ws` package's README recommends: `noServer: true` plus
// the http server's 'upgrade' event, and the "ping interval + isAlive flag"
// heartbeat. It speaks the subset of the tether wire protocol
// (shared/PROTOCOL.md) that the load tool uses, so one client can drive both
// servers. See README.md in this folder for the exact differences.

const http = require('http');
const crypto = require('crypto');
const { WebSocketServer, WebSocket } = require('ws');

// ---------------------------------------------------------------------------
// Configuration: --port N | --port=N | env PORT (default 8090); env HOST
// (default 127.0.0.1); env HEARTBEAT_INTERVAL_MS (default 30000).

function parsePort(argv) {
  let value = process.env.PORT;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--port') {
      value = argv[++i];
    } else if (arg.startsWith('--port=')) {
      value = arg.slice('--port='.length);
    } else {
      fail(`unknown argument: ${arg}`);
    }
  }
  if (value === undefined || value === '') return 8090;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    fail(`bad port: ${value}`);
  }
  return port;
}

function parseInterval(value) {
  if (value === undefined || value === '') return 30000;
  const ms = Number(value);
  if (!Number.isInteger(ms) || ms <= 0) fail(`bad HEARTBEAT_INTERVAL_MS: ${value}`);
  return ms;
}

function fail(message) {
  process.stderr.write(`reference: ${message}\n`);
  process.exit(2);
}

const PORT = parsePort(process.argv.slice(2));
const HOST = process.env.HOST || '127.0.0.1';
const HEARTBEAT_INTERVAL_MS = parseInterval(process.env.HEARTBEAT_INTERVAL_MS);
// With the README's heartbeat a silent socket is terminated at the first tick
// after it missed a whole interval: between 1 and 2 intervals of silence. We
// advertise the worst case.
const HEARTBEAT_TIMEOUT_MS = 2 * HEARTBEAT_INTERVAL_MS;
const WS_PATH = '/ws';
const MAX_MESSAGE_SIZE = 64 * 1024; // same as tether's default max_message_size
const MAX_BODY_SIZE = 1024 * 1024;

// ---------------------------------------------------------------------------
// Helpers

function now() {
  return new Date().toISOString(); // RFC 3339, UTC, milliseconds
}

function envelope(type, data, extra) {
  const env = { type, timestamp: now() };
  if (extra) Object.assign(env, extra);
  if (data !== undefined) env.data = data;
  return JSON.stringify(env);
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function cut(text, maxBytes) {
  const buf = Buffer.from(text, 'utf8');
  if (buf.length <= maxBytes) return text;
  // Drop a possibly split trailing character.
  return buf.subarray(0, maxBytes).toString('utf8').replace(/\uFFFD$/, '');
}

function errorBody(code, message) {
  return JSON.stringify({ error: { code, message } });
}

// ---------------------------------------------------------------------------
// Sessions

const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE_SIZE });
const byClient = new Map(); // client_id -> Set<WebSocket>
let draining = false;

function addSession(ws) {
  let set = byClient.get(ws.clientId);
  if (!set) {
    set = new Set();
    byClient.set(ws.clientId, set);
  }
  set.add(ws);
}

function removeSession(ws) {
  const set = byClient.get(ws.clientId);
  if (!set) return;
  set.delete(ws);
  if (set.size === 0) byClient.delete(ws.clientId);
}

function sendError(ws, code, message, original, id) {
  const data = { code, message };
  if (original !== undefined) data.original = cut(original, 256);
  ws.send(envelope('error', data, id !== undefined ? { id } : undefined));
}

function handleMessage(ws, raw, isBinary) {
  if (isBinary) {
    sendError(ws, 'binary_not_supported', 'binary frames are not supported');
    return;
  }
  const text = raw.toString('utf8');
  let msg;
  try {
    msg = JSON.parse(text);
  } catch (_) {
    sendError(ws, 'bad_message', 'frame is not valid JSON', text);
    return;
  }
  if (!isObject(msg) || typeof msg.type !== 'string' || msg.type === '') {
    sendError(ws, 'bad_message', 'frame must be a JSON object with a string "type"', text);
    return;
  }
  const extra = msg.id !== undefined ? { id: msg.id } : undefined;
  switch (msg.type) {
    case 'heartbeat':
      ws.send(envelope('heartbeat_ack', undefined, extra));
      return;
    case 'subscribe':
    case 'unsubscribe': {
      const channel = isObject(msg.data) ? msg.data.channel : undefined;
      if (typeof channel !== 'string' || channel === '') {
        sendError(ws, 'bad_message', `${msg.type} needs data.channel (a non-empty string)`, text, msg.id);
        return;
      }
      // Channels are only remembered; this server has no channel publish.
      if (msg.type === 'subscribe') ws.channels.add(channel);
      else ws.channels.delete(channel);
      ws.send(envelope(msg.type === 'subscribe' ? 'subscribed' : 'unsubscribed', { channel }, extra));
      return;
    }
    case 'publish':
      // tether's default is client_publish = false.
      sendError(ws, 'forbidden', 'clients may not publish', text, msg.id);
      return;
    default:
      sendError(ws, 'unknown_type', `unknown message type "${msg.type}"`, text, msg.id);
  }
}

wss.on('connection', (ws, req, clientId) => {
  ws.isAlive = true;
  ws.clientId = clientId;
  ws.sessionId = crypto.randomUUID();
  ws.channels = new Set();
  addSession(ws);

  ws.on('error', () => {}); // 'close' follows; nothing else to do
  ws.on('pong', () => { ws.isAlive = true; });
  // Not in the README: our clients send application heartbeats (and may ping),
  // so any frame from the client counts as liveness, as in tether.
  ws.on('ping', () => { ws.isAlive = true; });
  ws.on('message', (raw, isBinary) => {
    ws.isAlive = true;
    handleMessage(ws, raw, isBinary);
  });
  ws.on('close', () => removeSession(ws));

  ws.send(envelope('welcome', {
    session_id: ws.sessionId,
    client_id: clientId,
    heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
    heartbeat_timeout_ms: HEARTBEAT_TIMEOUT_MS,
  }));
});

// The README's heartbeat: every interval, terminate sockets that have not
// answered since the previous tick, and ping the rest.
// NOTE: the README uses ws.terminate() (drops TCP, the client sees 1006).
// tether instead sends a close frame with code 4001 "heartbeat timeout".
const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (ws.isAlive === false) {
      ws.terminate();
      continue;
    }
    ws.isAlive = false;
    ws.ping();
  }
}, HEARTBEAT_INTERVAL_MS);

wss.on('close', () => clearInterval(heartbeat));

// ---------------------------------------------------------------------------
// HTTP

function sendJson(res, status, body) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

function readJson(req, res, handler) {
  const chunks = [];
  let size = 0;
  let tooBig = false;
  req.on('data', (chunk) => {
    if (tooBig) return;
    size += chunk.length;
    if (size > MAX_BODY_SIZE) {
      tooBig = true;
      sendJson(res, 413, errorBody('body_too_large', `request body is over ${MAX_BODY_SIZE} bytes`));
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (tooBig) return;
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (_) {
      sendJson(res, 400, errorBody('bad_json', 'request body is not valid JSON'));
      return;
    }
    if (!isObject(body)) {
      sendJson(res, 400, errorBody('bad_request', 'request body must be a JSON object'));
      return;
    }
    handler(body);
  });
}

// Serialize once, then send the same bytes to every recipient. A Buffer (not a
// string) is passed so ws does not re-encode the text for each socket.
function deliver(sockets, type, data) {
  const bytes = Buffer.from(envelope(type, data === undefined ? null : data));
  let delivered = 0;
  for (const ws of sockets) {
    if (ws.readyState !== WebSocket.OPEN) continue;
    ws.send(bytes, { binary: false });
    delivered++;
  }
  return delivered;
}

function checkType(res, body) {
  if (typeof body.type !== 'string' || body.type === '') {
    sendJson(res, 400, errorBody('bad_request', '"type" must be a non-empty string'));
    return false;
  }
  return true;
}

function route(req, res) {
  const path = new URL(req.url, 'http://localhost').pathname;

  if (path === '/health') {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return sendJson(res, 405, errorBody('method_not_allowed', 'use GET'));
    }
    if (draining) return sendJson(res, 503, { status: 'draining', connections: wss.clients.size });
    return sendJson(res, 200, { status: 'ok', connections: wss.clients.size });
  }

  if (path === '/api/v1/broadcast' || path === '/api/v1/push') {
    if (req.method !== 'POST') {
      return sendJson(res, 405, errorBody('method_not_allowed', 'use POST'));
    }
    return readJson(req, res, (body) => {
      if (!checkType(res, body)) return;
      if (path === '/api/v1/broadcast') {
        return sendJson(res, 200, { delivered: deliver(wss.clients, body.type, body.data) });
      }
      if (typeof body.client_id !== 'string' || body.client_id === '') {
        return sendJson(res, 400, errorBody('bad_request', '"client_id" must be a non-empty string'));
      }
      const sockets = byClient.get(body.client_id);
      const delivered = sockets ? deliver(sockets, body.type, body.data) : 0;
      if (delivered === 0) {
        return sendJson(res, 404, errorBody('no_session', `no session for client_id "${body.client_id}"`));
      }
      return sendJson(res, 200, { delivered });
    });
  }

  if (path === WS_PATH) {
    return sendJson(res, 400, errorBody('bad_handshake', 'expected a WebSocket upgrade'));
  }
  return sendJson(res, 404, errorBody('not_found', `no route for ${req.method} ${path}`));
}

// Refuse an upgrade with an HTTP response, before any WebSocket handshake.
function refuse(socket, status, code, message) {
  const body = errorBody(code, message);
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\n` +
    'Connection: close\r\n' +
    'Content-Type: application/json\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    '\r\n' +
    body
  );
}

const server = http.createServer(route);

server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => {});
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname !== WS_PATH) {
    return refuse(socket, 404, 'not_found', `no WebSocket endpoint at ${url.pathname}`);
  }
  if (draining) {
    return refuse(socket, 503, 'draining', 'server is shutting down');
  }
  const clientId = url.searchParams.get('client_id') || req.headers['x-client-id'];
  if (!clientId) {
    return refuse(socket, 400, 'missing_client_id', 'a client_id query parameter is required');
  }
  // ws validates the handshake itself (and answers 400 with a text body if bad).
  wss.handleUpgrade(req, socket, head, (ws) => {
    wss.emit('connection', ws, req, clientId);
  });
});

server.listen(PORT, HOST, () => {
  const addr = server.address();
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  process.stdout.write(`listening on ${host}:${addr.port}\n`);
});

// ---------------------------------------------------------------------------
// Shutdown: close every socket with 1001 and exit 0. A second signal exits at
// once. tether's default "drain" mode sends a `shutdown` message first and waits.

function shutdown() {
  if (draining) process.exit(0);
  draining = true;
  clearInterval(heartbeat);
  server.close();
  for (const ws of wss.clients) ws.close(1001, 'server shutting down');
  const done = () => process.exit(0);
  if (wss.clients.size === 0) return done();
  // Wait for the close handshakes, but not for ever.
  const timer = setTimeout(() => {
    for (const ws of wss.clients) ws.terminate();
    done();
  }, 2000);
  timer.unref();
  const check = setInterval(() => {
    if (wss.clients.size === 0) done();
  }, 20);
  check.unref();
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
