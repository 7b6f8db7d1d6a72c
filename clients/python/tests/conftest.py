"""Live fixtures: the tether binary the test script built (target/debug/tether, or $TETHER_BIN) on a
free loopback port with an api_key, a two-node cluster on a real redis-server, and WebSocket
clients to see what was delivered. Nothing is built here. Every process is stopped however the
test ends, and every wait is bounded."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import pytest
from websockets.asyncio.client import ClientConnection, connect

import tether_push

ROOT = Path(__file__).resolve().parents[3]
API_KEY = "test-key-0123456789"
START_WITHIN = 15.0
#: Bound on any single wait for a frame.
FRAME_WITHIN = 5.0


def binary() -> str:
    path = os.environ.get("TETHER_BIN") or str(ROOT / "target" / "debug" / "tether")
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} not found: build it first with `cargo build --bin tether`", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tether:
    """One tether process; its stderr is drained by a thread so it never blocks on the pipe."""

    def __init__(self, args: Sequence[str]) -> None:
        self.log: List[str] = []
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.proc = subprocess.Popen(
            # A short drain, so stopping a node with sessions open takes no time (unless the test sets one).
            [binary(), "--listen", "127.0.0.1:0", "--api-key", API_KEY,
             *([] if "--shutdown-timeout" in args else ["--shutdown-timeout", "200ms"]), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", ""), "RUST_LOG": "info"},
            text=True,
        )
        threading.Thread(target=self._drain, daemon=True).start()
        self.addr = self._wait_listening()
        self.http = f"http://{self.addr}"
        self.ws = f"ws://{self.addr}/ws"

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))
            self._lines.put(line)
        self._lines.put(None)

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + START_WITHIN
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise RuntimeError("tether logged no listening line in time:\n" + "\n".join(self.log))
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.stop()
                raise RuntimeError("tether exited before listening:\n" + "\n".join(self.log))
            if "tether listening on ws://" in line:
                return line.split("tether listening on ws://", 1)[1].split("/", 1)[0]

    def client(self, **kw: Any) -> tether_push.Client:
        kw.setdefault("api_key", API_KEY)
        kw.setdefault("timeout", 5.0)
        return tether_push.Client(self.http, **kw)

    def async_client(self, **kw: Any) -> tether_push.AsyncClient:
        kw.setdefault("api_key", API_KEY)
        kw.setdefault("timeout", 5.0)
        return tether_push.AsyncClient(self.http, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class Redis:
    """A redis-server on a free loopback port, persisting nothing, in a temp dir."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(exe, os.X_OK):
            pytest.fail("redis-server not found: run scripts/install-test-deps.sh", pytrace=False)
        self.dir = tempfile.mkdtemp(prefix="tether-py-redis-")
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                 "--protected-mode", "no", "--dir", self.dir],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._ping():
                    return
                time.sleep(0.02)
            self.stop()
        raise RuntimeError("redis-server did not come up on any of 5 ports")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def start_tether() -> Iterator[Callable[..., Tether]]:
    """Starts tether processes with extra flags; all are stopped when the test ends."""
    started: List[Tether] = []

    def start(*args: str) -> Tether:
        t = Tether(args)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


@pytest.fixture
def tether(start_tether: Callable[..., Tether]) -> Tether:
    """One node, history off."""
    return start_tether()


@pytest.fixture
def tether_history(start_tether: Callable[..., Tether]) -> Tether:
    """One node keeping the last 50 messages per stream."""
    return start_tether("--history-size", "50")


@pytest.fixture
def redis() -> Iterator[Redis]:
    r = Redis()
    yield r
    r.stop()


@pytest.fixture
def cluster(start_tether: Callable[..., Tether], redis: Redis) -> List[Tether]:
    """Two nodes sharing one redis-server, with history on."""
    common = ["--redis-url", redis.url, "--history-size", "50", "--node-ttl", "2s"]
    return [start_tether(*common, "--node-id", "py-a"), start_tether(*common, "--node-id", "py-b")]


# ---------------------------------------------------------------------- WebSocket side


class Peer:
    """A WebSocket client of tether: its welcome, then the frames it receives."""

    def __init__(self, ws: ClientConnection, welcome: Dict[str, Any]) -> None:
        self.ws = ws
        self.welcome = welcome
        self.session_id: str = welcome["data"]["session_id"]

    async def recv(self, within: float = FRAME_WITHIN) -> Dict[str, Any]:
        return dict(json.loads(await asyncio.wait_for(self.ws.recv(), within)))

    async def recv_type(self, type: str, within: float = FRAME_WITHIN) -> Dict[str, Any]:
        """The next frame of `type`, skipping others (heartbeat acks, presence news)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise asyncio.TimeoutError(f"no {type} frame within {within}s")
            msg = await self.recv(left)
            if msg.get("type") == type:
                return msg

    async def send(self, type: str, data: Any = None) -> None:
        frame: Dict[str, Any] = {"type": type}
        if data is not None:
            frame["data"] = data
        await self.ws.send(json.dumps(frame))

    async def subscribe(self, channel: str) -> Dict[str, Any]:
        await self.send("subscribe", {"channel": channel})
        return await self.recv_type("subscribed")

    async def roundtrip(self) -> None:
        """A heartbeat round trip: everything sent to us before it has arrived after it."""
        await self.send("heartbeat")
        await self.recv_type("heartbeat_ack")

    async def nothing_more(self) -> List[Dict[str, Any]]:
        """Frames that arrive before a heartbeat round trip, other than its ack."""
        await self.send("heartbeat")
        extra: List[Dict[str, Any]] = []
        while True:
            msg = await self.recv()
            if msg.get("type") == "heartbeat_ack":
                return extra
            extra.append(msg)

    async def closed(self, within: float = FRAME_WITHIN) -> Optional[int]:
        """Waits for the server's close; its code."""
        async def drain() -> None:
            try:
                while True:
                    await self.ws.recv()
            except Exception:
                return

        await asyncio.wait_for(drain(), within)
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()


#: The WebSocket clients of the test body that `run` is running, closed when it ends.
_open: List[ClientConnection] = []


async def peer(node: Tether, client_id: str, query: str = "") -> Peer:
    """Connects a WebSocket client as `client_id` and reads its welcome."""
    url = f"{node.ws}?client_id={client_id}{query}"
    ws = await asyncio.wait_for(connect(url, open_timeout=FRAME_WITHIN, ping_interval=None), FRAME_WITHIN)
    _open.append(ws)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), FRAME_WITHIN))
    assert welcome["type"] == "welcome", welcome
    return Peer(ws, welcome)


def run(coro: Any, within: float = 30.0) -> Any:
    """Runs one async test body, bounded in time; its WebSocket clients are closed however it ends,
    so the server's shutdown has nobody to drain."""

    async def bounded() -> Any:
        try:
            return await asyncio.wait_for(coro, within)
        finally:
            conns = list(_open)
            _open.clear()
            if conns:
                await asyncio.wait([asyncio.ensure_future(_close(ws)) for ws in conns], timeout=5)

    return asyncio.run(bounded())


async def _close(ws: ClientConnection) -> None:
    try:
        await asyncio.wait_for(ws.close(), 2)
    except Exception:
        pass
