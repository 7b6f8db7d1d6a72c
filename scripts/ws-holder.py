#!/usr/bin/env python3
"""Holds a few WebSocket sessions open on a tether while something else exercises its HTTP API
(scripts/schemathesis.sh), so listings, presence and pushes see live sessions, not only empty
answers. Standard library only: a bare RFC 6455 client that subscribes, sends a `heartbeat`
every few seconds, discards what arrives and reconnects when a session is closed (the fuzzer
closes them through the API). Runs until killed.

    ws-holder.py HOST:PORT CLIENT_ID[,CLIENT_ID...] CHANNEL
"""
import base64
import json
import os
import socket
import sys
import threading
import time


def frame(text):
    """A masked text frame (clients must mask), for the short messages sent here."""
    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def session(addr, client_id, channel):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws?client_id={client_id} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise OSError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    sock.sendall(frame(json.dumps({"type": "subscribe", "data": {"channel": channel}})))
    sock.settimeout(1)
    last = time.monotonic()
    while True:
        if time.monotonic() - last > 5:
            sock.sendall(frame('{"type":"heartbeat"}'))
            last = time.monotonic()
        try:
            if not sock.recv(65536):
                return
        except socket.timeout:
            continue


def hold(addr, client_id, channel):
    while True:
        try:
            session(addr, client_id, channel)
        except OSError:
            pass
        time.sleep(0.2)


def main():
    addr, ids, channel = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
    for client_id in ids:
        threading.Thread(target=hold, args=(addr, client_id, channel), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
