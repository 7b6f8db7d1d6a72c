"""A loopback TCP proxy in front of tether that misbehaves on its first connections, as a load
balancer or a flaky network would: it loses the answer after tether did the work, or answers 502
itself. Later connections are piped through unchanged. Used to see the SDK's retries."""

from __future__ import annotations

import socket
import threading
from typing import List, Optional, Tuple

#: What the proxy does with each connection in turn (then "pipe" for the rest).
DROP_ANSWER = "drop_answer"  # forward the request, wait for tether's answer, close without it
BAD_GATEWAY = "bad_gateway"  # answer 502 without forwarding
PIPE = "pipe"


def _read_request(conn: socket.socket) -> bytes:
    """One HTTP/1.1 request: head, then Content-Length bytes of body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class FlakyProxy:
    def __init__(self, upstream: str, plan: List[str]) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream: Tuple[str, int] = (host, int(port))
        self.plan = list(plan)
        self.seen: List[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._conns: List[socket.socket] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(10)
            self._conns.append(conn)
            mode = self.plan.pop(0) if self.plan else PIPE
            self.seen.append(mode)
            t = threading.Thread(target=self._serve, args=(conn, mode), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket, mode: str) -> None:
        try:
            if mode == BAD_GATEWAY:
                _read_request(conn)
                body = b"<html>502 Bad Gateway</html>"
                conn.sendall(
                    b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\nconnection: close\r\n"
                    + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                return
            up = socket.create_connection(self.upstream, timeout=10)
            self._conns.append(up)
            if mode == DROP_ANSWER:
                up.sendall(_read_request(conn))
                up.recv(65536)  # tether has answered: the work is done, and the answer is lost
                return
            self._pipe(conn, up)
        except OSError:
            pass
        finally:
            conn.close()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        def copy(src: socket.socket, dst: socket.socket) -> None:
            try:
                while True:
                    chunk = src.recv(65536)
                    if not chunk:
                        break
                    dst.sendall(chunk)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        back = threading.Thread(target=copy, args=(b, a), daemon=True)
        back.start()
        copy(a, b)
        back.join(timeout=10)
        b.close()

    def close(self, within: Optional[float] = 5.0) -> None:
        self._stop.set()
        self.sock.close()
        for c in self._conns:
            # shutdown, not only close: it wakes a thread blocked in recv on that socket.
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        for t in self._threads:
            t.join(timeout=within)
