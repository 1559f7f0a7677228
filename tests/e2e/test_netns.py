"""The network-namespace plumbing of netns.py: clients in a namespace reach a root-namespace server on the host-side
address and are seen at their own address; set_hosts names resolve (glibc and Go); nothing else is reachable."""
from __future__ import annotations

import http.server
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from netns import NetNs, netns_factory  # noqa: F401  (netns_factory is a fixture)


class RecordingServer:
    """A threaded HTTP server in the root namespace that records (client ip, request line or None) per connection
    and answers every GET with 200 "hello <client ip>" (404 for registry paths)."""

    def __init__(self, bind_ip: str):
        self.seen: list[tuple[str, str | None]] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle(self):
                seen.append((self.client_address[0], None))
                super().handle()

            def do_GET(self):
                seen.append((self.client_address[0], self.path))
                body = f"hello {self.client_address[0]}".encode()
                self.send_response(404 if self.path.startswith("/v2/") else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((bind_ip, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def clients(self) -> set[str]:
        return {ip for ip, _ in self.seen}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory():
    made = []

    def make(bind_ip: str) -> RecordingServer:
        s = RecordingServer(bind_ip)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def curl() -> str:
    path = shutil.which("curl")
    assert path, "curl is required (apt-get install curl)"
    return path


def test_client_in_namespace_is_seen_at_its_own_address(netns_factory, server_factory):
    a, b = netns_factory("a"), netns_factory("b")
    assert len({a.host_ip, a.ns_ip, b.host_ip, b.ns_ip}) == 4
    assert len({a.name, b.name, a.host_veth, b.host_veth}) == 4
    assert all(len(n) <= 15 for n in (a.name, a.host_veth, a.ns_veth))
    for host in (a, b):
        srv = server_factory(host.host_ip)
        out = host.run([curl(), "-sS", "--max-time", "10", f"http://{host.host_ip}:{srv.port}/x"]).stdout
        assert out == f"hello {host.ns_ip}"
        assert srv.clients() == {host.ns_ip}
        # the same from Python in the namespace
        code = (f"import urllib.request; print(urllib.request.urlopen('http://{host.host_ip}:{srv.port}/py',"
                f" timeout=10).read().decode())")
        assert host.run([sys.executable, "-c", code]).stdout.strip() == f"hello {host.ns_ip}"
        assert (host.ns_ip, "/py") in srv.seen


def test_set_hosts_names_resolve_inside(netns_factory, server_factory):
    host = netns_factory("dns")
    srv = server_factory(host.host_ip)
    host.set_hosts({"reg.moat.test": host.host_ip, "other.moat.test": "127.0.0.1"})
    assert host.run(["getent", "hosts", "reg.moat.test"]).stdout.split()[0] == host.host_ip
    assert host.run(["getent", "hosts", "localhost"]).returncode == 0
    out = host.run([curl(), "-sS", "--max-time", "10", f"http://reg.moat.test:{srv.port}/named"]).stdout
    assert out == f"hello {host.ns_ip}" and (host.ns_ip, "/named") in srv.seen
    # the root namespace's /etc/hosts is untouched
    assert "reg.moat.test" not in Path("/etc/hosts").read_text()
    # unknown names fail, and fast (no nameserver reachable from the namespace)
    t = time.monotonic()
    assert host.run(["getent", "hosts", "nosuch.moat.test"], check=False).returncode != 0
    assert time.monotonic() - t < 10


def test_namespace_reaches_nothing_else(netns_factory, server_factory):
    a, b = netns_factory("iso-a"), netns_factory("iso-b")
    loop = server_factory("127.0.0.1")
    other = server_factory(b.host_ip)
    # 127.0.0.1 inside is the namespace's own loopback: nothing listens there
    p = a.run([curl(), "-sS", "--max-time", "5", f"http://127.0.0.1:{loop.port}/"], check=False)
    assert p.returncode == 7, p  # couldn't connect (refused)
    # no route to another pair's /30 (the namespace has only its connected route)
    p = a.run([curl(), "-sS", "--max-time", "5", f"http://{b.host_ip}:{other.port}/"], check=False)
    assert p.returncode == 7, p  # network unreachable
    routes = a.run(["ip", "-4", "route"]).stdout.strip().splitlines()
    assert len(routes) == 1 and "default" not in routes[0], routes
    assert loop.seen == [] and other.seen == []


def test_skopeo_and_podman_run_inside(netns_factory, server_factory):
    host = netns_factory("tools")
    assert "skopeo version" in host.run(["/usr/bin/skopeo", "--version"]).stdout
    assert "podman version" in host.run([shutil.which("podman") or "podman", "--version"]).stdout
    # skopeo (Go) resolves a set_hosts name and connects from the namespace's address; the server is no registry
    srv = server_factory(host.host_ip)
    host.set_hosts({"reg.moat.test": host.host_ip})
    p = host.run(["/usr/bin/skopeo", "inspect", "--tls-verify=false", "--retry-times", "0",
                  f"docker://reg.moat.test:{srv.port}/some/repo:latest"], check=False, timeout=60)
    assert p.returncode != 0
    assert srv.clients() == {host.ns_ip}, (srv.seen, p.stderr)
    assert any(path and path.startswith("/v2/") for _, path in srv.seen), (srv.seen, p.stderr)


def test_close_removes_everything_and_is_idempotent():
    with NetNs.create("ctx") as host:
        assert host.run(["ip", "-o", "link", "show", host.ns_veth]).returncode == 0
        assert Path("/etc/netns", host.name, "hosts").exists()
    host.close()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert host.name not in netns and host.host_veth not in links
    assert not Path("/etc/netns", host.name).exists()
    assert host.host_ip not in subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
