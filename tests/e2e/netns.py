"""Test hosts at their own network addresses: one Linux network namespace per host, linked to the root namespace
by a veth pair on a private /30 in the RFC 2544 benchmarking range 198.18.0.0/15.

    root namespace (servers: moat, test HTTP servers)            namespace <name> (clients: curl, skopeo, podman)
    ------------------------------------------------            ---------------------------------------------------
    <name>h   host_ip = 198.18.x.y+1/30   <== veth pair ==>   <name>n   ns_ip = 198.18.x.y+2/30
                                                                lo (up; its own 127.0.0.1, not the root one)

A server in the root namespace bound to `host.host_ip` sees a client run with `host.run([...])` as coming from
`host.ns_ip`. The namespace has no default route, only the connected /30, so its clients can reach nothing but the
host-side address of their own pair (and their own loopback). IPv6 is disabled on both veth ends.

`host.set_hosts({"reg.moat.test": host.host_ip})` writes /etc/netns/<name>/hosts; `ip netns exec` bind-mounts every
file in /etc/netns/<name>/ over the file of the same name in /etc (in a private mount namespace), so glibc tools
(getent, curl) and Go programs (skopeo, podman) inside the namespace resolve those names. The namespace also gets an
/etc/netns/<name>/resolv.conf without nameservers (resolvers then try 127.0.0.1:53 of the namespace, which refuses at
once), so unknown names fail fast and no DNS query leaves the namespace.

Names are `mt<pid>-<n>` (namespace), `mt<pid>-<n>h` / `mt<pid>-<n>n` (veth ends): at most 15 characters, unique per
process. Debris of a crashed run (namespaces, veths, /etc/netns dirs whose pid is gone, or that carry our own pid but
are not ours) is removed before a new host is made. Addresses: the first /30 of 198.18.0.0/15 that no root-namespace
address is in, picked under a file lock so parallel test processes don't collide.

Use: `from netns import netns_factory` in a test module (pytest picks up imported fixtures), then
`host = netns_factory("skopeo")`; every host is closed at the end of the test. Or `with NetNs.create("x") as host:`.
Requires root and iproute2 (`ip`); fails (not skips) without them.
"""
from __future__ import annotations

import atexit
import fcntl
import ipaddress
import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

NET = ipaddress.ip_network("198.18.0.0/15")
ETC_NETNS = Path("/etc/netns")
LOCK_FILE = "/run/moat-e2e-netns.lock"
NAME_RE = re.compile(r"^mt(\d+)-(\d+)[hn]?$")
DEFAULT_TIMEOUT = 180

_seq = itertools.count()
_live: dict[str, "NetNs"] = {}


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def _require_env() -> None:
    assert shutil.which("ip"), "network-namespace tests need `ip` from iproute2 (apt-get install iproute2)"
    assert os.geteuid() == 0, "network-namespace tests must run as root (ip netns add / veth pairs need CAP_NET_ADMIN)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _remove(name: str) -> None:
    """Deletes namespace `name` (which destroys the veth end inside it and so the pair), its veths, /etc/netns/name."""
    _ip("netns", "del", name, check=False)
    for veth in (name + "h", name + "n"):
        if Path("/sys/class/net", veth).exists():
            _ip("link", "del", veth, check=False)
    shutil.rmtree(ETC_NETNS / name, ignore_errors=True)


def cleanup_stale() -> None:
    """Removes debris of earlier runs: our namespaces/veths/etc dirs whose pid is dead, or with our pid but not live."""
    names = {line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()}
    for line in _ip("-o", "link").stdout.splitlines():
        names.add(line.split(":")[1].strip().split("@")[0])
    if ETC_NETNS.is_dir():
        names.update(p.name for p in ETC_NETNS.iterdir())
    for n in names:
        m = NAME_RE.match(n)
        if not m:
            continue
        base = n if n[-1].isdigit() else n[:-1]
        pid = int(m.group(1))
        if base not in _live and (pid == os.getpid() or not _pid_alive(pid)):
            _remove(base)


def _free_slot() -> int:
    """Index of the first /30 in NET that no root-namespace IPv4 address lies in."""
    used = set()
    for m in re.finditer(r"\binet (\S+)/\d+", _ip("-o", "-4", "addr", "show").stdout):
        a = ipaddress.ip_address(m.group(1))
        if a in NET:
            used.add((int(a) - int(NET.network_address)) // 4)
    return next(i for i in range(NET.num_addresses // 4) if i not in used)


class NetNs:
    """One test host: a network namespace with a veth pair to the root namespace (see the module docstring)."""

    def __init__(self, name: str, tag: str, host_ip: str, ns_ip: str):
        self.name, self.tag, self.host_ip, self.ns_ip = name, tag, host_ip, ns_ip
        self.host_veth, self.ns_veth = name + "h", name + "n"
        self.closed = False

    @classmethod
    def create(cls, tag: str = "") -> "NetNs":
        """Makes a namespace with a veth pair on the next free /30; `tag` is for humans (kept as the veth alias)."""
        _require_env()
        name = f"mt{os.getpid()}-{next(_seq)}"
        with open(LOCK_FILE, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            cleanup_stale()
            _remove(name)
            base = int(NET.network_address) + 4 * _free_slot()
            host = cls(name, tag, str(ipaddress.ip_address(base + 1)), str(ipaddress.ip_address(base + 2)))
            _live[name] = host
            try:
                _ip("netns", "add", name)
                _ip("link", "add", host.host_veth, "type", "veth", "peer", "name", host.ns_veth, "netns", name)
                _ip("link", "set", host.host_veth, "alias", f"moat e2e {tag}"[:60])
                Path(f"/proc/sys/net/ipv6/conf/{host.host_veth}/disable_ipv6").write_text("1")
                _ip("addr", "add", f"{host.host_ip}/30", "dev", host.host_veth)
                _ip("link", "set", host.host_veth, "up")
                host.run(["sysctl", "-qw", f"net.ipv6.conf.{host.ns_veth}.disable_ipv6=1"])
                _ip("-n", name, "addr", "add", f"{host.ns_ip}/30", "dev", host.ns_veth)
                _ip("-n", name, "link", "set", host.ns_veth, "up")
                _ip("-n", name, "link", "set", "lo", "up")
                host.set_hosts({})
            except BaseException:
                host.close()
                raise
        return host

    def set_hosts(self, mapping: dict[str, str]) -> None:
        """Writes the namespace's /etc/hosts (name -> IP, plus localhost) and a resolv.conf without nameservers."""
        d = ETC_NETNS / self.name
        d.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        lines += [f"{ip} {host}" for host, ip in mapping.items()]
        (d / "hosts").write_text("\n".join(lines) + "\n")
        (d / "resolv.conf").write_text("# moat e2e: no nameserver, unknown names fail fast\n"
                                       "options timeout:1 attempts:1\n")

    def run(self, cmd: list[str], timeout: float = DEFAULT_TIMEOUT, check: bool = True, env: dict | None = None,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Runs `cmd` inside the namespace (ip netns exec), output captured as text; `env` is added to os.environ."""
        assert not self.closed, f"namespace {self.name} is closed"
        full = ["ip", "netns", "exec", self.name, *map(str, cmd)]
        p = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input,
                           env=None if env is None else {**os.environ, **env})
        if check and p.returncode != 0:
            raise AssertionError(f"command failed ({p.returncode}) in netns {self.name}: {' '.join(full)}\n"
                                 f"--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}")
        return p

    def close(self) -> None:
        """Deletes the namespace, the veth pair and /etc/netns/<name>; safe to call more than once."""
        if self.closed:
            return
        _remove(self.name)
        self.closed = True
        _live.pop(self.name, None)

    def __enter__(self) -> "NetNs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NetNs({self.name!r}, tag={self.tag!r}, host_ip={self.host_ip}, ns_ip={self.ns_ip})"


@atexit.register
def _close_all() -> None:
    for host in list(_live.values()):
        host.close()


@pytest.fixture
def netns_factory():
    """`netns_factory(tag) -> NetNs`; all hosts made are closed at the end of the test."""
    made: list[NetNs] = []

    def make(tag: str = "") -> NetNs:
        host = NetNs.create(tag)
        made.append(host)
        return host

    yield make
    for host in reversed(made):
        host.close()
