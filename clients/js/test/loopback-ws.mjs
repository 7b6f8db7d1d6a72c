// A minimal RFC 6455 server and client over node:http, for driving tether.js against a real
// socket on loopback without npm packages. Text, close and ping frames only, no fragmentation,
// no extensions: enough for the envelopes the tests exchange, not a general implementation.
//
// The client is used only where the runtime has no WebSocket of its own (Node 20 without
// --experimental-websocket); elsewhere the tests use globalThis.WebSocket.

import http from 'node:http';
import crypto from 'node:crypto';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const acceptFor = (key) => crypto.createHash('sha1').update(key + GUID).digest('base64');

function frame(opcode, payload, mask) {
  const len = payload.length;
  let header;
  if (len < 126) {
    header = Buffer.alloc(2);
    header[1] = len;
  } else if (len < 65536) {
    header = Buffer.alloc(4);
    header[1] = 126;
    header.writeUInt16BE(len, 2);
  } else {
    header = Buffer.alloc(10);
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  header[0] = 0x80 | opcode;
  if (!mask) return Buffer.concat([header, payload]);
  header[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= key[i & 3];
  return Buffer.concat([header, key, body]);
}

function closePayload(code, reason = '') {
  if (code == null) return Buffer.alloc(0);
  const r = Buffer.from(String(reason));
  const b = Buffer.alloc(2 + r.length);
  b.writeUInt16BE(code, 0);
  r.copy(b, 2);
  return b;
}

/** One end of a WebSocket connection: frames in and out over a net.Socket. */
class Peer {
  constructor(socket, head, { mask, onText, onClose }) {
    this.socket = socket;
    this.mask = mask;
    this.onText = onText;
    this.onClose = onClose;
    this.buf = Buffer.alloc(0);
    this.closeSent = false;
    this.ended = false;
    socket.setNoDelay(true);
    socket.on('data', (chunk) => this._read(chunk));
    socket.on('error', () => {});
    socket.on('close', () => this._end(1006, ''));
    this.head = head;
  }

  /** Frames that came with the upgrade response; read once the owner is wired up. */
  start() {
    if (this.head && this.head.length) this._read(this.head);
    this.head = null;
    return this;
  }

  sendText(text) {
    if (this.ended || this.closeSent) return;
    this.socket.write(frame(0x1, Buffer.from(text), this.mask));
  }

  close(code, reason) {
    if (this.ended || this.closeSent) return;
    this.closeSent = true;
    this.socket.write(frame(0x8, closePayload(code, reason), this.mask));
    this.pendingCode = code;
    this.pendingReason = reason ?? '';
    // The peer answers with its own close frame; a silent one is cut off.
    this.timer = setTimeout(() => this.socket.destroy(), 500);
  }

  _end(code, reason) {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.timer);
    this.onClose(code, reason);
  }

  _read(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (this.buf.length < 2) return;
      const opcode = this.buf[0] & 0x0f;
      const masked = (this.buf[1] & 0x80) !== 0;
      let len = this.buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      const keyLen = masked ? 4 : 0;
      if (this.buf.length < off + keyLen + len) return;
      const payload = Buffer.from(this.buf.subarray(off + keyLen, off + keyLen + len));
      if (masked) {
        const key = this.buf.subarray(off, off + 4);
        for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
      }
      this.buf = this.buf.subarray(off + keyLen + len);
      if (opcode === 0x1) {
        this.onText(payload.toString('utf8'));
      } else if (opcode === 0x8) {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        const reason = payload.length > 2 ? payload.subarray(2).toString('utf8') : '';
        if (!this.closeSent) {
          this.closeSent = true;
          this.socket.write(frame(0x8, closePayload(payload.length >= 2 ? code : undefined), this.mask));
        }
        this.socket.end();
        // The code the close handshake settled on: the peer's if it closed first.
        this._end(this.pendingCode ?? code, this.pendingCode != null ? this.pendingReason : reason);
      } else if (opcode === 0x9) {
        this.socket.write(frame(0xa, payload, this.mask));
      }
    }
  }
}

/** Wait for `pred` over an array that grows; resolves with the matching item. */
function waitIn(list, waiters, pred, ms, what) {
  const hit = list.find(pred);
  if (hit) return Promise.resolve(hit);
  return new Promise((resolve, reject) => {
    const w = { pred, resolve: (x) => (clearTimeout(timer), resolve(x)) };
    const timer = setTimeout(() => {
      waiters.delete(w);
      reject(new Error(`timed out waiting for ${what}`));
    }, ms);
    waiters.add(w);
  });
}

function notify(waiters, item) {
  for (const w of [...waiters]) {
    if (w.pred(item)) {
      waiters.delete(w);
      w.resolve(item);
    }
  }
}

/** A server-side connection, as the test sees it. */
class ServerConn {
  constructor(socket, head, url) {
    this.url = url;
    this.messages = [];
    this.waiters = new Set();
    this.closedWith = null;
    this.closed = new Promise((resolve) => {
      this.peer = new Peer(socket, head, {
        mask: false,
        onText: (text) => {
          let msg;
          try {
            msg = JSON.parse(text);
          } catch {
            return;
          }
          this.messages.push(msg);
          notify(this.waiters, msg);
        },
        onClose: (code, reason) => {
          this.closedWith = { code, reason };
          resolve(this.closedWith);
        },
      });
    });
    this.peer.start();
  }

  param(name) {
    return this.url.searchParams.get(name);
  }

  send(obj) {
    this.peer.sendText(JSON.stringify({ timestamp: new Date().toISOString(), ...obj }));
  }

  welcome(extra = {}) {
    this.send({
      type: 'welcome',
      data: { session_id: `s-${crypto.randomUUID()}`, client_id: 'c', heartbeat_interval_ms: 10000, heartbeat_timeout_ms: 20000, ...extra },
    });
  }

  /** The next (or an already received) client message matching `pred` (a type or a function). */
  receive(pred, ms = 3000) {
    const p = typeof pred === 'string' ? (m) => m.type === pred : pred;
    return waitIn(this.messages, this.waiters, p, ms, `client message ${pred}`);
  }

  close(code, reason) {
    this.peer.close(code, reason);
    return this.closed;
  }
}

/**
 * Start a server on 127.0.0.1 with a free port. `refuse(url)` returning an HTTP status
 * answers the upgrade with it (e.g. 401), as tether does before upgrading.
 */
export async function startServer({ refuse } = {}) {
  const connections = [];
  const waiters = new Set();
  const upgrades = [];
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    res.writeHead(404);
    res.end();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    upgrades.push({ url, at: Date.now() });
    const status = refuse ? refuse(url) : 0;
    if (status) {
      socket.end(`HTTP/1.1 ${status} Refused\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`);
      return;
    }
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${acceptFor(req.headers['sec-websocket-key'])}\r\n\r\n`,
    );
    const conn = new ServerConn(socket, head, url);
    conn.at = Date.now();
    connections.push(conn);
    notify(waiters, conn);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `ws://127.0.0.1:${port}/ws`,
    connections,
    upgrades,
    /** The n-th (0-based) accepted connection. */
    connection(n, ms = 3000) {
      const hit = connections[n];
      if (hit) return Promise.resolve(hit);
      return waitIn([], waiters, () => connections.length > n, ms, `connection #${n}`).then(() => connections[n]);
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A browser-like WebSocket (event handler properties, readyState) for runtimes without one. */
export class LoopbackWebSocket {
  constructor(url) {
    const u = new URL(url);
    this.url = url;
    this.readyState = 0;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    const key = crypto.randomBytes(16).toString('base64');
    const req = http.request({
      host: u.hostname,
      port: u.port,
      path: u.pathname + u.search,
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': key },
    });
    // Like a browser, a refused upgrade (401, 503, ...) is only an error and a 1006 close.
    const fail = () => {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.onerror?.({ type: 'error' });
      this.onclose?.({ code: 1006, reason: '', wasClean: false });
    };
    req.on('error', fail);
    req.on('response', (res) => {
      res.resume();
      fail();
    });
    req.on('upgrade', (res, socket, head) => {
      if (res.headers['sec-websocket-accept'] !== acceptFor(key)) {
        socket.destroy();
        fail();
        return;
      }
      this.readyState = 1;
      this.peer = new Peer(socket, head, {
        mask: true,
        onText: (text) => this.onmessage?.({ data: text }),
        onClose: (code, reason) => {
          this.readyState = 3;
          this.onclose?.({ code, reason, wasClean: code !== 1006 });
        },
      });
      this.onopen?.({});
      this.peer.start();
    });
    req.end();
  }

  send(text) {
    if (this.readyState !== 1) throw new Error('InvalidStateError: not open');
    this.peer.sendText(String(text));
  }

  close(code, reason) {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    if (this.peer) this.peer.close(code, reason);
  }
}
