"""End-to-end harness: runs the real `moat` binary (MOAT_BIN) on a free 127.0.0.1 port with a temp data dir.

Fixtures:
  moat        -- an HTTPS server (its own CA at <data dir>/tls/ca.pem), function-scoped
  moat_http   -- the same with --insecure-http
  moat_factory-- make more servers (custom env / flags); all are torn down at the end of the test

Each server object (`MoatServer`) has: base_url, login_server, data_dir, admin_password, ca_path, https,
restart(), kill9(), start(), stop(), client(), audit(), moat() (runs a `moat` sub-command on its data dir).

Helpers: make_oci_layout() builds an OCI image layout in Python; get_token() fetches a bearer token; Client wraps
requests with per-scope tokens and the usual push/pull steps.

Management plane: sp_create() + Arm (an SP's ARM session); private endpoints with create_private_endpoint() (on the
next free 127.0.0.x of that server, next_pe_address()), approve_connection()/reject_connection(), Arm's
endpoint_request()/connections()/set_connection_state()/delete_connection(), protect_registry() (endpoint, then
exports off), and export_invariant_violation() (exports disabled => Premium, public access off, an approved
connection).
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import tempfile
import threading
import time
import types
import urllib.parse
from pathlib import Path

import pytest
import requests
import requests.adapters
import urllib3

urllib3.disable_warnings()

REPO_ROOT = Path(__file__).resolve().parents[2]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

ALL_MANIFEST_TYPES = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST,
                                "application/vnd.docker.distribution.manifest.list.v2+json"])

SUBPROCESS_TIMEOUT = 180


def moat_bin() -> str:
    b = os.environ.get("MOAT_BIN")
    if not b:
        target = os.environ.get("CARGO_TARGET_DIR") or str(REPO_ROOT / "target")
        b = os.path.join(target, "release", "moat")
    if not os.path.isabs(b):
        b = str(REPO_ROOT / b)
    return b


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, timeout=SUBPROCESS_TIMEOUT, check=True, env=None, input=None, cwd=None):
    """Runs a command with a timeout, captures output, and fails with both streams shown."""
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, input=input, cwd=cwd)
    if check and p.returncode != 0:
        raise AssertionError(f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n"
                             f"--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}")
    return p


def require_tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"required tool '{name}' is not installed (scripts/test installs it)"
    return path


# ------------------------------------------------------------------------------------------------ OCI layouts

def make_layer(files: dict[str, bytes]) -> tuple[bytes, bytes]:
    """Returns (gzipped tar, uncompressed tar) of `files`, deterministic (mtime=0, uid/gid 0)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 0
            ti.mode = 0o644
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            tf.addfile(ti, io.BytesIO(data))
    tar = raw.getvalue()
    return gzip.compress(tar, compresslevel=6, mtime=0), tar


class Image:
    """A built image: blobs by digest, the config and manifest bytes."""

    def __init__(self, layers, config_bytes, manifest_bytes, media_type=OCI_MANIFEST):
        self.layers = layers  # list of (digest, gz bytes)
        self.config_bytes = config_bytes
        self.config_digest = sha256(config_bytes)
        self.manifest_bytes = manifest_bytes
        self.manifest_digest = sha256(manifest_bytes)
        self.media_type = media_type

    @property
    def blobs(self) -> dict[str, bytes]:
        d = {dg: b for dg, b in self.layers}
        d[self.config_digest] = self.config_bytes
        return d

    @property
    def layer_digests(self) -> list[str]:
        return [d for d, _ in self.layers]


def build_image(n_layers: int = 2, seed: str | None = None, layer_size: int = 1024,
                docker: bool = False, extra_config: dict | None = None) -> Image:
    """Builds an image with `n_layers` gzip layers of random-ish content (distinct per seed)."""
    seed = seed or secrets.token_hex(8)
    layers, diff_ids = [], []
    for i in range(n_layers):
        content = hashlib.sha256(f"{seed}/{i}".encode()).digest() * (layer_size // 32 + 1)
        content = content[:layer_size] + os.urandom(16)
        gz, tar = make_layer({f"layer{i}/file-{seed}.txt": content})
        layers.append((sha256(gz), gz))
        diff_ids.append(sha256(tar))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/layer0/file.txt"], "Labels": {"moat.test.seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"moat e2e layer {i}"} for i in range(n_layers)],
    }
    if extra_config:
        config.update(extra_config)
    config_bytes = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    mt = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt,
        "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                   "digest": sha256(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": DOCKER_LAYER if docker else OCI_LAYER_GZIP, "digest": d, "size": len(b)}
                   for d, b in layers],
    }
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    return Image(layers, config_bytes, manifest_bytes, mt)


def write_oci_layout(path, image: Image, tag: str = "latest") -> Path:
    """Writes `image` as an OCI image layout at `path` (skopeo: oci:<path>:<tag>)."""
    path = Path(path)
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for dg, data in list(image.blobs.items()) + [(image.manifest_digest, image.manifest_bytes)]:
        (blobs / dg.split(":", 1)[1]).write_bytes(data)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": image.media_type,
            "digest": image.manifest_digest,
            "size": len(image.manifest_bytes),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }
    (path / "index.json").write_text(json.dumps(index))
    return path


def make_oci_layout(path, n_layers: int = 2, tag: str = "latest", **kw) -> Image:
    img = build_image(n_layers=n_layers, **kw)
    write_oci_layout(path, img, tag)
    return img


def read_oci_layout_manifest(path, tag: str | None = None) -> tuple[str, bytes]:
    """Returns (digest, bytes) of the manifest tagged `tag` (or the only one) in an OCI layout."""
    path = Path(path)
    index = json.loads((path / "index.json").read_text())
    descs = index["manifests"]
    if tag is not None:
        descs = [d for d in descs if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    assert len(descs) == 1, index
    dg = descs[0]["digest"]
    data = (path / "blobs" / "sha256" / dg.split(":", 1)[1]).read_bytes()
    assert sha256(data) == dg
    return dg, data


# ------------------------------------------------------------------------------------------------ auth + client

class SNIAdapter(requests.adapters.HTTPAdapter):
    """Connects to an address but sends `server_hostname` as TLS SNI and checks the certificate against it, the
    way a client that resolved NAME.localhost to that address would; optionally from a source address."""

    def __init__(self, server_hostname: str, source_ip: str | None = None):
        self._sni = server_hostname
        self._source = source_ip
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["server_hostname"] = self._sni
        kwargs["assert_hostname"] = self._sni
        if self._source:
            kwargs["source_address"] = (self._source, 0)
        return super().init_poolmanager(*args, **kwargs)


def make_session(base_url: str, host: str | None = None, verify=True) -> requests.Session:
    """A requests session; with `host` (NAME.localhost:PORT) over HTTPS it sends that name as SNI."""
    s = requests.Session()
    s.trust_env = False  # no proxies, and REQUESTS_CA_BUNDLE must not override our CA
    s.verify = verify
    if host and base_url.startswith("https://"):
        s.mount(base_url + "/", SNIAdapter(host.rsplit(":", 1)[0]))
    return s


def get_token(base_url: str, service: str, scopes, user: str = "admin", password: str | None = None,
              host: str | None = None, verify=True, session: requests.Session | None = None) -> str:
    """GET /oauth2/token?service=..&scope=.. with basic auth; returns the token (checks both fields)."""
    if isinstance(scopes, str):
        scopes = [scopes]
    headers = {"Host": host} if host else {}
    params = [("service", service)] + [("scope", s) for s in scopes]
    auth = (user, password) if password is not None else None
    session = session or make_session(base_url, host, verify)
    r = session.get(base_url + "/oauth2/token", params=params, auth=auth, headers=headers, verify=verify,
                    timeout=30)
    assert r.status_code == 200, f"token request failed: {r.status_code} {r.text[:500]}"
    body = r.json()
    assert body.get("access_token") and body.get("token"), body
    assert body["access_token"] == body["token"], "access_token and token must carry the same token"
    return body["token"]


def repo_scope(repo: str, actions: str = "pull,push,delete") -> str:
    return f"repository:{repo}:{actions}"


class Client:
    """Raw OCI Distribution client with explicit bearer tokens (fetched per set of scopes and cached)."""

    def __init__(self, server: "MoatServer", host: str | None = None, user: str = "admin",
                 password: str | None = None):
        self.server = server
        self.host = host  # Host header override (another registry's login server)
        self.service = host or server.login_server
        self.user = user
        self.password = server.admin_password if password is None else password
        self.session = make_session(server.base_url, host, server.verify)
        self._tokens: dict[tuple, str] = {}

    @property
    def base(self) -> str:
        return self.server.base_url

    def reset(self):
        self._tokens.clear()
        self.session = make_session(self.server.base_url, self.host, self.server.verify)

    def token(self, *scopes: str) -> str:
        key = tuple(sorted(scopes))
        if key not in self._tokens:
            self._tokens[key] = get_token(self.base, self.service, list(scopes), self.user, self.password,
                                          host=self.host, verify=self.server.verify, session=self.session)
        return self._tokens[key]

    def headers_for(self, scopes, extra=None) -> dict:
        h = {}
        if self.host:
            h["Host"] = self.host
        if scopes:
            h["Authorization"] = "Bearer " + self.token(*scopes)
        if extra:
            h.update(extra)
        return h

    def url(self, path: str) -> str:
        if path.startswith("http://") or path.startswith("https://"):
            return path
        return urllib.parse.urljoin(self.base + "/", path)

    def request(self, method: str, path: str, repo: str | None = None, scopes=None, auth: bool = True,
                headers=None, **kw) -> requests.Response:
        if scopes is None:
            scopes = [repo_scope(repo)] if (repo and auth) else []
        if not auth:
            scopes = []
        kw.setdefault("timeout", 60)
        kw.setdefault("allow_redirects", False)
        return self.session.request(method, self.url(path), headers=self.headers_for(scopes, headers), **kw)

    # -- blobs
    def start_upload(self, repo: str, **kw) -> requests.Response:
        return self.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo, **kw)

    def push_blob(self, repo: str, data: bytes, digest: str | None = None) -> str:
        digest = digest or sha256(data)
        r = self.start_upload(repo)
        assert r.status_code == 202, f"POST upload: {r.status_code} {r.text[:300]}"
        loc = r.headers["Location"]
        sep = "&" if "?" in loc else "?"
        r = self.request("PUT", f"{loc}{sep}digest={digest}", repo=repo, data=data,
                         headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, f"PUT upload: {r.status_code} {r.text[:300]}"
        assert r.headers.get("Docker-Content-Digest") in (None, digest)
        return digest

    def head_blob(self, repo: str, digest: str, **kw) -> requests.Response:
        return self.request("HEAD", f"/v2/{repo}/blobs/{digest}", repo=repo, **kw)

    def get_blob(self, repo: str, digest: str, **kw) -> requests.Response:
        return self.request("GET", f"/v2/{repo}/blobs/{digest}", repo=repo, allow_redirects=True, **kw)

    # -- manifests
    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str = OCI_MANIFEST,
                     **kw) -> requests.Response:
        return self.request("PUT", f"/v2/{repo}/manifests/{ref}", repo=repo, data=body,
                            headers={"Content-Type": media_type}, **kw)

    def get_manifest(self, repo: str, ref: str, accept: str = ALL_MANIFEST_TYPES, method="GET",
                     **kw) -> requests.Response:
        return self.request(method, f"/v2/{repo}/manifests/{ref}", repo=repo, headers={"Accept": accept}, **kw)

    def push_image(self, repo: str, image: Image, tag: str | None = None) -> requests.Response:
        for dg, data in image.blobs.items():
            self.push_blob(repo, data, dg)
        r = self.put_manifest(repo, tag or image.manifest_digest, image.manifest_bytes, image.media_type)
        assert r.status_code == 201, f"PUT manifest: {r.status_code} {r.text[:500]}"
        return r

    def tags(self, repo: str) -> list[str]:
        r = self.request("GET", f"/v2/{repo}/tags/list", repo=repo)
        assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
        return r.json().get("tags") or []


def client_via(server, address: str, host: str | None = None, source: str | None = None) -> Client:
    """A Client connected to SCHEME://ADDRESS:PORT (a private endpoint's listener, or another public listener) with
    `host` (default: the server's own login server) as Host, token service and TLS name, optionally from `source`."""
    host = host or server.login_server
    base = f"{server.scheme}://{address}:{server.port}"
    shim = types.SimpleNamespace(base_url=base, login_server=server.login_server,
                                 admin_password=server.admin_password, verify=server.verify)
    c = Client(shim, host=host)
    s = requests.Session()
    s.trust_env = False
    s.verify = server.verify
    s.mount(base + "/", SNIAdapter(host.rsplit(":", 1)[0], source))
    c.session = s
    return c


class RawResponse:
    """Enough of requests.Response for assert_oci_error, from an http.client response."""

    def __init__(self, method, url, resp):
        self.status_code = resp.status
        self.headers = requests.structures.CaseInsensitiveDict(resp.getheaders())
        self.content = resp.read()
        self.text = self.content.decode("utf-8", "replace")
        self.request = types.SimpleNamespace(method=method, url=url)

    def json(self):
        return json.loads(self.content)


def raw_request(server, method: str, path: str, headers: dict, body: bytes, host: str | None = None,
                timeout: float = 60) -> RawResponse:
    """Sends a request with http.client and reads the answer even when the server answers (and closes) before
    the whole body is sent, as servers do for a body they refuse by its Content-Length."""
    if server.https:
        ctx = ssl.create_default_context(cafile=str(server.ca_path))
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=timeout)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or server.login_server)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        try:
            for off in range(0, len(body), 64 * 1024):
                conn.send(body[off:off + 64 * 1024])
        except (OSError, ssl.SSLError):
            pass  # the server answered early; its answer is waiting to be read
        return RawResponse(method, server.base_url + path, conn.getresponse())
    finally:
        conn.close()


def assert_oci_error(r: requests.Response, codes, statuses=None):
    """Asserts `r` is an OCI error response: status in `statuses`, JSON {"errors":[{"code","message"}]}, and
    the first error's code in `codes`."""
    if isinstance(codes, str):
        codes = {codes}
    if isinstance(statuses, int):
        statuses = {statuses}
    desc = f"{r.request.method} {r.request.url} -> {r.status_code} {r.headers.get('Content-Type')} {r.text[:400]!r}"
    assert r.status_code < 500, "server error: " + desc
    if statuses is not None:
        assert r.status_code in statuses, f"expected status {sorted(statuses)}: " + desc
    if r.request.method == "HEAD":
        return
    try:
        body = r.json()
    except ValueError:
        raise AssertionError("error body is not JSON: " + desc)
    assert isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"], \
        "error body must be {\"errors\":[...]}: " + desc
    for e in body["errors"]:
        assert isinstance(e.get("code"), str) and isinstance(e.get("message"), str), \
            "each error needs string code and message: " + desc
    got = [e["code"] for e in body["errors"]]
    assert set(got) & set(codes), f"expected code in {sorted(codes)}, got {got}: " + desc


def parse_challenge(value: str) -> tuple[str, dict]:
    """Parses `Bearer realm="..",service="..",scope=".."` into (scheme, params)."""
    scheme, _, rest = value.strip().partition(" ")
    params = {}
    i = 0
    while i < len(rest):
        while i < len(rest) and rest[i] in " ,":
            i += 1
        j = rest.find("=", i)
        if j < 0:
            break
        key = rest[i:j].strip()
        i = j + 1
        if i < len(rest) and rest[i] == '"':
            k = i + 1
            val = []
            while k < len(rest) and rest[k] != '"':
                if rest[k] == "\\" and k + 1 < len(rest):
                    k += 1
                val.append(rest[k])
                k += 1
            params[key] = "".join(val)
            i = k + 1
        else:
            k = rest.find(",", i)
            k = len(rest) if k < 0 else k
            params[key] = rest[i:k].strip()
            i = k
    return scheme, params


# ------------------------------------------------------------------------------------------------ the server

class MoatServer:
    def __init__(self, workdir: Path, https: bool = True, admin_password: str | None = "generate",
                 extra_args=None, env=None, port: int | None = None, tls_ca: str | None = None,
                 transfer_dirs=None):
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.https = https
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        if transfer_dirs:
            # LocalDirectory pipelines may use only the operator's `[outbound] directories`.
            self.workdir.mkdir(parents=True, exist_ok=True)
            cfg = self.workdir / "transfer-dirs.toml"
            cfg.write_text("[outbound]\ndirectories = [%s]\n" % ", ".join(json.dumps(str(d)) for d in transfer_dirs))
            self.extra_args += ["--config", str(cfg)]
        self.tls_ca = tls_ca  # trust this instead of <data dir>/tls/ca.pem (with --tls-cert)
        self.env = dict(env or {})
        if admin_password == "generate":
            admin_password = "pw-" + secrets.token_urlsafe(18)
        self._env_password = admin_password  # None: let the server generate one
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "moat.log"
        self._log = None
        self.starts = 0

    # -- addresses
    @property
    def login_server(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.https else "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.login_server}"

    @property
    def ca_path(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    @property
    def verify(self):
        if not self.https:
            return True
        return str(self.tls_ca or self.ca_path)

    @property
    def admin_password(self) -> str:
        if self._env_password is not None:
            return self._env_password
        p = self.data_dir / "admin-password"
        assert p.exists(), f"{p} does not exist"
        return p.read_text().strip()

    # -- lifecycle
    def command(self) -> list[str]:
        cmd = [moat_bin(), "serve", "--data-dir", str(self.data_dir), "--listen", self.login_server]
        if not self.https:
            cmd.append("--insecure-http")
        return cmd + self.extra_args

    def process_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOAT_")}
        if self._env_password is not None:
            env["MOAT_ADMIN_PASSWORD"] = self._env_password
        env.setdefault("RUST_LOG", "info")
        env.update(self.env)
        return env

    def start(self, timeout: float = 30.0):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        b = moat_bin()
        assert os.path.exists(b), f"moat binary not found at {b} (set MOAT_BIN or run cargo build --release)"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n===== start #{self.starts} {' '.join(self.command())}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.process_env(), start_new_session=True)
        self.starts += 1
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"moat exited with {self.proc.returncode} during startup:\n{self.log_tail()}")
            if self.https and not self.tls_ca and not self.ca_path.exists():
                time.sleep(0.05)
                continue
            try:
                r = requests.get(self.base_url + "/v2/", verify=self.verify, timeout=2)
                if r.status_code in (200, 401):
                    return
                # The default registry's public network access is off: the server is up and refusing us.
                if r.status_code == 403 and "DENIED" in r.text:
                    return
                last = f"status {r.status_code}"
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.05)
        raise AssertionError(f"moat not ready on {self.base_url} after {timeout}s ({last}):\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def _close_log(self):
        if self._log:
            self._log.close()
            self._log = None

    def stop(self, timeout: float = 15.0):
        """Graceful stop: SIGTERM, wait, then SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_log()

    def kill9(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def restart(self, timeout: float = 30.0):
        self.stop()
        return self.start(timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- helpers
    def client(self, **kw) -> Client:
        return Client(self, **kw)

    def token(self, *scopes: str, host: str | None = None) -> str:
        return get_token(self.base_url, host or self.login_server, list(scopes), "admin", self.admin_password,
                         host=host, verify=self.verify)

    def moat(self, *args, check=True, timeout=60, env=None) -> subprocess.CompletedProcess:
        """Runs `moat <args> --data-dir <data dir>`."""
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("MOAT_")}
        base_env.update(env or {})
        p = subprocess.run([moat_bin(), *args, "--data-dir", str(self.data_dir)], capture_output=True, text=True,
                           timeout=timeout, env=base_env)
        if check and p.returncode != 0:
            raise AssertionError(f"moat {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def audit(self, **filters) -> list[dict]:
        """`moat audit --output json --oldest-first` with filters (registry=, repository=, operation=, result=,
        since=, until=, limit=); data-plane events only unless log="activity" or log="all" is given."""
        filters.setdefault("log", "data")
        args = ["audit", "--output", "json", "--oldest-first"]
        for k, v in filters.items():
            if v is not None:
                args += [f"--{k.replace('_', '-')}", str(v)]
        # Change-less events (pulls, logins, denials) are written by a batching task a few milliseconds after the
        # response: read until two reads agree, so a test sees what the requests it just made recorded.
        last = None
        deadline = time.monotonic() + 5
        while True:
            events = parse_json_lines(self.moat(*args).stdout)
            if (last is not None and len(events) == len(last)) or time.monotonic() > deadline:
                return events
            last = events
            time.sleep(0.15)

    def create_registry(self, name: str, *extra) -> str:
        """`moat registry create NAME --listen <ours>`; returns the login server it reports/implies."""
        self.moat("registry", "create", name, "--listen", self.login_server, *extra)
        return f"{name}.localhost:{self.port}"

    def close(self):
        try:
            self.stop()
        finally:
            self._close_log()


def parse_json_lines(out: str) -> list[dict]:
    out = out.strip()
    if not out:
        return []
    if out.startswith("["):
        return json.loads(out)
    events = []
    for line in out.splitlines():
        line = line.strip()
        if line:
            events.append(json.loads(line))
    return events


# ------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture
def moat_factory(tmp_path_factory):
    servers: list[MoatServer] = []

    def make(https: bool = True, start: bool = True, **kw) -> MoatServer:
        wd = tmp_path_factory.mktemp("moat")
        s = MoatServer(wd, https=https, **kw)
        servers.append(s)
        if start:
            s.start()
        return s

    yield make
    for s in servers:
        s.close()
    # Keep the logs of failed runs visible in the pytest output.
    for s in servers:
        if s.log_path.exists() and os.environ.get("MOAT_E2E_SHOW_LOGS"):
            print(f"--- {s.log_path}\n{s.log_tail(200)}")


@pytest.fixture
def moat(moat_factory) -> MoatServer:
    """A running HTTPS Moat with its own CA."""
    return moat_factory(https=True)


@pytest.fixture
def moat_http(moat_factory) -> MoatServer:
    """A running plain-HTTP Moat (--insecure-http)."""
    return moat_factory(https=False)


@pytest.fixture
def certs_dir(moat, tmp_path) -> Path:
    """A containers-style cert dir holding the server's CA as ca.crt."""
    d = tmp_path / "certs"
    d.mkdir()
    shutil.copy(moat.ca_path, d / "ca.crt")
    return d


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for name in ("moat", "moat_http"):
            s = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if isinstance(s, MoatServer):
                rep.sections.append((f"{name} log tail", s.log_tail(40)))


# ------------------------------------------------------------------------------------------------ management plane
# The ARM + AAD side (tests/e2e/test_arm_*.py): service principals from `moat sp create`, AAD client-credential
# tokens, and a small ARM session over requests. The Azure clients themselves live in their own venvs
# (.venv for azure-mgmt-containerregistry 15, .venv-sdk14 for 14, .venv-az for the az CLI; scripts/test makes them).

ARM_SCOPE = "https://management.azure.com/.default"
ARM_API_VERSION = "2025-11-01"
REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"


def run_concurrently(calls, timeout: float = 120):
    """Starts every call on a thread of its own, then waits for all; fails when one is still running after
    `timeout` seconds (the server hung)."""
    threads = [threading.Thread(target=c, daemon=True) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "threads did not finish (server hung?)"


def sp_create(server: "MoatServer", name: str, role: str | None = "Owner", scope: str | None = None) -> dict:
    """`moat sp create` on a (running) server's data dir; returns {"appId","displayName","password","tenant"}."""
    args = ["sp", "create", "--name", name, "--listen", server.login_server]
    if role:
        args += ["--role", role]
    if scope:
        args += ["--scope", scope]
    p = server.moat(*args)
    sp = json.loads(p.stdout)
    for k in ("appId", "displayName", "password", "tenant"):
        assert sp.get(k), f"`moat sp create` output lacks {k}: {p.stdout!r}"
    return sp


def venv_python(name: str) -> str:
    """The python of a repo-local venv (.venv-sdk14, ...); fails (does not skip) when it is missing."""
    py = REPO_ROOT / name / "bin" / "python"
    assert py.exists(), f"{py} is missing: run scripts/test, which creates {name}"
    return str(py)


def azure_env(server: "MoatServer", **extra) -> dict:
    """Environment for a real Azure client talking to `server`: trust its CA (overriding any machine-wide
    REQUESTS_CA_BUNDLE), no MSAL instance discovery, no telemetry, no proxy for loopback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOAT_")}
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy",
              "CURL_CA_BUNDLE", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"):
        env.pop(k, None)
    env.update({
        "REQUESTS_CA_BUNDLE": str(server.ca_path),
        "AZURE_CORE_INSTANCE_DISCOVERY": "false",
        "AZURE_CORE_COLLECT_TELEMETRY": "false",
        "NO_PROXY": "127.0.0.1,localhost,.localhost",
        "no_proxy": "127.0.0.1,localhost,.localhost",
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


def aad_token(server: "MoatServer", sp: dict, scope: str = ARM_SCOPE,
              session: requests.Session | None = None) -> str:
    """POST /{tenant}/oauth2/v2.0/token (client credentials) as MSAL sends it; returns the access token."""
    session = session or make_session(server.base_url, verify=server.verify)
    r = session.post(f"{server.base_url}/{sp['tenant']}/oauth2/v2.0/token",
                     data={"client_id": sp["appId"], "grant_type": "client_credentials", "client_info": "1",
                           "client_secret": sp["password"], "scope": scope}, timeout=30)
    assert r.status_code == 200, f"AAD token: {r.status_code} {r.text[:500]}"
    body = r.json()
    assert body.get("access_token") and isinstance(body.get("expires_in"), int), body
    return body["access_token"]


class Arm:
    """A requests session on the management API with one service principal's bearer token."""

    def __init__(self, server: "MoatServer", sp: dict, api_version: str = ARM_API_VERSION):
        self.server = server
        self.sp = sp
        self.api_version = api_version
        self.session = make_session(server.base_url, verify=server.verify)
        self.token = aad_token(server, sp, session=self.session)
        self._sub = None

    def clone(self) -> "Arm":
        """Another session (own connection pool) with the same token: one per thread."""
        c = object.__new__(Arm)
        c.__dict__.update(self.__dict__)
        c.session = make_session(self.server.base_url, verify=self.server.verify)
        return c

    def request(self, method: str, path: str, json_body=None, api_version: str | None = "default",
                **kw) -> requests.Response:
        params = dict(kw.pop("params", {}) or {})
        if api_version == "default":
            api_version = self.api_version
        if api_version is not None:
            params["api-version"] = api_version
        kw.setdefault("timeout", 60)
        return self.session.request(method, self.server.base_url + path, params=params, json=json_body,
                                    headers={"Authorization": "Bearer " + self.token}, **kw)

    @property
    def subscription(self) -> str:
        if self._sub is None:
            r = self.request("GET", "/subscriptions", api_version="2022-12-01")
            assert r.status_code == 200, f"GET /subscriptions: {r.status_code} {r.text[:500]}"
            value = r.json()["value"]
            assert len(value) == 1, value
            self._sub = value[0]["subscriptionId"]
        return self._sub

    def registry_path(self, name: str, rg: str = "rg1") -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{rg}/providers/"
                f"Microsoft.ContainerRegistry/registries/{name}")

    def put_registry(self, name: str, body: dict, rg: str = "rg1") -> requests.Response:
        return self.request("PUT", self.registry_path(name, rg), body)

    def patch_registry(self, name: str, body: dict, rg: str = "rg1") -> requests.Response:
        return self.request("PATCH", self.registry_path(name, rg), body)

    def get_registry(self, name: str, rg: str = "rg1") -> requests.Response:
        return self.request("GET", self.registry_path(name, rg))

    # -- private endpoints (Microsoft.Network/privateEndpoints, answered by Moat) and the registry's connections
    def endpoint_path(self, name: str = "", rg: str = "rg1") -> str:
        """.../providers/Microsoft.Network/privateEndpoints[/NAME]"""
        base = f"/subscriptions/{self.subscription}/resourceGroups/{rg}/providers/Microsoft.Network/privateEndpoints"
        return f"{base}/{name}" if name else base

    def endpoint_request(self, method: str, name: str = "", rg: str = "rg1", body=None,
                         api_version: str | None = "default", **kw) -> requests.Response:
        """A request on a private endpoint resource, with the network RP's api-version by default."""
        if api_version == "default":
            api_version = PE_API_VERSION
        return self.request(method, self.endpoint_path(name, rg), body, api_version=api_version, **kw)

    def connections_path(self, registry: str, rg: str = "rg1", connection: str = "") -> str:
        base = self.registry_path(registry, rg) + "/privateEndpointConnections"
        return f"{base}/{connection}" if connection else base

    def connections(self, registry: str, rg: str = "rg1") -> list[dict]:
        """GET REG/privateEndpointConnections -> its `value`."""
        r = self.request("GET", self.connections_path(registry, rg))
        assert r.status_code == 200, f"GET privateEndpointConnections: {r.status_code} {r.text[:500]}"
        return r.json()["value"]

    def set_connection_state(self, registry: str, connection: str, status: str, description: str | None = None,
                             rg: str = "rg1") -> requests.Response:
        """PUT REG/privateEndpointConnections/CONN with privateLinkServiceConnectionState {status, description}."""
        state = {"status": status}
        if description is not None:
            state["description"] = description
        return self.request("PUT", self.connections_path(registry, rg, connection),
                            {"properties": {"privateLinkServiceConnectionState": state}})

    def delete_connection(self, registry: str, connection: str, rg: str = "rg1") -> requests.Response:
        return self.request("DELETE", self.connections_path(registry, rg, connection))


def assert_arm_error(r: requests.Response, status: int, code: str, message: str | None = None,
                     target: bool = False) -> dict:
    """Asserts an ARM error envelope {"error":{"code","message"[,"target"]}} with `status` and `code`."""
    desc = f"{r.request.method} {r.request.url} -> {r.status_code} {r.text[:600]!r}"
    assert r.status_code == status, f"expected {status} {code}: " + desc
    try:
        body = r.json()
    except ValueError:
        raise AssertionError("ARM error body is not JSON: " + desc)
    err = body.get("error") if isinstance(body, dict) else None
    assert isinstance(err, dict) and isinstance(err.get("code"), str) and isinstance(err.get("message"), str), \
        "not an ARM error envelope: " + desc
    assert err["code"] == code, f"expected code {code}: " + desc
    if message is not None:
        assert err["message"] == message, f"expected message {message!r}: " + desc
    if target:
        assert isinstance(err.get("target"), str) and err["target"], "error target missing: " + desc
    return err


def connection_status(conn: dict) -> str | None:
    """privateLinkServiceConnectionState.status of one privateEndpointConnections entry."""
    return (((conn.get("properties") or {}).get("privateLinkServiceConnectionState") or {}).get("status"))


def approved_connections(connections: list[dict]) -> list[dict]:
    return [c for c in connections if connection_status(c) == "Approved"]


def export_invariant_violation(reg: dict, connections: list[dict] | None = None, arm: "Arm | None" = None,
                               require_connection: bool = True) -> str | None:
    """ACR's export rule on one registry JSON: exports disabled => Premium, public network access disabled and at
    least one approved private endpoint connection. The connections are the registry JSON's own
    `properties.privateEndpointConnections` (read with the registry), unless given, or fetched with `arm`
    (GET REG/privateEndpointConnections: a later read, so only for a registry nobody is changing). With
    `require_connection=False` only the SKU and public access are checked (for bodies read while the registry may
    be deleted and re-created underneath, when the connections are read after the registry row).
    Returns a description of the violation, or None."""
    props = reg.get("properties") or {}
    exports = ((props.get("policies") or {}).get("exportPolicy") or {}).get("status")
    sku = (reg.get("sku") or {}).get("name")
    public = props.get("publicNetworkAccess")
    if exports != "disabled":
        return None
    if sku != "Premium" or public != "Disabled":
        return f"exportPolicy=disabled with sku={sku} publicNetworkAccess={public}"
    if not require_connection:
        return None
    if connections is None and arm is not None:
        r = arm.request("GET", reg["id"] + "/privateEndpointConnections")
        if r.status_code != 200:
            return f"exportPolicy=disabled and GET privateEndpointConnections -> {r.status_code} {r.text[:300]}"
        connections = r.json().get("value")
    if connections is None:
        connections = props.get("privateEndpointConnections")
    if not isinstance(connections, list):
        return f"exportPolicy=disabled and no privateEndpointConnections list in {str(reg)[:300]}"
    if not approved_connections(connections):
        states = [connection_status(c) for c in connections]
        return f"exportPolicy=disabled with no approved private endpoint connection (connections: {states})"
    return None


# ------------------------------------------------------------------------------------------------ private endpoints
# Moat answers for Microsoft.Network/privateEndpoints: creating one makes the server listen on the endpoint's
# address (its own port). Tests use loopback addresses 127.0.0.10.. for endpoints, one per endpoint and server
# (servers differ in port, so the same address serves on several servers at once).

PE_API_VERSION = "2023-09-01"
PE_FIRST_HOST = 10  # 127.0.0.10 ...: below are the client source addresses test_network.py uses
EXPORTS_NEED_PE = ("Export policy can only be disabled when registry '{name}' has at least one approved private "
                   "endpoint connection. Create and approve a private endpoint first.")
LAST_PE_KEPT = ("The last approved private endpoint connection of registry '{name}' cannot be removed while exports "
                "are disabled. Enable exports first.")


_PE_ADDRESS_LOCK = threading.Lock()


def next_pe_address(server: "MoatServer") -> str:
    """A loopback address no endpoint of `server` has been given yet (127.0.0.10 .. 127.0.0.254); thread-safe."""
    with _PE_ADDRESS_LOCK:
        n = getattr(server, "_pe_next_host", PE_FIRST_HOST)
        assert n <= 254, "out of loopback addresses for private endpoints"
        server._pe_next_host = n + 1
    return f"127.0.0.{n}"


def private_endpoint_body(registry_id: str, address: str | None, manual: bool = False,
                          request_message: str | None = None, group_ids=("registry",),
                          connection_name: str = "conn", location: str = "local") -> dict:
    conn = {"name": connection_name, "properties": {"privateLinkServiceId": registry_id}}
    if group_ids is not None:
        conn["properties"]["groupIds"] = list(group_ids)
    if request_message is not None:
        conn["properties"]["requestMessage"] = request_message
    props = {("manualPrivateLinkServiceConnections" if manual else "privateLinkServiceConnections"): [conn]}
    if address is not None:
        props["ipConfigurations"] = [{"name": "registry", "properties": {"privateIPAddress": address}}]
    return {"location": location, "properties": props}


def endpoint_connection(endpoint: dict) -> dict:
    """The one (auto or manual) privateLinkServiceConnection of an endpoint JSON."""
    props = endpoint.get("properties") or {}
    conns = (props.get("privateLinkServiceConnections") or []) + (props.get("manualPrivateLinkServiceConnections")
                                                                 or [])
    assert len(conns) == 1, f"expected one connection in the endpoint: {endpoint}"
    return conns[0]


def endpoint_status(endpoint: dict) -> str:
    return endpoint_connection(endpoint)["properties"]["privateLinkServiceConnectionState"]["status"]


def create_private_endpoint(arm: Arm, registry_name: str, rg: str = "rg1", address: str | None = None,
                            name: str | None = None, manual: bool = False, pe_rg: str | None = None,
                            request_message: str | None = None) -> dict:
    """PUT .../Microsoft.Network/privateEndpoints/NAME for registry `rg/registry_name` on `address` (the next free
    127.0.0.x of this server when None); asserts 201 and the state it was created in (Approved, or Pending with
    `manual`). Returns the endpoint JSON with three extra keys: `connectionName` (the registry-side connection's
    name), `address` and `resourceGroup` (the endpoint's)."""
    address = address or next_pe_address(arm.server)
    name = name or f"pe-{registry_name}-{address.rsplit('.', 1)[1]}"
    pe_rg = pe_rg or rg
    body = private_endpoint_body(arm.registry_path(registry_name, rg), address, manual=manual,
                                 request_message=request_message)
    r = arm.endpoint_request("PUT", name, pe_rg, body)
    assert r.status_code == 201, f"PUT privateEndpoints/{name} on {address}: {r.status_code} {r.text[:600]}"
    pe = r.json()
    want = "Pending" if manual else "Approved"
    assert endpoint_status(pe) == want, f"endpoint created in another state than {want}: {pe}"
    pe["connectionName"] = endpoint_connection(pe)["name"]
    pe["address"] = address
    pe["resourceGroup"] = pe_rg
    return pe


def approve_connection(arm: Arm, registry_name: str, connection: str, rg: str = "rg1",
                       description: str = "approved by the test") -> dict:
    r = arm.set_connection_state(registry_name, connection, "Approved", description, rg)
    assert r.status_code == 200, f"approve {connection}: {r.status_code} {r.text[:500]}"
    assert connection_status(r.json()) == "Approved", r.text
    return r.json()


def reject_connection(arm: Arm, registry_name: str, connection: str, rg: str = "rg1",
                      description: str = "rejected by the test") -> dict:
    r = arm.set_connection_state(registry_name, connection, "Rejected", description, rg)
    assert r.status_code == 200, f"reject {connection}: {r.status_code} {r.text[:500]}"
    assert connection_status(r.json()) == "Rejected", r.text
    return r.json()


def protect_registry(arm: Arm, registry_name: str, rg: str = "rg1") -> dict:
    """The now-valid order to disable exports on a Premium registry: an approved private endpoint first, then one
    PATCH with public network access and exports disabled. Returns the endpoint (see create_private_endpoint)."""
    pe = create_private_endpoint(arm, registry_name, rg)
    r = arm.patch_registry(registry_name, {"properties": {"publicNetworkAccess": "Disabled",
                                                          "policies": {"exportPolicy": {"status": "disabled"}}}}, rg)
    assert r.status_code == 200, f"PATCH exports disabled: {r.status_code} {r.text[:500]}"
    assert export_invariant_violation(r.json()) is None, r.text
    return pe


# The `azurite` session fixture (a real Azure Storage emulator on loopback) for the transfer tests.
from azurite import Azurite, azurite  # noqa: E402,F401
