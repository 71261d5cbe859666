"""A real HTTP proxy on 127.0.0.1 that injects faults in front of an object-store emulator.

Every request is forwarded to the upstream server, except those that the schedule picks:
they get a ``503 Service Unavailable`` or have their connection reset (``SO_LINGER`` 0,
so the client reads ``ECONNRESET``), as a real object store does under load. The
schedule is deterministic (every ``every``-th request, alternating 503 and reset) so a
test can count what it injected.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, every: int, faults: tuple[str, ...]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.every = every
        self.faults = faults
        self.lock = threading.Lock()
        self.requests = 0
        self.injected: dict[str, int] = {f: 0 for f in faults}

    def pick(self) -> str | None:
        with self.lock:
            self.requests += 1
            n = self.requests
            if self.every <= 0 or n % self.every:
                return None
            fault = self.faults[(n // self.every) % len(self.faults)]
            self.injected[fault] += 1
            return fault


class _Handler(BaseHTTPRequestHandler):
    server: _Proxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _forward(self) -> None:
        body = self._body()
        fault = self.server.pick()
        if fault == "reset":
            self._reset()
            return
        if fault == "503":
            payload = b'{"error": {"code": 503, "message": "injected by the test proxy"}}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        host, port = self.server.upstream
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            headers["Host"] = f"{host}:{port}"
            if body or self.command in ("POST", "PUT", "PATCH"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _forward


@contextmanager
def fault_proxy(
    upstream: str, *, every: int = 4, faults: tuple[str, ...] = ("503", "reset")
) -> Iterator[_Proxy]:
    """Run the proxy for ``upstream`` (``http://host:port``); yields it (``.url``, counts)."""
    proxy = _Proxy(upstream, every, faults)
    thread = threading.Thread(target=proxy.serve_forever, name="fault-proxy", daemon=True)
    thread.start()
    proxy.url = f"http://127.0.0.1:{proxy.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)
