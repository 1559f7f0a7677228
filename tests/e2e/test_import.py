"""importImage end to end: `POST REG/importImage` driven by the Azure SDK (begin_import_image), by `moat acr import`
and by raw ARM requests, from another registry of the same server (zero copy: blobs are linked, not copied), from
CNCF Distribution over plain HTTP, from a second Moat server with credentials, and from small Python registries
that cut the connection partway through a blob or serve bytes that do not match their digest.

The rule checked everywhere a source is refused or fails: the target is left exactly as it was (no tag, no
manifest, no blob linked into the target repository), the error is ARM's `InvalidParameters` (or
`AuthorizationFailed`), and the audit trail has the `Import` (target) and `Export` (same-server source) events.

Registries created over ARM are reached on their login server NAME.localhost:PORT through conftest's Client (Host
and TLS name set, connected to 127.0.0.1); skopeo, which must resolve the name, talks to the `default` registry
(127.0.0.1:PORT), which is a registry of the subscription like any other (resource group `moat`).
"""
from __future__ import annotations

import functools
import base64
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import types
from pathlib import Path

import pytest
import requests

from conftest import (run_concurrently, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, Arm, Client, Image, assert_arm_error,
                      client_via,
                      free_port, make_layer, moat_bin, protect_registry, read_oci_layout_manifest, require_tool, run, sha256,
                      sp_create, write_oci_layout)
from test_moat_acr import Cli, assert_error

ACR_TYPE = "Microsoft.ContainerRegistry/registries"
LAYER = 200 * 1024  # above the 64 KiB kept in the metadata store: layers are files under storage/blobs
CLI_IMPORT_TIMEOUT = 120


def build_image(n_layers: int = 2, layer_size: int = LAYER, seed: str | None = None) -> Image:
    """An OCI image whose layers hold `layer_size` random bytes each: they do not compress, so above 64 KiB they
    are files under storage/blobs (conftest.build_image's layers shrink to a few hundred bytes of gzip)."""
    layers, diff_ids = [], []
    for i in range(n_layers):
        gz, tar = make_layer({f"layer{i}/random.bin": os.urandom(layer_size)})
        layers.append((sha256(gz), gz))
        diff_ids.append(sha256(tar))
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Labels": {"moat.test.seed": seed or os.urandom(8).hex()}},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": d, "size": len(b)} for d, b in layers],
    }, indent=2).encode()
    return Image(layers, config, manifest, OCI_MANIFEST)


# ------------------------------------------------------------------------------------------------ helpers

class Env:
    """One HTTPS Moat with an Owner service principal: an ARM session and a logged-in `moat` CLI."""

    def __init__(self, server, tmp_path: Path, name: str = "import-owner"):
        self.server = server
        self.owner = sp_create(server, name, "Owner")
        self.arm = Arm(server, self.owner)
        self.sub = self.arm.subscription
        self.cli = Cli(server, tmp_path / f"cli-{name}")
        self.cli.login(self.owner)
        self.certs = tmp_path / f"certs-{server.port}"
        self.certs.mkdir(exist_ok=True)
        shutil.copy(server.ca_path, self.certs / "ca.crt")

    # -- registries
    def create(self, name: str, rg: str = "rg1", sku: str = "Premium") -> dict:
        r = self.arm.put_registry(name, {"location": "local", "sku": {"name": sku},
                                         "properties": {"adminUserEnabled": False}}, rg)
        assert r.status_code in (200, 201), f"PUT registry {name}: {r.status_code} {r.text[:500]}"
        return r.json()

    def registry_id(self, name: str, rg: str = "rg1") -> str:
        return self.arm.registry_path(name, rg)

    @property
    def default_id(self) -> str:
        return self.arm.registry_path("default", "moat")

    def host(self, name: str) -> str:
        """The login server of registry `name` (`default` is the server's own address)."""
        return self.server.login_server if name == "default" else f"{name}.localhost:{self.server.port}"

    def client(self, name: str) -> Client:
        return self.server.client() if name == "default" else self.server.client(host=self.host(name))

    # -- importImage over raw ARM
    def import_request(self, target: str, body: dict, rg: str = "rg1", arm: Arm | None = None) -> requests.Response:
        arm = arm or self.arm
        return arm.request("POST", arm.registry_path(target, rg) + "/importImage", body)

    def import_and_wait(self, target: str, body: dict, rg: str = "rg1", seconds: float = 60) -> requests.Response:
        """POST importImage, then poll its Location while it answers 202; returns the final answer."""
        r = self.import_request(target, body, rg)
        return self.wait(r, seconds)

    def wait(self, r: requests.Response, seconds: float = 60) -> requests.Response:
        deadline = time.monotonic() + seconds
        loc = r.headers.get("Location")
        while r.status_code == 202:
            loc = r.headers.get("Location") or loc  # the polls answer without one
            assert loc, f"202 without Location: {r.headers} {r.text[:300]}"
            assert time.monotonic() < deadline, f"import still running after {seconds}s: {r.text[:300]}"
            time.sleep(min(float(r.headers.get("Retry-After", "1")), 1.0))
            r = self.arm.session.get(loc, headers={"Authorization": "Bearer " + self.arm.token}, timeout=60)
        return r

    # -- the CLI
    def acr_import(self, *args, rc: int | None = 0, **kw) -> subprocess.CompletedProcess:
        return self.cli("acr", "import", *args, rc=rc, timeout=CLI_IMPORT_TIMEOUT, **kw)

    # -- skopeo against the default registry
    def skopeo_creds(self, direction: str) -> list[str]:
        flag = {"src": "--src-", "dest": "--dest-", "one": "--"}[direction]
        return [f"{flag}cert-dir", str(self.certs), f"{flag}creds", f"admin:{self.server.admin_password}"]


@pytest.fixture
def env(moat, tmp_path) -> Env:
    return Env(moat, tmp_path)


def skopeo(*args, timeout=180):
    return run([require_tool("skopeo"), *args], timeout=timeout)


def skopeo_digest(ref: str, *flags) -> str:
    return json.loads(skopeo("inspect", *flags, ref).stdout)["Digest"]


def blob_files(server) -> int:
    root = server.data_dir / "storage" / "blobs"
    return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def manifest_digest(c: Client, repo: str, ref: str) -> str | None:
    r = c.get_manifest(repo, ref)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, f"GET manifest {repo}:{ref}: {r.status_code} {r.text[:300]}"
    return r.headers["Docker-Content-Digest"]


def tags_of(c: Client, repo: str) -> list[str]:
    """The repository's tags; [] when it does not exist (404 NAME_UNKNOWN)."""
    r = c.request("GET", f"/v2/{repo}/tags/list", repo=repo)
    if r.status_code == 404:
        return []
    assert r.status_code == 200, f"tags/list {repo}: {r.status_code} {r.text[:300]}"
    return r.json().get("tags") or []


def catalog(c: Client) -> list[str]:
    r = c.request("GET", "/v2/_catalog", scopes=["registry:catalog:*"])
    assert r.status_code == 200, f"_catalog: {r.status_code} {r.text[:300]}"
    return r.json().get("repositories") or []


def assert_image_in(c: Client, repo: str, ref: str, image, digest: str | None = None):
    """`repo:ref` is `image` in the registry of `c`: same manifest bytes and digest, every blob readable."""
    r = c.get_manifest(repo, ref)
    assert r.status_code == 200, f"{repo}:{ref} missing: {r.status_code} {r.text[:300]}"
    assert r.headers["Docker-Content-Digest"] == (digest or image.manifest_digest)
    assert r.content == image.manifest_bytes
    for dg, data in image.blobs.items():
        b = c.get_blob(repo, dg)
        assert b.status_code == 200 and b.content == data, f"blob {dg} in {repo}: {b.status_code}"


def assert_nothing_in(c: Client, repo: str, image=None, blobs=()):
    """Nothing of an image reached `repo`: no tag, no manifest, no blob linked."""
    assert tags_of(c, repo) == [], f"{repo} has tags after a failed import"
    digests = list(blobs)
    if image is not None:
        assert c.get_manifest(repo, image.manifest_digest).status_code == 404, f"manifest linked into {repo}"
        digests += list(image.blobs)
    for dg in digests:
        h = c.head_blob(repo, dg)
        assert h.status_code == 404, f"blob {dg} linked into {repo} by a failed import: {h.status_code}"


def events(server, operation: str, registry: str, seconds: float = 5.0, want=lambda e: True) -> list[dict]:
    """Audit events of `operation` on `registry` satisfying `want` (waits a little for the batch writer)."""
    deadline = time.monotonic() + seconds
    while True:
        evs = [e for e in server.audit(operation=operation)
               if e.get("Registry") == registry and want(e)]
        if evs or time.monotonic() > deadline:
            return evs
        time.sleep(0.2)


def build_index(children, platforms=("amd64", "arm64")) -> bytes:
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": i.manifest_digest, "size": len(i.manifest_bytes),
                       "platform": {"architecture": arch, "os": "linux"}} for i, arch in zip(children, platforms)],
    }, indent=1).encode()


def _sdk():
    try:
        import azure.core.exceptions as exceptions
        import azure.identity as identity
        import azure.mgmt.containerregistry as acr
        from azure.mgmt.containerregistry import models
    except ImportError as e:
        pytest.fail(f"the Azure SDK is not installed in this python ({e}): run scripts/test")
    return types.SimpleNamespace(exceptions=exceptions, identity=identity, acr=acr, models=models)


def sdk_client(env: Env, monkeypatch):
    sdk = _sdk()
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    ca = str(env.server.ca_path)
    cred = sdk.identity.ClientSecretCredential(env.owner["tenant"], env.owner["appId"], env.owner["password"],
                                               authority=env.server.base_url, disable_instance_discovery=True,
                                               connection_verify=ca)
    client = sdk.acr.ContainerRegistryManagementClient(cred, env.sub, base_url=env.server.base_url,
                                                       connection_verify=ca)
    return sdk, client


# ------------------------------------------------------------------------------------------------ peers

class Distribution:
    """Debian's docker-registry (CNCF Distribution 2.8) on 127.0.0.1:PORT, plain HTTP, filesystem storage."""

    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = self.dir / "config.yml"
        self.config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.dir / 'storage'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n")
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "registry.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self):
        exe = require_tool("docker-registry")
        self.proc = subprocess.Popen([exe, "serve", str(self.config)], stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"docker-registry exited: {self.log.read_text()[-2000:]}"
            try:
                if requests.get(f"http://{self.host}/v2/", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError(f"docker-registry not ready: {self.log.read_text()[-2000:]}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def distribution(tmp_path):
    d = Distribution(tmp_path / "distribution").start()
    yield d
    d.stop()


class FakeRegistry:
    """A registry of one image (or an index over `children`) over plain HTTP, with one fault by `mode` on one blob
    (`victim`, the largest layer):

    - ``cut``: the blob's headers promise its full length, half the bytes are sent, the connection is closed
      (every time, also for Range requests);
    - ``corrupt``: the blob's bytes are served with the right length, one byte changed (digest mismatch);
    - ``manifest``: the manifest served for its digest has one more byte (digest mismatch);
    - ``garbage``: every answer is an HTML page with status 200;
    - ``slow``: no fault, the victim is sent in 20 pieces over ~2 seconds (to see the import's progress);
    - ``missing-child``: the index's last child manifest is 404;
    - ``redirect``: blob GETs answer 307 to `storage` (another host:port) that serves the bytes;
    - ``ok``: no fault.
    With `auth=(user, password)` every request needs that Basic authorization (else 401 + a Basic challenge).
    Requests are recorded in `seen` as (method, path, Authorization header)."""

    def __init__(self, image, repo: str, tag: str, mode: str, children=(), auth=None, storage=None):
        self.image, self.repo, self.tag, self.mode, self.auth = image, repo, tag, mode, auth
        self.children, self.storage = list(children), storage
        images = self.children or [image]
        self.blobs = {dg: data for img in images for dg, data in img.blobs.items()}
        self.manifests = {c.manifest_digest: (c.media_type, c.manifest_bytes) for c in self.children}
        if self.children:
            self.index = build_index(self.children)
            self.root = (sha256(self.index), OCI_INDEX, self.index)
        else:
            self.root = (image.manifest_digest, image.media_type, image.manifest_bytes)
        self.manifests[self.root[0]] = self.root[1:]
        self.missing = self.children[-1].manifest_digest if mode == "missing-child" else None
        self.victim = max(((dg, d) for img in images for dg, d in img.layers), key=lambda l: len(l[1]))[0]
        self.seen: list[tuple[str, str, str | None]] = []
        self.slow_step = 0.1  # ``slow``: seconds between the victim's 20 pieces
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self.answer(head=True)

            def do_GET(self):
                self.answer(head=False)

            def send(self, status: int, body: bytes, ctype: str = "application/json", head=False, extra=None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def answer(self, head: bool):
                fake.seen.append((self.command, self.path, self.headers.get("Authorization")))
                path = self.path.split("?", 1)[0]
                if fake.mode == "garbage":
                    return self.send(200, b"<html><body>not a registry</body></html>", "text/html", head)
                if fake.auth is not None:
                    want = "Basic " + base64.b64encode(f"{fake.auth[0]}:{fake.auth[1]}".encode()).decode()
                    if self.headers.get("Authorization") != want:
                        return self.send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                                         head=head, extra={"WWW-Authenticate": 'Basic realm="fake"'})
                if path in ("/v2", "/v2/"):
                    return self.send(200, b"{}", head=head)
                m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", path)
                if not m or m.group(1) != fake.repo:
                    return self.send(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"no such repository"}]}',
                                     head=head)
                kind, ref = m.group(2), m.group(3)
                if kind == "manifests":
                    if ref == fake.tag:
                        ref = fake.root[0]
                    if ref not in fake.manifests or ref == fake.missing:
                        return self.send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}',
                                         head=head)
                    media_type, body = fake.manifests[ref]
                    if fake.mode == "manifest":
                        body = body + b" "
                    return self.send(200, body, media_type, head, {"Docker-Content-Digest": ref})
                data = fake.blobs.get(ref)
                if data is None:
                    return self.send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}', head=head)
                if fake.mode == "redirect" and not head:
                    return self.send(307, b"", head=head,
                                     extra={"Location": f"http://{fake.storage.host}/storage/{ref}?sig=x"})
                victim = ref == fake.victim
                if victim and fake.mode == "corrupt":
                    data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
                status, extra, body = 200, {"Docker-Content-Digest": ref, "Accept-Ranges": "bytes"}, data
                rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "") or "")
                if rng:
                    start = int(rng.group(1))
                    end = int(rng.group(2)) if rng.group(2) else len(data) - 1
                    body = data[start:end + 1]
                    status = 206
                    extra["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
                if head or not victim or fake.mode not in ("cut", "slow"):
                    return self.send(status, body, "application/octet-stream", head, extra)
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                if fake.mode == "cut":
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                step = max(1, len(body) // 20)
                for off in range(0, len(body), step):
                    self.wfile.write(body[off:off + step])
                    self.wfile.flush()
                    time.sleep(fake.slow_step)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, client_address: None  # resets by the importer are expected
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class BlobStorage:
    """Object storage a registry redirects blob downloads to: GET /storage/<digest> serves the blob (any query),
    recording (path, Authorization header) in `seen`."""

    def __init__(self, blobs: dict[str, bytes]):
        self.blobs = blobs
        self.seen: list[tuple[str, str | None]] = []
        storage = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                storage.seen.append((self.path, self.headers.get("Authorization")))
                m = re.fullmatch(r"/storage/([^?]+)(\?.*)?", self.path)
                data = storage.blobs.get(m.group(1)) if m else None
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, client_address: None
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_registry():
    made = []

    def make(image=None, repo="fake/app", tag="1", mode="cut", **kw) -> FakeRegistry:
        f = FakeRegistry(image, repo, tag, mode, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


# ------------------------------------------------------------------------------------------------ same server

def test_sdk_import_between_registries_by_tag_and_digest_zero_copy(env, monkeypatch, tmp_path):
    """The SDK's begin_import_image from the default registry (pushed with skopeo) into an ARM registry, by tag and
    by digest, then back into the default registry and pulled with skopeo: same digest all the way, and not one
    new file under storage/blobs (blobs are linked, not copied). Audit: Import on the target, Export on the source."""
    sdk, client = sdk_client(env, monkeypatch)
    m = sdk.models
    img = build_image(n_layers=3, layer_size=LAYER)
    layout = write_oci_layout(tmp_path / "src", img)
    skopeo("copy", "--preserve-digests", *env.skopeo_creds("dest"), f"oci:{layout}:latest",
           f"docker://{env.server.login_server}/src/app:1")
    assert manifest_digest(env.client("default"), "src/app", "1") == img.manifest_digest
    target = "sdkimporttarget"
    env.create(target)
    files_before = blob_files(env.server)
    assert files_before >= 3, f"the layers should be files: {files_before}"

    t0 = time.monotonic()
    client.registries.begin_import_image("rg1", target, m.ImportImageParameters(
        source=m.ImportSource(resource_id=env.default_id, source_image="src/app:1"),
        target_tags=["imported/app:1"], mode="NoForce")).result()
    client.registries.begin_import_image("rg1", target, m.ImportImageParameters(
        source=m.ImportSource(resource_id=env.default_id, source_image=f"src/app@{img.manifest_digest}"),
        target_tags=["imported/app:bydigest"], mode="NoForce")).result()
    assert time.monotonic() - t0 < 20, "same-server imports should be quick (Retry-After / synchronous)"

    tc = env.client(target)
    assert_image_in(tc, "imported/app", "1", img)
    assert_image_in(tc, "imported/app", "bydigest", img)
    assert sorted(tags_of(tc, "imported/app")) == ["1", "bydigest"]

    # ... and back into the default registry, where skopeo pulls it.
    client.registries.begin_import_image("moat", "default", m.ImportImageParameters(
        source=m.ImportSource(resource_id=env.registry_id(target), source_image="imported/app:1"),
        target_tags=["roundtrip/app:1"], mode="NoForce")).result()
    ref = f"docker://{env.server.login_server}/roundtrip/app:1"
    assert skopeo_digest(ref, *env.skopeo_creds("one")) == img.manifest_digest
    back = tmp_path / "back"
    skopeo("copy", *env.skopeo_creds("src"), ref, f"oci:{back}:latest")
    dg, data = read_oci_layout_manifest(back, "latest")
    assert (dg, data) == (img.manifest_digest, img.manifest_bytes)
    for ldg, blob in img.layers:
        assert (back / "blobs" / "sha256" / ldg.split(":", 1)[1]).read_bytes() == blob

    assert blob_files(env.server) == files_before, "a same-server import copied blob files"

    imports = events(env.server, "Import", target, want=lambda e: e.get("ResultType") == "Success")
    assert {e.get("Tag") for e in imports} >= {"1", "bydigest"}, imports
    assert all(e.get("Repository") == "imported/app" for e in imports), imports
    exports = events(env.server, "Export", "default", want=lambda e: e.get("ResultType") == "Success")
    assert exports and all(e.get("Repository") == "src/app" for e in exports), exports
    assert events(env.server, "Export", target, want=lambda e: e.get("ResultType") == "Success"), \
        "no Export event on the registry the round trip read from"


def test_cli_import_multi_arch_index(env):
    """`moat acr import` of an OCI index with two platforms between two ARM registries: the index, both child
    manifests and every blob are in the target repository, by tag and (with --repository) untagged; the source
    named by login server (fully qualified --source), by -r name, by -r resource id."""
    src, tgt = "clisrcreg", "clitgtreg"
    env.create(src)
    env.create(tgt, rg="rg2")
    sc, tc = env.client(src), env.client(tgt)
    children = [build_image(n_layers=2, layer_size=LAYER, seed=f"child-{arch}") for arch in ("amd64", "arm64")]
    for child in children:
        sc.push_image("multi/app", child)
    index = build_index(children)
    r = sc.put_manifest("multi/app", "v1", index, OCI_INDEX)
    assert r.status_code == 201, f"PUT index: {r.status_code} {r.text[:300]}"
    index_digest = sha256(index)
    files_before = blob_files(env.server)

    def check(repo: str, ref: str):
        g = tc.get_manifest(repo, ref)
        assert g.status_code == 200, f"{repo}:{ref}: {g.status_code} {g.text[:300]}"
        assert g.headers["Docker-Content-Digest"] == index_digest and g.content == index
        for child in children:
            cm = tc.get_manifest(repo, child.manifest_digest)
            assert cm.status_code == 200 and cm.content == child.manifest_bytes, f"child missing in {repo}"
            for dg, data in child.blobs.items():
                b = tc.get_blob(repo, dg)
                assert b.status_code == 200 and b.content == data, f"blob {dg} missing in {repo}: {b.status_code}"

    # Fully qualified source on a login server of the subscription: a resourceId import. Nothing on stdout.
    p = env.acr_import("-n", tgt, "--source", f"{env.host(src)}/multi/app:v1", "-t", "copied/app:v1")
    assert p.stdout.strip() == "", p.stdout
    check("copied/app", "v1")
    # -r by name, no -t: the target is the source's repository and tag.
    env.acr_import("-n", tgt, "-g", "rg2", "-r", src, "--source", "multi/app:v1")
    check("multi/app", "v1")
    # -r by resource id, by digest, into an untagged repository and a second tag at once.
    env.acr_import("-n", tgt, "-r", env.registry_id(src), "--source", f"multi/app@{index_digest}",
                   "--repository", "untagged/app", "-t", "copied/app:second")
    check("untagged/app", index_digest)
    assert tags_of(tc, "untagged/app") == [], "--repository must not tag"
    check("copied/app", "second")
    # -r by login server.
    env.acr_import("-n", tgt, "-r", env.host(src), "--source", "multi/app:v1", "-t", "bylogin/app:v1")
    check("bylogin/app", "v1")
    assert blob_files(env.server) == files_before, "a same-server import copied blob files"


def test_noforce_refuses_an_existing_tag_and_force_overwrites(env):
    one, two = build_image(1, layer_size=LAYER), build_image(1, layer_size=LAYER)
    dc = env.client("default")
    dc.push_image("force/app", one, "1")
    dc.push_image("force/app", two, "2")
    tgt = "forcetarget"
    env.create(tgt)
    tc = env.client(tgt)
    src = f"{env.server.login_server}/force/app"
    env.acr_import("-n", tgt, "--source", f"{src}:1", "-t", "app:stable")
    assert manifest_digest(tc, "app", "stable") == one.manifest_digest

    p = env.acr_import("-n", tgt, "--source", f"{src}:2", "-t", "app:stable", "-t", "app:other", rc=None)
    assert_error(p, 1, "InvalidParameters", "app:stable", "--force")
    assert manifest_digest(tc, "app", "stable") == one.manifest_digest, "NoForce moved the tag"
    assert manifest_digest(tc, "app", "other") is None, "NoForce wrote the other tag of a refused import"
    assert tc.get_manifest("app", two.manifest_digest).status_code == 404

    # The same over raw ARM: 400 InvalidParameters.
    r = env.import_request(tgt, {"source": {"resourceId": env.default_id, "sourceImage": "force/app:2"},
                                 "targetTags": ["app:stable"], "mode": "NoForce"})
    err = assert_arm_error(r, 400, "InvalidParameters")
    assert "app:stable" in err["message"], err

    env.acr_import("-n", tgt, "--source", f"{src}:2", "-t", "app:stable", "--force")
    assert manifest_digest(tc, "app", "stable") == two.manifest_digest
    assert_image_in(tc, "app", "stable", two)
    # The old image stays reachable by digest (Force moves the tag, it deletes nothing).
    assert manifest_digest(tc, "app", one.manifest_digest) == one.manifest_digest


def test_source_with_exports_disabled_is_refused_and_audited(env):
    src, tgt = "exportsoffsrc", "exportsofftgt"
    env.create(src)
    env.create(tgt)
    img = build_image(2, layer_size=LAYER)
    env.client(src).push_image("secret/app", img, "1")
    protect_registry(env.arm, src)  # an approved private endpoint, then public access and exports disabled
    tc = env.client(tgt)

    p = env.acr_import("-n", tgt, "-r", src, "--source", "secret/app:1", "-t", "leak/app:1", rc=None)
    assert_error(p, 1, "InvalidParameters", "exports disabled")
    r = env.import_request(tgt, {"source": {"resourceId": env.registry_id(src), "sourceImage": "secret/app:1"},
                                 "targetTags": ["leak/app:1"], "mode": "Force"})
    err = assert_arm_error(r, 400, "InvalidParameters")
    assert "exports disabled" in err["message"], err
    # By digest and untagged: the same.
    r = env.import_request(tgt, {"source": {"resourceId": env.registry_id(src),
                                            "sourceImage": f"secret/app@{img.manifest_digest}"},
                                 "untaggedTargetRepositories": ["leak/untagged"]})
    assert_arm_error(r, 400, "InvalidParameters")

    assert_nothing_in(tc, "leak/app", img)
    assert_nothing_in(tc, "leak/untagged", img)
    assert catalog(tc) == [], "a refused import created repositories in the target"

    denied = events(env.server, "Export", src, want=lambda e: e.get("ResultType") == "Denied")
    assert denied, f"no Denied Export event on {src}: {env.server.audit()[-10:]}"
    failed = events(env.server, "Import", tgt, want=lambda e: e.get("ResultType") in ("Denied", "Failure"))
    assert failed, f"no failed Import event on {tgt}: {env.server.audit()[-10:]}"
    assert not events(env.server, "Import", tgt, seconds=0.5, want=lambda e: e.get("ResultType") == "Success")


def test_import_into_a_registry_with_exports_disabled_is_allowed(env):
    tgt = "protectedtarget"
    env.create(tgt)
    pe = protect_registry(env.arm, tgt)
    img = build_image(2, layer_size=LAYER)
    env.client("default").push_image("pub/app", img, "1")
    env.acr_import("-n", tgt, "--source", f"{env.server.login_server}/pub/app:1", "-t", "inside/app:1")
    # The target's data plane is private now: read it through its endpoint's listener.
    c = client_via(env.server, pe["address"], env.host(tgt))
    assert_image_in(c, "inside/app", "1", img)
    assert events(env.server, "Import", tgt, want=lambda e: e.get("ResultType") == "Success")


def test_bad_input_is_invalid_parameters_and_changes_nothing(env):
    tgt = "badinputtarget"
    env.create(tgt)
    tc = env.client(tgt)
    img = build_image(1, layer_size=LAYER)
    env.client("default").push_image("real/app", img, "1")
    missing_id = env.registry_id("doesnotexist99")
    cases = {
        "no such source registry": {"source": {"resourceId": missing_id, "sourceImage": "real/app:1"},
                                    "targetTags": ["x/app:1"]},
        "no such tag": {"source": {"resourceId": env.default_id, "sourceImage": "real/app:nope"},
                        "targetTags": ["x/app:1"]},
        "no such repository": {"source": {"resourceId": env.default_id, "sourceImage": "nothere/app:1"},
                               "targetTags": ["x/app:1"]},
        "no such digest": {"source": {"resourceId": env.default_id, "sourceImage": "real/app@sha256:" + "0" * 64},
                           "targetTags": ["x/app:1"]},
        "malformed sourceImage": {"source": {"resourceId": env.default_id, "sourceImage": "Real/App::1"},
                                  "targetTags": ["x/app:1"]},
        "malformed digest": {"source": {"resourceId": env.default_id, "sourceImage": "real/app@sha256:xyz"},
                             "targetTags": ["x/app:1"]},
        "malformed targetTags": {"source": {"resourceId": env.default_id, "sourceImage": "real/app:1"},
                                 "targetTags": ["x/app:bad tag!"]},
        "empty sourceImage": {"source": {"resourceId": env.default_id, "sourceImage": ""}, "targetTags": ["x/a:1"]},
        "no sourceImage": {"source": {"resourceId": env.default_id}, "targetTags": ["x/app:1"]},
        "no source": {"targetTags": ["x/app:1"]},
        "both resourceId and registryUri missing": {"source": {"sourceImage": "real/app:1"},
                                                    "targetTags": ["x/app:1"]},
        "digest source without a target": {"source": {"resourceId": env.default_id,
                                                      "sourceImage": f"real/app@{img.manifest_digest}"}},
        "bad mode": {"source": {"resourceId": env.default_id, "sourceImage": "real/app:1"},
                     "targetTags": ["x/app:1"], "mode": "Sometimes"},
    }
    for what, body in cases.items():
        r = env.import_and_wait(tgt, body)
        assert r.status_code == 400, f"{what}: {r.status_code} {r.text[:400]}"
        if what == "bad mode":  # an enum the body cannot hold: ARM's schema error, as for other resources
            assert r.json()["error"]["code"] in ("InvalidParameters", "InvalidRequestContent"), r.text
        else:
            assert_arm_error(r, 400, "InvalidParameters")
    raw = env.arm.session.post(env.server.base_url + env.arm.registry_path(tgt) + "/importImage",
                               params={"api-version": env.arm.api_version}, data=b"{not json",
                               headers={"Authorization": "Bearer " + env.arm.token,
                                        "Content-Type": "application/json"}, timeout=60)
    assert raw.status_code == 400, f"malformed body: {raw.status_code} {raw.text[:300]}"
    assert catalog(tc) == [], f"a refused import wrote into the target: {catalog(tc)}"
    assert_nothing_in(tc, "x/app", img)
    assert not events(env.server, "Import", tgt, seconds=0.5, want=lambda e: e.get("ResultType") == "Success")

    # The CLI: client-side usage errors (exit 2), the source lookup (exit 1), server refusals (exit 1).
    p = env.acr_import("-n", tgt, "--source", "real/app:1", rc=None)
    assert_error(p, 2, "Source cannot be found")
    p = env.acr_import("-n", tgt, "--source", "127.0.0.1:1/real/app:1", "-u", "admin", rc=None)
    assert_error(p, 2, "Authentication failed. Please provide password.")
    p = env.acr_import("-n", tgt, "-r", "doesnotexist99", "--source", "real/app:1", rc=None)
    assert_error(p, 1, "The source container registry can not be found in the current subscription")
    p = env.acr_import("-n", tgt, "--source", f"{env.server.login_server}/real/app:nope", rc=None)
    assert_error(p, 1, "InvalidParameters")
    p = env.acr_import("-n", tgt, "-r", missing_id, "--source", "real/app:1", rc=None)
    assert_error(p, 1, "InvalidParameters")
    p = env.acr_import("-n", "nosuchtarget99", "-g", "rg1", "--source", f"{env.server.login_server}/real/app:1",
                       rc=None)
    assert p.returncode in (1, 3) and "ERROR: " in p.stderr, p.stderr
    assert catalog(tc) == []


def test_callers_without_rights_get_authorization_failed(env):
    """A Reader cannot import into a target; an Owner of rg2 only cannot read a source in rg1."""
    tgt = "authztarget"
    env.create(tgt, rg="rg2")
    src = "authzsource"
    env.create(src, rg="rg1")
    img = build_image(1, layer_size=LAYER)
    env.client(src).push_image("a/app", img, "1")
    body = {"source": {"resourceId": env.registry_id(src), "sourceImage": "a/app:1"}, "targetTags": ["a/app:1"]}
    reader = Arm(env.server, sp_create(env.server, "import-reader", "Reader"))
    assert_arm_error(env.import_request(tgt, body, rg="rg2", arm=reader), 403, "AuthorizationFailed")
    rg2_owner = Arm(env.server, sp_create(env.server, "import-rg2-owner", "Owner",
                                          scope=f"/subscriptions/{env.sub}/resourceGroups/rg2"))
    assert_arm_error(env.import_request(tgt, body, rg="rg2", arm=rg2_owner), 403, "AuthorizationFailed")
    tc = env.client(tgt)
    assert_nothing_in(tc, "a/app", img)
    # The Owner of everything may.
    r = env.import_and_wait(tgt, body, rg="rg2")
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    assert_image_in(tc, "a/app", "1", img)


# ------------------------------------------------------------------------------------------------ remote sources

def test_import_from_distribution_over_plain_http(env, distribution, tmp_path):
    """skopeo pushes to Distribution (plain HTTP, 127.0.0.1); `moat acr import` pulls it into the default
    registry (the server tries HTTPS on loopback and falls back to HTTP); skopeo pulls it from Moat: same digest."""
    img = build_image(n_layers=3, layer_size=1024 * 1024)
    layout = write_oci_layout(tmp_path / "img", img)
    skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", f"oci:{layout}:latest",
           f"docker://{distribution.host}/dist/hello:1")
    dist_digest = skopeo_digest(f"docker://{distribution.host}/dist/hello:1", "--tls-verify=false")
    assert dist_digest == img.manifest_digest

    p = env.acr_import("-n", "default", "--source", f"{distribution.host}/dist/hello:1", "-t", "fromdist/hello:1")
    assert p.stdout.strip() == "", p.stdout
    ref = f"docker://{env.server.login_server}/fromdist/hello:1"
    assert skopeo_digest(ref, *env.skopeo_creds("one")) == dist_digest
    back = tmp_path / "back"
    skopeo("copy", *env.skopeo_creds("src"), ref, f"oci:{back}:latest")
    assert read_oci_layout_manifest(back, "latest") == (img.manifest_digest, img.manifest_bytes)
    for ldg, blob in img.layers:
        assert (back / "blobs" / "sha256" / ldg.split(":", 1)[1]).read_bytes() == blob

    # By digest, with an explicit http:// scheme, and --no-wait (then the tag appears by itself).
    env.acr_import("-n", "default", "--source", f"http://{distribution.host}/dist/hello@{dist_digest}",
                   "-t", "fromdist/hello:bydigest", "--no-wait")
    dc = env.client("default")
    deadline = time.monotonic() + 60
    while manifest_digest(dc, "fromdist/hello", "bydigest") is None:
        assert time.monotonic() < deadline, "the --no-wait import never finished"
        time.sleep(0.3)
    assert_image_in(dc, "fromdist/hello", "bydigest", img)

    # Raw ARM: 202 + Location + Retry-After, a progress body while running, 200 Succeeded at the end.
    r = env.import_request("default", {"source": {"registryUri": distribution.host, "sourceImage": "dist/hello:1"},
                                       "targetTags": ["fromdist/hello:raw"]}, rg="moat")
    assert r.status_code in (200, 202), f"{r.status_code} {r.text[:300]}"
    if r.status_code == 202:
        assert r.headers.get("Location", "").startswith("http"), r.headers
        assert r.headers.get("Retry-After"), r.headers
        final = env.wait(r)
        assert final.status_code == 200, f"{final.status_code} {final.text[:300]}"
        body = final.json()
        assert body.get("status") == "Succeeded", body
        props = body.get("properties") or {}
        # (the blobs are on the server already from the imports above: what counts as done may differ)
        assert props.get("layersTotal") == props.get("layersDone"), body
        assert props.get("bytesTotal") == props.get("bytesDone"), body
    assert manifest_digest(dc, "fromdist/hello", "raw") == dist_digest
    assert events(env.server, "Import", "default", want=lambda e: e.get("Tag") == "1"
                  and e.get("Repository") == "fromdist/hello" and e.get("ResultType") == "Success")


def test_import_from_a_second_moat_with_credentials(moat_factory, tmp_path):
    """Server B holds the image; server A trusts B's CA through --import-ca-bundle and imports with B's admin
    credentials. A wrong password fails with InvalidParameters and leaves A's target as it was."""
    b = moat_factory(https=True)
    img = build_image(2, layer_size=LAYER)
    b.client().push_image("bsrc/app", img, "1")
    other = build_image(1, layer_size=LAYER)
    b.client().push_image("bsrc/app", other, "2")
    a = moat_factory(https=True, extra_args=["--import-ca-bundle", str(b.ca_path)])
    env = Env(a, tmp_path)
    src = f"{b.login_server}/bsrc/app"

    p = env.acr_import("-n", "default", "--source", f"{src}:1", "-u", "admin", "-p", b.admin_password,
                       "-t", "fromb/app:1")
    assert p.stdout.strip() == "", p.stdout
    ac = env.client("default")
    assert_image_in(ac, "fromb/app", "1", img)

    p = env.acr_import("-n", "default", "--source", f"{src}:2", "-u", "admin", "-p", "wrong-" + b.admin_password,
                       "-t", "fromb/app:2", rc=None)
    assert_error(p, 1, "InvalidParameters")
    assert tags_of(ac, "fromb/app") == ["1"]
    assert ac.get_manifest("fromb/app", other.manifest_digest).status_code == 404
    for dg in other.layer_digests:
        assert ac.head_blob("fromb/app", dg).status_code == 404, "a failed import linked a blob"
    # No credentials at all: B asks for them, the import fails the same way.
    p = env.acr_import("-n", "default", "--source", f"{src}:2", "-t", "fromb/app:2", rc=None)
    assert_error(p, 1, "InvalidParameters")
    assert tags_of(ac, "fromb/app") == ["1"]
    assert manifest_digest(ac, "fromb/app", "1") == img.manifest_digest
    failed = events(a, "Import", "default", want=lambda e: e.get("ResultType") != "Success")
    assert failed, f"no failed Import event: {a.audit()[-10:]}"


@pytest.mark.parametrize("mode", ["cut", "corrupt", "manifest", "garbage"])
def test_faulty_remote_fails_and_leaves_the_target_unchanged(env, fake_registry, mode):
    img = build_image(3, layer_size=LAYER)
    fake = fake_registry(img, mode=mode)
    dc = env.client("default")
    # The manifest fault shows only when the digest is asked for; the others by tag (and the scheme both ways).
    source = f"fake/app@{img.manifest_digest}" if mode == "manifest" else "fake/app:1"
    uri = f"http://{fake.host}" if mode in ("cut", "manifest") else fake.host
    p = env.acr_import("-n", "default", "--source", f"{uri}/{source}", "-t", "faulty/app:1", rc=None)
    assert_error(p, 1, "InvalidParameters")
    if mode in ("cut", "corrupt"):
        assert any(m == "GET" and fake.victim in path for m, path, _ in fake.seen), \
            f"the importer never asked for the faulty blob: {fake.seen}"
    assert_nothing_in(dc, "faulty/app", img)
    assert "faulty/app" not in catalog(dc)
    # Raw ARM: the same failure is a 4xx ARM error from the operation (or at once).
    r = env.import_and_wait("default", {"source": {"registryUri": uri, "sourceImage": source},
                                        "targetTags": ["faulty/app:1"]}, rg="moat")
    assert_arm_error(r, 400, "InvalidParameters")
    assert_nothing_in(dc, "faulty/app", img)


def test_remote_index_with_basic_auth_and_blobs_redirected_to_storage(env, fake_registry):
    """A remote multi-arch index behind Basic auth whose blob GETs answer 307 to object storage on another
    host:port (as registries in front of a storage account do): every child and blob arrives, and the registry
    credentials are not sent to the storage host."""
    children = [build_image(2, layer_size=LAYER) for _ in range(2)]
    storage = BlobStorage({dg: d for c in children for dg, d in c.blobs.items()})
    try:
        fake = fake_registry(None, mode="redirect", children=children, auth=("puller", "s3cret"), storage=storage)
        p = env.acr_import("-n", "default", "--source", f"http://{fake.host}/fake/app:1", "-u", "puller",
                           "-p", "s3cret", "-t", "redirected/app:1")
        assert p.stdout.strip() == ""
        dc = env.client("default")
        g = dc.get_manifest("redirected/app", "1")
        assert g.status_code == 200 and g.content == fake.index, f"{g.status_code} {g.text[:300]}"
        for c in children:
            assert_image_in(dc, "redirected/app", c.manifest_digest, c)
        assert storage.seen, f"the blobs were not fetched from the storage host: {fake.seen}"
        leaked = [(path, a) for path, a in storage.seen if a]
        assert not leaked, f"the registry's credentials were sent to another host on redirect: {leaked}"
        # The registry saw the credentials (Basic, as challenged).
        assert any(a and a.startswith("Basic ") for _, _, a in fake.seen), fake.seen
    finally:
        storage.close()


def test_remote_index_with_a_missing_child_writes_nothing(env, fake_registry):
    children = [build_image(1, layer_size=LAYER) for _ in range(2)]
    fake = fake_registry(None, mode="missing-child", children=children)
    p = env.acr_import("-n", "default", "--source", f"http://{fake.host}/fake/app:1", "-t", "halfindex/app:1",
                       rc=None)
    assert_error(p, 1, "InvalidParameters")
    dc = env.client("default")
    assert tags_of(dc, "halfindex/app") == []
    assert dc.get_manifest("halfindex/app", sha256(fake.index)).status_code == 404
    for c in children:
        assert_nothing_in(dc, "halfindex/app", c)
    assert "halfindex/app" not in catalog(dc)


def test_remote_noforce_on_an_existing_tag_fails_before_copying(env, fake_registry):
    old, new = build_image(1, layer_size=LAYER), build_image(2, layer_size=LAYER)
    env.client("default").push_image("kept/app", old, "1")
    fake = fake_registry(new, mode="ok")
    p = env.acr_import("-n", "default", "--source", f"http://{fake.host}/fake/app:1", "-t", "kept/app:1", rc=None)
    assert_error(p, 1, "InvalidParameters", "kept/app:1", "--force")
    dc = env.client("default")
    assert manifest_digest(dc, "kept/app", "1") == old.manifest_digest
    assert not [s for s in fake.seen if "/blobs/" in s[1] and s[0] == "GET"], \
        f"NoForce downloaded blobs before refusing: {fake.seen}"
    for dg in new.layer_digests:
        assert dc.head_blob("kept/app", dg).status_code == 404
    env.acr_import("-n", "default", "--source", f"http://{fake.host}/fake/app:1", "-t", "kept/app:1", "--force")
    assert_image_in(dc, "kept/app", "1", new)


def test_unreachable_remote_fails(env):
    port = free_port()  # nothing listens there
    p = env.acr_import("-n", "default", "--source", f"127.0.0.1:{port}/gone/app:1", "-t", "gone/app:1", rc=None)
    assert_error(p, 1, "InvalidParameters")
    assert tags_of(env.client("default"), "gone/app") == []


def test_progress_is_reported_while_a_remote_import_runs(env, fake_registry):
    """A remote that sends the largest layer over ~2 s: the CLI (stderr not a terminal) prints `Importing: …`
    lines, the poll bodies carry the progress fields, and the import succeeds."""
    img = build_image(2, layer_size=2 * 1024 * 1024)
    fake = fake_registry(img, mode="slow")
    r = env.import_request("default", {"source": {"registryUri": f"http://{fake.host}", "sourceImage": "fake/app:1"},
                                       "targetTags": ["slow/app:raw"]}, rg="moat")
    assert r.status_code == 202, f"a remote import should be long-running: {r.status_code} {r.text[:300]}"
    loc = r.headers.get("Location", "")
    assert loc.startswith("http") and r.headers.get("Retry-After"), r.headers
    seen = []  # the poll answers (the POST's own body may be null or a bare status)
    deadline = time.monotonic() + 60
    first = True
    while r.status_code == 202:
        assert time.monotonic() < deadline, f"still running after 60 s: {r.text[:300]}"
        if not first:
            seen.append(r.json())
        first = False
        time.sleep(0.3)
        r = env.arm.session.get(loc, headers={"Authorization": "Bearer " + env.arm.token}, timeout=60)
    assert r.status_code == 200 and r.json().get("status") == "Succeeded", f"{r.status_code} {r.text[:300]}"
    running = [b for b in seen if b.get("status") == "InProgress"]
    assert running, f"no InProgress body while the import ran: {seen}"
    for b in running:
        props = b.get("properties") or {}
        for k in ("bytesTotal", "bytesDone", "layersTotal", "layersDone"):
            assert isinstance(props.get(k), int), f"{k} missing: {b}"
        assert 0 <= b.get("percentComplete", 0) <= 100, b
    final = r.json()["properties"]
    # "layers" are the image's blobs: the server counts the config with them (2 layers + 1 config)
    assert final["layersDone"] == final["layersTotal"] in (2, 3), final
    assert final["bytesDone"] == final["bytesTotal"] >= sum(len(d) for _, d in img.layers), final

    p = env.acr_import("-n", "default", "--source", f"http://{fake.host}/fake/app:1", "-t", "slow/app:cli")
    assert "Importing:" in p.stderr, p.stderr
    assert p.stdout.strip() == ""
    assert_image_in(env.client("default"), "slow/app", "cli", img)

    # On a terminal: a progress bar (bytes and layers), cleared at the end; stdout stays empty. A new image, so
    # that its blobs are not on the server yet.
    img = build_image(2, layer_size=2 * 1024 * 1024)
    fake = fake_registry(img, mode="slow")
    rc, out, err = run_with_tty_stderr(env.cli, "acr", "import", "-n", "default", "--source",
                                       f"http://{fake.host}/fake/app:1", "-t", "slow/app:tty")
    assert rc == 0 and out.strip() == "", (rc, out, err)
    assert "Importing" in err and "layers" in err and "MiB" in err, repr(err[-2000:])
    assert "Importing:" not in err, "the line-per-second form on a terminal"
    assert err.rstrip().endswith("\x1b[2K") or "\r" in err, repr(err[-300:])
    assert_image_in(env.client("default"), "slow/app", "tty", img)


def run_with_tty_stderr(cli: Cli, *args, timeout: float = CLI_IMPORT_TIMEOUT) -> tuple[int, str, str]:
    """Runs `moat ARGS` as `cli` does, with stderr on a pseudo-terminal; returns (exit code, stdout, terminal)."""
    import pty
    master, slave = pty.openpty()
    env = dict(cli.env, TERM="xterm")
    proc = subprocess.Popen([moat_bin(), *map(str, args)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave, env=env)
    os.close(slave)
    chunks = []

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the child has closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    os.close(master)
    return proc.returncode, out.decode(), b"".join(chunks).decode("utf-8", "replace")


# ------------------------------------------------------------------------------------------------ no way around

def test_remote_import_from_the_server_itself_is_refused(moat, tmp_path):
    """The server trusts its own CA for remote imports (as when one corporate CA signs Moat's certificate and is
    passed as --import-ca-bundle), so a registryUri naming the server itself would reach its own listeners. The
    outbound connector refuses it whether the source is open or protected, and says to use the resourceId (the
    same-server import, which the gate decides). Every spelling: test_security_outbound.py."""
    moat.stop()
    moat.extra_args += ["--import-ca-bundle", str(moat.ca_path)]
    moat.start()
    env = Env(moat, tmp_path)
    tgt = "selfimporttarget"
    env.create(tgt)
    tc = env.client(tgt)
    img = build_image(2, layer_size=LAYER)
    env.client("default").push_image("secret/app", img, "1")
    creds = ["-u", "admin", "-p", moat.admin_password]  # credentials: a registryUri import, not a resourceId one

    for uri in (f"https://{moat.login_server}", moat.login_server):
        p = env.acr_import("-n", tgt, "--source", f"{uri}/secret/app:1", *creds, "-t", "leak/app:1", rc=None)
        assert_error(p, 1, "InvalidParameters", "resourceId")
    env.acr_import("-n", tgt, "-r", "default", "--source", "secret/app:1", "-t", "control/app:1")
    assert_image_in(tc, "control/app", "1", img)

    pe = protect_registry(env.arm, "default", rg="moat")
    for uri in (f"https://{moat.login_server}", moat.login_server, f"{pe['address']}:{moat.port}"):
        p = env.acr_import("-n", tgt, "--source", f"{uri}/secret/app:1", *creds, "-t", "leak/app:1", rc=None)
        assert_error(p, 1, "InvalidParameters", "resourceId")
        assert_nothing_in(tc, "leak/app")
    p = env.acr_import("-n", tgt, "-r", "default", "--source", "secret/app:1", "-t", "leak/app:1", rc=None)
    assert_error(p, 1, "InvalidParameters", "exports disabled")
    assert_nothing_in(tc, "leak/app")
    assert "leak/app" not in catalog(tc)


# ------------------------------------------------------------------------------------------------ races, restarts

def test_concurrent_noforce_imports_onto_one_new_tag_have_one_winner(env, fake_registry):
    """Two NoForce imports of different images onto the same new tag at once, same-server (synchronous) and
    remote (two slow long-running operations that both pass the early tag check): exactly one succeeds, the other
    fails with InvalidParameters, and the tag is the winner's image."""
    tgt = "racetarget"
    env.create(tgt)
    tc = env.client(tgt)
    dc = env.client("default")
    imgs = {k: build_image(1, layer_size=LAYER) for k in ("a", "b")}
    for k, img in imgs.items():
        dc.push_image("race/src", img, k)

    def post(arm: Arm, body: dict, out: dict, key: str):
        r = env.import_request(tgt, body, arm=arm)
        out[key] = r

    for round_ in range(8):
        tag = f"race/app:r{round_}"
        out: dict = {}
        run_concurrently([functools.partial(post, env.arm.clone(), {
            "source": {"resourceId": env.default_id, "sourceImage": f"race/src:{k}"},
            "targetTags": [tag], "mode": "NoForce"}, out, k) for k in imgs], timeout=60)
        codes = sorted(r.status_code for r in out.values())
        assert codes == [200, 400], {k: (r.status_code, r.text[:200]) for k, r in out.items()}
        winner = next(k for k, r in out.items() if r.status_code == 200)
        assert_arm_error(next(r for r in out.values() if r.status_code == 400), 400, "InvalidParameters")
        assert manifest_digest(tc, "race/app", f"r{round_}") == imgs[winner].manifest_digest

    remote = {k: build_image(1, layer_size=1024 * 1024) for k in ("a", "b")}
    fakes = {k: fake_registry(img, mode="slow") for k, img in remote.items()}
    started = {k: env.import_request(tgt, {"source": {"registryUri": f"http://{f.host}", "sourceImage": "fake/app:1"},
                                           "targetTags": ["race/remote:1"], "mode": "NoForce"})
               for k, f in fakes.items()}
    assert all(r.status_code == 202 for r in started.values()), {k: r.status_code for k, r in started.items()}
    final = {k: env.wait(r) for k, r in started.items()}
    codes = sorted(r.status_code for r in final.values())
    assert codes == [200, 400], {k: (r.status_code, r.text[:300]) for k, r in final.items()}
    winner = next(k for k, r in final.items() if r.status_code == 200)
    loser = next(k for k in final if k != winner)
    assert_arm_error(final[loser], 400, "InvalidParameters")
    assert manifest_digest(tc, "race/remote", "1") == remote[winner].manifest_digest
    assert tc.get_manifest("race/remote", remote[loser].manifest_digest).status_code == 404


def test_server_killed_during_a_remote_import_resumes_it(moat, tmp_path, fake_registry):
    """kill -9 while a remote import is downloading, then start again: the import is a durable job, so its
    operation's Location still answers and the import finishes; until it does, the target has no tag and no
    manifest (never half-written). (tests/e2e/test_jobs.py covers a large image, blobs not fetched twice and the
    attempts limit.)"""
    env = Env(moat, tmp_path)
    img = build_image(2, layer_size=2 * 1024 * 1024)
    fake = fake_registry(img, mode="slow")
    r = env.import_request("default", {"source": {"registryUri": f"http://{fake.host}", "sourceImage": "fake/app:1"},
                                       "targetTags": ["killed/app:1"]}, rg="moat")
    assert r.status_code == 202, f"{r.status_code} {r.text[:300]}"
    loc = r.headers["Location"]
    deadline = time.monotonic() + 20
    while not any(m == "GET" and fake.victim in path for m, path, _ in fake.seen):
        assert time.monotonic() < deadline, f"the slow blob was never asked for: {fake.seen}"
        time.sleep(0.05)
    time.sleep(0.3)
    moat.kill9()
    moat.start()
    dc = env.client("default")
    env.arm = Arm(moat, env.owner)
    deadline = time.monotonic() + 60
    while True:
        p = env.arm.session.get(loc, headers={"Authorization": "Bearer " + env.arm.token}, timeout=30)
        if p.status_code != 202:
            break
        # While the operation runs, the target shows nothing of the image.
        assert tags_of(dc, "killed/app") == [], "a tag before the import finished"
        assert time.monotonic() < deadline, f"the resumed import never finished: {p.text[:300]}"
        time.sleep(0.2)
    assert p.status_code == 200 and p.json()["status"] == "Succeeded", f"{p.status_code} {p.text[:300]}"
    assert_image_in(dc, "killed/app", "1", img)
