// The npm package as its users load it: through the package name and its `exports`, in a
// server-side rendering process that has no browser globals (importing must touch none), and
// in Node with the runtime's own WebSocket (Node 22, or Node 20 with --experimental-websocket)
// against a real socket on 127.0.0.1. Each runs in a child process, so globals stay clean.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import { startServer } from './loopback-ws.mjs';

const pkgDir = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const pkg = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
const nodeMajor = Number(process.versions.node.split('.')[0]);

/** Runs `source` as an ES module in a child node inside the package; resolves with its output. */
function runModule(source, { flags = [], env = {}, ms = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...flags, '--input-type=module', '-e', source], {
      cwd: pkgDir,
      env: { PATH: process.env.PATH, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b) => (stdout += b));
    child.stderr.on('data', (b) => (stderr += b));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child timed out; stderr: ${stderr}`));
    }, ms);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test('package.json: ESM, exports with types, no runtime dependencies, every listed file exists', () => {
  assert.equal(pkg.type, 'module');
  assert.equal(pkg.exports['.'].types, './tether.d.ts');
  assert.equal(pkg.exports['.'].default, './tether.js');
  assert.equal(pkg.types, './tether.d.ts');
  assert.equal(pkg.dependencies, undefined);
  assert.ok(pkg.license);
  for (const f of pkg.files) assert.ok(existsSync(path.join(pkgDir, f)), `${f} is listed in files`);
  for (const f of ['tether.js', 'tether.d.ts']) assert.ok(pkg.files.includes(f), `${f} is published`);
});

test('server-side rendering: importing touches no browser global', async () => {
  // Every global a browser module might reach for throws when read during the import; then a
  // constructor call that names its WebSocket works with those globals absent.
  const source = `
    const touched = [];
    for (const name of ['window', 'document', 'location', 'navigator', 'localStorage', 'sessionStorage', 'self', 'WebSocket']) {
      Object.defineProperty(globalThis, name, { configurable: true, get() { touched.push(name); throw new Error('touched ' + name); } });
    }
    const mod = await import('@tether/client');
    const names = Object.keys(mod).sort();
    // As in a real server render, the browser globals are simply absent when a client is made.
    for (const name of ['window', 'document', 'location', 'navigator', 'localStorage', 'sessionStorage', 'self', 'WebSocket']) {
      Object.defineProperty(globalThis, name, { configurable: true, value: undefined });
    }
    class FakeSocket { constructor() { this.readyState = 0; } send() {} close() {} }
    const c = new mod.TetherClient('ws://127.0.0.1:9/ws', { clientId: 'ssr', autoConnect: false, WebSocket: FakeSocket });
    console.log(JSON.stringify({ names, touched, status: c.status, def: mod.default === mod.TetherClient }));
  `;
  const { code, stdout, stderr } = await runModule(source);
  assert.equal(code, 0, stderr);
  const out = JSON.parse(stdout);
  assert.deepEqual(out.touched, []);
  assert.equal(out.status, 'closed');
  assert.equal(out.def, true);
  for (const n of ['TetherClient', 'backoffDelay', 'jwtExpiry', 'parsePosition', 'DEFAULT_BACKOFF', 'default']) {
    assert.ok(out.names.includes(n), `exports ${n}`);
  }
});

test('server-side rendering without any WebSocket: a clear TypeError at construction, not at import', async () => {
  const source = `
    Object.defineProperty(globalThis, 'WebSocket', { configurable: true, value: undefined });
    const { TetherClient } = await import('@tether/client');
    try { new TetherClient('ws://127.0.0.1:9/ws', { autoConnect: false }); console.log('constructed'); }
    catch (e) { console.log(e.constructor.name + ': ' + e.message); }
  `;
  const { code, stdout, stderr } = await runModule(source);
  assert.equal(code, 0, stderr);
  assert.match(stdout, /^TypeError: .*options\.WebSocket/);
});

test("Node's built-in WebSocket: the default constructor connects, receives and closes", async (t) => {
  const server = await startServer();
  t.after(() => server.close());
  const source = `
    const { TetherClient } = await import('@tether/client');
    if (typeof globalThis.WebSocket !== 'function') { console.log('no built-in WebSocket'); process.exit(3); }
    const client = new TetherClient(process.env.URL, { clientId: 'node-builtin', channels: ['news'] });
    const fail = setTimeout(() => { console.log('timeout'); process.exit(4); }, 8000);
    client.onStatus((s) => console.log(JSON.stringify({ status: s.status, code: s.code ?? null })));
    client.on('notify', (m) => {
      console.log(JSON.stringify({ notify: m.data, seq: m.seq }));
      client.close(1000, 'done');
      clearTimeout(fail);
    });
  `;
  const flags = nodeMajor < 22 ? ['--experimental-websocket', '--no-warnings'] : [];
  const run = runModule(source, { flags, env: { URL: server.url } });
  const conn = await server.connection(0, 8000);
  assert.equal(conn.param('client_id'), 'node-builtin');
  conn.welcome();
  assert.deepEqual((await conn.receive('subscribe')).data, { channel: 'news' });
  conn.send({ type: 'notify', data: { text: 'hi' } });
  const closed = await conn.closed;
  assert.equal(closed.code, 1000);
  const { code, stdout, stderr } = await run;
  assert.equal(code, 0, `${stdout}\n${stderr}`);
  const lines = stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines, [
    { status: 'connecting', code: null },
    { status: 'open', code: null },
    { notify: { text: 'hi' } },
    { status: 'closed', code: 1000 },
  ]);
});
