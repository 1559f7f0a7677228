"""A syslog-over-TLS collector for the SIEM sink tests: RFC 5425 (TLS, octet-counting framing `LEN SP MSG`)
carrying RFC 5424 messages, with a certificate from its own CA made by `openssl` at start. It records every
message, parsed, and can stop (port closed, connections closed after reading what had arrived) and start again on
the same port.

    with SyslogReceiver(tmp_path) as rx:
        ...                                        # rx.address is 127.0.0.1:<port>, rx.ca_file its CA
        rx.wait_for(lambda msgs: len(msgs) >= 3)
        rx.messages[0].sd["recordId"], rx.messages[0].json()
"""
from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SyslogMessage:
    pri: int
    version: str
    timestamp: str
    hostname: str
    app_name: str
    proc_id: str
    msg_id: str
    sd_id: str
    sd: dict
    msg: str
    raw: str
    at: float = field(default_factory=time.time)

    def json(self):
        return json.loads(self.msg)

    @property
    def facility(self) -> int:
        return self.pri // 8

    @property
    def severity(self) -> int:
        return self.pri % 8


def parse_rfc5424(raw: str) -> SyslogMessage:
    """`<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID k="v" …] MSG`, one SD-ELEMENT (as Moat sends)."""
    assert raw.startswith("<"), raw[:80]
    close = raw.index(">")
    pri = int(raw[1:close])
    head = raw[close + 1:].split(" ", 6)
    version, timestamp, hostname, app, procid, msgid, rest = head
    assert rest.startswith("["), f"structured data expected: {rest[:80]}"
    # The SD-ELEMENT: SD-ID, then k="v" pairs whose values escape `"`, `\` and `]` with a backslash.
    i = 1
    sd_id = ""
    while rest[i] not in " ]":
        sd_id += rest[i]
        i += 1
    sd = {}
    while rest[i] == " ":
        i += 1
        eq = rest.index("=", i)
        name = rest[i:eq]
        assert rest[eq + 1] == '"'
        j = eq + 2
        value = ""
        while rest[j] != '"':
            if rest[j] == "\\" and rest[j + 1] in '"\\]':
                j += 1
            value += rest[j]
            j += 1
        sd[name] = value
        i = j + 1
    assert rest[i] == "]", rest[i:i + 20]
    msg = rest[i + 1:]
    if msg.startswith(" "):
        msg = msg[1:]
    return SyslogMessage(pri, version, timestamp, hostname, app, procid, msgid, sd_id, sd, msg, raw)


def make_ca_and_leaf(workdir: Path, name: str = "localhost") -> tuple[Path, Path, Path]:
    """A CA and a leaf for `name` and 127.0.0.1 it signed, with openssl; returns (ca.pem, leaf.pem, leaf.key)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca_key, ca = workdir / "ca.key", workdir / "ca.pem"
    key, csr, leaf, ext = workdir / "leaf.key", workdir / "leaf.csr", workdir / "leaf.pem", workdir / "leaf.ext"

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(ca_key),
        "-out", str(ca), "-days", "2", "-subj", "/CN=Moat test syslog CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
        "-out", str(csr), "-subj", f"/CN={name}")
    ext.write_text(f"subjectAltName=DNS:{name},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(leaf), "-days", "2", "-extfile", str(ext))
    return ca, leaf, key


class SyslogReceiver:
    """Records RFC 5424 messages from TLS connections on 127.0.0.1. `stop()` closes the port and every connection
    (after reading what has arrived); `start()` opens the port again."""

    def __init__(self, workdir: Path, port: int = 0):
        self.workdir = Path(workdir)
        self.ca_file, leaf, key = make_ca_and_leaf(self.workdir / "syslog-tls")
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(leaf), str(key))
        self.messages: list[SyslogMessage] = []
        self.connections = 0
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.port = port or _free_port()
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self):
        self._stopping = threading.Event()
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(16)
        ls.settimeout(0.2)
        self._listener = ls
        t = threading.Thread(target=self._accept, args=(ls, self._stopping), daemon=True)
        t.start()
        self._threads = [t]

    def _accept(self, ls: socket.socket, stopping: threading.Event):
        while not stopping.is_set():
            try:
                s, _ = ls.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(s, stopping), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, raw: socket.socket, stopping: threading.Event):
        try:
            raw.settimeout(10)
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError) as e:
            self.errors.append(f"handshake: {e}")
            raw.close()
            return
        with self._cond:
            self.connections += 1
        tls.settimeout(0.1)
        buf = b""
        try:
            while True:
                try:
                    chunk = tls.recv(65536)
                except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
                    # Nothing pending: the moment to stop, having read all that had arrived.
                    if stopping.is_set():
                        break
                    continue
                if not chunk:
                    break
                buf += chunk
                buf = self._frames(buf)
        except (OSError, ssl.SSLError) as e:
            self.errors.append(f"read: {e}")
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def _frames(self, buf: bytes) -> bytes:
        while True:
            sp = buf.find(b" ")
            if sp < 0:
                return buf
            length = int(buf[:sp])
            if len(buf) < sp + 1 + length:
                return buf
            raw = buf[sp + 1:sp + 1 + length].decode("utf-8")
            buf = buf[sp + 1 + length:]
            m = parse_rfc5424(raw)
            with self._cond:
                self.messages.append(m)
                self._cond.notify_all()

    def stop(self):
        if self._listener is None:
            return
        self._stopping.set()
        self._listener.close()
        self._listener = None
        for t in self._threads:
            t.join(5)

    def record_ids(self) -> list[str]:
        with self._cond:
            return [m.sd.get("recordId") for m in self.messages]

    def wait_for(self, predicate, timeout: float = 30.0) -> list[SyslogMessage]:
        deadline = time.time() + timeout
        with self._cond:
            while not predicate(list(self.messages)):
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError(f"syslog receiver: condition not met in {timeout}s; got "
                                         f"{len(self.messages)} message(s); errors: {self.errors[-5:]}; last: "
                                         f"{[m.raw[:300] for m in self.messages[-6:]]}")
                self._cond.wait(min(left, 0.5))
            return list(self.messages)

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
