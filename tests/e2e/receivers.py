"""Receivers the monitoring tests start on loopback: an HTTP receiver (ACR webhooks, action-group webhooks, the HTTP
log sink) that records every request, and can be told to answer errors, hang, or stop and start again on the same
port. (The syslog-over-TLS receiver lives beside it in the sinks' tests.)

    with HttpReceiver() as rx:
        ...                                   # rx.url is http://127.0.0.1:<port>/
        rx.wait_for(lambda reqs: len(reqs) >= 1, timeout=30)
        rx.requests[0].json()
"""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    headers: dict
    body: bytes
    at: float = field(default_factory=time.time)

    def json(self):
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


class HttpReceiver:
    """Records requests; answers `status` (200 unless told otherwise). `stop()` closes the port (connections are
    refused), `start()` opens it again on the same port."""

    def __init__(self, port: int = 0):
        self.requests: list[Received] = []
        self.status = 200
        self.delay = 0.0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self.port = port or _free_port()
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self):
        rx = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if rx.delay:
                    time.sleep(rx.delay)
                status = rx.status
                if 200 <= status < 300:
                    with rx._cond:
                        rx.requests.append(Received(self.command, self.path, dict(self.headers.items()), body))
                        rx._cond.notify_all()
                reply = b'{"ok":true}' if 200 <= status < 300 else b'{"error":"told to fail"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_POST = do_PUT = do_GET = _handle

            def log_message(self, *a):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, predicate, timeout: float = 30.0) -> list[Received]:
        """Waits until `predicate(requests)` holds; returns the requests. Fails with what arrived otherwise."""
        deadline = time.time() + timeout
        with self._cond:
            while not predicate(list(self.requests)):
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError(f"receiver: condition not met in {timeout}s; got {len(self.requests)} "
                                         f"request(s): {[r.path for r in self.requests][:20]}")
                self._cond.wait(min(left, 0.5))
            return list(self.requests)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
